"""What every ``hf-ext`` command shares: its group and sub-command parsers, the common options, output, one error boundary.

The common options mean the same in every command that has them:

``--model``        the model to use: a Hub id or a local folder (each command says which kind).
``--device``       a torch device (``cpu``, ``cuda``, ``cuda:N``, ``auto``).
``--seed``         the random seed.
``--out``          the output *folder*, created if missing (the command says what it writes there).
``--json``         print the result as JSON on stdout instead of text.
``--no-progress``  hide progress bars.

A component's ``cli`` module (standard-library imports only at module level) adds its commands with these helpers;
:mod:`hf_ext.cli` makes the group ``hf-ext <name>`` (:func:`add_group`) and passes its sub-parsers::

    from hf_ext.utils import cli

    def add_commands(actions):
        p = cli.add_command(actions, "run", _cmd_run, help="run the toy")
        cli.add_common_options(p, model="Hub id or folder (default: a tiny model)", device="cpu", seed=0,
                               out="toy_out", out_help="result.json", json=True, progress=True)
        p.add_argument("--steps", type=cli.positive_int, default=10, help="training steps (default: %(default)s)")

Example:
    >>> import argparse
    >>> parser = argparse.ArgumentParser(prog="hf-ext")
    >>> actions = add_group(parser.add_subparsers(dest="command"), "toy", help="a toy group")
    >>> p = add_command(actions, "run", lambda args: 0, help="run it")
    >>> add_common_options(p, seed=0, out="toy_out", json=True)
    >>> args = parser.parse_args(["toy", "run", "--seed", "3"])
    >>> args.seed, args.out, args.json, run_command(args)
    (3, 'toy_out', False, 0)
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from .deprecation import REMOVED_IN, warn_deprecated

__all__ = ["REQUIRED", "USER_ERRORS", "ArgumentParser", "add_command", "add_common_options", "add_deprecated_alias",
           "add_group", "check_local_path", "check_out_dir", "existing_path", "exit_code", "finite_float", "model_or_path", "non_negative_int", "out_file", "positive_int",
           "print_result", "resolve_device", "run_command", "unit_fraction"]

Handler = Callable[[argparse.Namespace], int]

#: ``add_common_options(out=REQUIRED)``: the command needs ``--out``.
REQUIRED = "<required>"


def add_group(subparsers: argparse._SubParsersAction, name: str, *, help: str, description: str | None = None
              ) -> argparse._SubParsersAction:
    """Add the command group ``hf-ext <name>`` and return its sub-command parsers (one of them is required).

    Args:
        subparsers: the ``hf-ext`` parser's sub-parsers.
        name: the group's name (the component's registry name).
        help: one line for ``hf-ext --help``; also the description unless ``description`` is given.
    """
    group = subparsers.add_parser(name, help=help, description=description or help)
    return group.add_subparsers(dest=f"{name}_command", metavar="ACTION", required=True)


def add_command(actions: argparse._SubParsersAction, name: str, handler: Handler, *, help: str,
                description: str | None = None) -> argparse.ArgumentParser:
    """Add the sub-command ``name`` running ``handler(args) -> exit code`` and return its parser."""
    parser = actions.add_parser(name, help=help, description=description or help)
    parser.set_defaults(func=handler)
    return parser


def add_common_options(
    parser: argparse.ArgumentParser,
    *,
    model: str | None = None,
    model_required: bool = False,
    device: str | None = None,
    seed: int | None = None,
    out: str | None = None,
    out_help: str = "the results",
    out_when_absent: str | None = None,
    json: bool = False,
    progress: bool = False,
) -> None:
    """Add the common options (module docstring) that apply to a command; each keyword left at its default omits one.

    Args:
        parser: the command's parser.
        model: help text for ``--model`` (what kind of model, and the default).
        model_required: ``--model`` must be given.
        device: the default of ``--device`` (``"cpu"``, ``"auto"``).
        seed: the default of ``--seed``.
        out: the default folder of ``--out``, or :data:`REQUIRED`; ``None`` for no ``--out`` unless ``out_when_absent``.
        out_help: what the command writes into the folder.
        out_when_absent: with ``out=None``: ``--out`` is optional, and this says what happens without it.
        json: add ``--json``.
        progress: add ``--no-progress``.
    """
    if model is not None:
        parser.add_argument("--model", required=model_required, default=None, metavar="MODEL", help=model,
                            type=model_or_path)
    if device is not None:
        parser.add_argument("--device", default=device,
                            help="torch device: cpu, cuda, cuda:N, or auto for CUDA when available (default: %(default)s)")
    if seed is not None:
        parser.add_argument("--seed", type=non_negative_int, default=seed, help="random seed (default: %(default)s)")
    if out is not None or out_when_absent:
        required = out == REQUIRED
        default = "" if required else f" (default: {out_when_absent})" if out is None else " (default: %(default)s)"
        parser.add_argument("--out", required=required, default=None if required else out, metavar="DIR",
                            help=f"output folder, created if missing: {out_help}{default}")
    if json:
        parser.add_argument("--json", action="store_true", help="print the result as JSON instead of text")
    if progress:
        parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


class _DeprecatedAlias(argparse.Action):
    def __init__(self, option_strings, dest, new: str, **kwargs):
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        warn_deprecated(option_string, self.new, category=FutureWarning, stacklevel=2)
        setattr(namespace, self.dest, values)


def add_deprecated_alias(parser: argparse.ArgumentParser, old: str, new: str) -> None:
    """Keep the renamed flag ``old`` working as an alias of ``new`` (already added), with a ``FutureWarning``.

    Raises:
        ValueError: ``parser`` has no option ``new``.
    """
    target = next((a for a in parser._actions if new in a.option_strings), None)
    if target is None:
        raise ValueError(f"add_deprecated_alias: the parser has no option {new!r} to alias {old!r} to")
    container = parser
    if target.required:  # either name satisfies it: a required pair of mutually exclusive options
        container = parser.add_mutually_exclusive_group(required=True)
        target.required = False
        container._group_actions.append(target)
    container.add_argument(old, dest=target.dest, action=_DeprecatedAlias, new=new, type=target.type,
                           nargs=target.nargs, metavar=target.metavar, default=argparse.SUPPRESS,
                           help=f"deprecated alias of {new} (removed in hf-ext {REMOVED_IN})")


def out_file(out: str | Path, name: str, *, legacy_suffixes: tuple[str, ...] = ()) -> Path:
    """The file ``name`` inside the ``--out`` folder (the folder is created).

    Before 0.2 some commands took ``--out`` as a file; a value ending in one of ``legacy_suffixes`` is still taken as
    that file, with a ``FutureWarning``.

    Example:
        >>> out_file("/tmp/hf-ext-doc", "explanation.html").name
        'explanation.html'
    """
    path = Path(out)
    if path.suffix.lower() in legacy_suffixes:
        warn_deprecated(f"--out {path} (a file)", f"--out FOLDER (the command writes FOLDER/{name})",
                        category=FutureWarning)
    else:
        path = path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def print_result(result: Any, text: str, *, as_json: bool) -> None:
    """Print a command's result: ``result`` as JSON with ``--json``, else ``text``."""
    print(json.dumps(result, indent=1, ensure_ascii=False, default=str) if as_json else text)


def resolve_device(device: str | None) -> str:
    """``"auto"``/``None`` -> ``"cuda"`` when available, else ``"cpu"``; other values are returned unchanged."""
    if device in (None, "", "auto"):
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


#: Exceptions that mean "the user asked for something wrong" (a bad value, a missing or unusable path, a Hub id that
#: does not resolve): one line on stderr and exit code 2. Anything else is a bug or an environment failure: exit 1.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError, OSError, LookupError)


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 600 else text[:597] + "..."


def run_command(args: argparse.Namespace) -> int:
    """Run the parsed command's handler and return its exit code: the CLI's one error boundary.

    Every command goes through here (``hf-ext``, ``python -m hf_ext``, and the older module entry points):

    * a user error (:data:`USER_ERRORS`: ``ValueError``, ``TypeError``, ``OSError`` such as ``FileNotFoundError``,
      ``LookupError``) prints one line ``hf-ext: error: <message>`` on stderr and returns 2;
    * any other exception prints ``hf-ext: internal error: <type>: <message>`` and returns 1;
    * ``KeyboardInterrupt`` returns 130;
    * ``args.debug`` (``hf-ext --debug …``, or ``HF_EXT_DEBUG=1``) also prints the traceback.

    With ``--no-progress`` the libraries' own progress bars are hidden too
    (:func:`hf_ext.utils.progress.library_progress_bars`).
    """
    import sys
    import traceback

    from .progress import library_progress_bars

    debug = bool(getattr(args, "debug", False))
    try:
        with library_progress_bars(not getattr(args, "no_progress", False)):
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("hf-ext: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as err:
        if debug:
            traceback.print_exc()
        print(f"hf-ext: error: {_one_line(err)}{_not_local_hint(args, err)}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - the boundary: a short message instead of a traceback
        if debug:
            traceback.print_exc()
        hint = "" if debug else " (run with --debug for the traceback)"
        print(f"hf-ext: internal error: {type(err).__name__}: {_one_line(err)}{hint}", file=sys.stderr)
        return 1


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser with a one-line usage error: ``<prog>: error: <message> (see <prog> --help)``, exit 2."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        """Print one usage-error line and exit with status 2 (argparse's convention)."""
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see '{self.prog} --help')\n")


def _int_at_least(text: str, low: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a {what} integer, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"expected a {what} integer (>= {low}), got {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse ``type=``: an int >= 1 (``--steps``, ``--batch-size`` …)."""
    return _int_at_least(text, 1, "positive")


def non_negative_int(text: str) -> int:
    """argparse ``type=``: an int >= 0 (``--seed``, ``--warmup`` …)."""
    return _int_at_least(text, 0, "non-negative")


def finite_float(text: str) -> float:
    """argparse ``type=``: a finite float (``nan`` and ``inf`` are refused)."""
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def unit_fraction(text: str) -> float:
    """argparse ``type=``: a number in [0, 1] (a sparsity, a probability)."""
    value = finite_float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def _looks_like_path(text: str) -> bool:
    return text.startswith(("/", "./", "../", "~", ".\\")) or text in (".", "..") or "\\" in text or \
        text.count("/") > 1 or (Path(text).expanduser().parent.is_dir() and Path(text).parent != Path("."))


def check_local_path(value: str | None, option: str, *, kind: str = "folder or Hub id") -> str | None:
    """``value`` unchanged, unless it names a local path that does not exist: then ``FileNotFoundError`` naming
    ``option`` (instead of the Hub client's "Repo id must use alphanumeric chars" for a mistyped folder).

    A value looks like a path when it starts with ``/``, ``./``, ``../`` or ``~``, has more than one ``/``, or its
    parent folder exists locally (``runs/model`` with ``runs/`` present). ``org/name`` stays a Hub id.
    """
    if value is None:
        return value
    path = Path(value).expanduser()
    if not path.exists() and _looks_like_path(value):
        raise FileNotFoundError(f"{option} {value!r}: no such {kind.split(' or ')[0]} (expected an existing "
                                f"{kind})")
    return value


#: ``--model``-like values taken as Hub ids because no local path has that name (``runs/model`` without ``runs/``):
#: if loading then fails, the error says that no local folder of that name exists either.
_HUB_IDS_NOT_LOCAL: set[str] = set()


def model_or_path(text: str) -> str:
    """argparse ``type=`` of ``--model``-like options: a Hub id or an existing local path (see
    :func:`check_local_path`); a missing local path is a usage error naming it."""
    try:
        value = check_local_path(text, "path")
    except FileNotFoundError as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not an existing local folder/file (and not a Hub id)") from err
    if not Path(text).expanduser().exists():
        _HUB_IDS_NOT_LOCAL.add(text)
    return value


def _not_local_hint(args: argparse.Namespace, err: BaseException) -> str:
    """For a load that failed (an ``OSError`` other than a missing file): name the options whose value was taken as a
    Hub id only because no local folder has that name — a mistyped local path otherwise reads as a Hub error."""
    if not isinstance(err, OSError) or isinstance(err, FileNotFoundError):
        return ""
    names = [f"{k.replace('_', '-')}={v!r}" for k, v in vars(args).items()
             if isinstance(v, str) and v in _HUB_IDS_NOT_LOCAL]
    if not names:
        return ""
    return (f" [{', '.join('--' + n for n in names)}: no local folder or file of that name either; if you meant a local "
            "path, check it (relative to the current folder)]")


def existing_path(text: str) -> str:
    """argparse ``type=`` of options that name a local file or folder: it must exist (a usage error otherwise)."""
    if not Path(text).expanduser().exists():
        raise argparse.ArgumentTypeError(f"no such file or folder: {text!r}")
    return text


def check_out_dir(value: str | None, option: str = "--out") -> str | None:
    """Check an output folder before any work: not an existing file, and its nearest existing parent is writable.
    Nothing is created here (the command creates the folder when it writes)."""
    import os

    if value is None:
        return value
    if not str(value).strip():
        raise ValueError(f"{option} must name a folder, got {value!r}")
    path = Path(value).expanduser()
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{option} {value!r} is an existing file; expected a folder")
    parent = path
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise NotADirectoryError(f"{option} {value!r}: {str(parent)!r} is a file, so the folder cannot be created")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"{option} {value!r}: {str(parent)!r} is not writable")
    return value


def exit_code(exit_: SystemExit) -> int:
    """argparse's exit (``--help``, ``--version``, a usage error) as a return code."""
    return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 2)

