"""The ``hf-ext`` command line: ``hf-ext --version``, ``hf-ext env``, ``hf-ext tour`` and one group per component.

A component's group ``hf-ext <name>`` is made here from its registry entry (help: its ``summary``) and filled by the
``cli`` module it declares (:func:`hf_ext.registry.register_component`): ``add_commands(actions)`` adds each
sub-command with the helpers of :mod:`hf_ext.utils.cli`, which set ``func=handler`` (``handler(args) -> int``, the
exit code); the first paragraph of its docstring is the group's ``--help`` description. Those modules import
only the standard library at module level: ``hf-ext --help`` and ``--version`` never import torch. (A module with the
pre-0.2 ``add_parser(subparsers)``, which adds its own group, still works.) ``python -m hf_ext`` is
the same command line (for ``torchrun -m hf_ext …`` and ``accelerate launch -m hf_ext …``).

Example:
    >>> from hf_ext.cli import main
    >>> main(["--version"])
    hf-ext 0.2.0
    0
    >>> info = environment_info()
    >>> info["versions"]["hf_ext"]
    '0.2.0'
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import inspect
import json
import logging
import platform
import sys
from collections.abc import Sequence
from typing import Any

from hf_ext import __version__

from .registry import components
from .utils.cli import ArgumentParser, add_common_options, add_group, exit_code, run_command
from .utils.deprecation import DeprecatedList, warn_deprecated
from .utils.logging import get_logger, set_verbosity

logger = get_logger(__name__)

#: Groups of hf_ext itself, before the components' groups.
BUILTIN_COMMAND_MODULES: tuple[str, ...] = ("hf_ext.tour.runner", "hf_ext.reproduce.cli")
_legacy_modules: list[str] = []

#: Distributions reported by ``hf-ext env`` (distribution name -> label).
REPORTED_PACKAGES: dict[str, str] = {
    "torch": "torch",
    "transformers": "transformers",
    "diffusers": "diffusers",
    "datasets": "datasets",
    "accelerate": "accelerate",
    "evaluate": "evaluate",
}

NOT_INSTALLED = "not installed"


def package_versions() -> dict[str, str]:
    """Versions of hf_ext, Python and the libraries of :data:`REPORTED_PACKAGES` (``"not installed"`` if missing).

    Read from the installed distributions' metadata: nothing is imported.

    Example:
        >>> package_versions()["hf_ext"] == __version__
        True
    """
    versions = {"hf_ext": __version__, "python": platform.python_version()}
    for dist, label in REPORTED_PACKAGES.items():
        try:
            versions[label] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[label] = NOT_INSTALLED
    return versions


def device_info() -> dict[str, Any]:
    """The compute device as torch sees it (imports torch).

    Returns:
        ``{"device": "cuda"|"mps"|"cpu", "device_detail": str, "cuda_devices": [names], "torch_threads": int,
        "cpu_count": int}``; ``device`` is ``"cpu"`` with ``"torch not installed"`` when torch is missing.

    Example:
        >>> device_info()["device"] in ("cpu", "cuda", "mps")
        True
    """
    import os

    info: dict[str, Any] = {"device": "cpu", "device_detail": "", "cuda_devices": [], "torch_threads": None,
                            "cpu_count": os.cpu_count()}
    try:
        import torch
    except ImportError:
        info["device_detail"] = "torch not installed"
        return info
    info["torch_threads"] = torch.get_num_threads()
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        info.update(device="cuda", cuda_devices=names, device_detail=f"{len(names)}× {', '.join(sorted(set(names)))}")
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        info.update(device="mps", device_detail="Apple MPS")
    else:
        info["device_detail"] = f"{info['cpu_count']} CPU cores, {info['torch_threads']} torch threads"
    return info


def component_status() -> dict[str, dict[str, list[str]]]:
    """Each component (canonical order) with the extras it declares and the distributions of them not installed.

    Example:
        >>> list(component_status())[:2]
        ['core', 'scar']
    """
    from .utils.imports import missing_from_extra

    return {c.name: {"extras": list(c.extras), "missing": [d for e in c.extras for d in missing_from_extra(e)]}
            for c in components()}


def environment_info() -> dict[str, Any]:
    """:func:`package_versions`, :func:`device_info` and :func:`component_status` together, plus the platform (what
    ``hf-ext env --json`` prints).

    Example:
        >>> sorted(environment_info())
        ['components', 'cpu_count', 'cuda_devices', 'device', 'device_detail', 'platform', 'torch_threads', 'versions']
    """
    return {"versions": package_versions(), "platform": platform.platform(), **device_info(),
            "components": component_status()}


def format_environment(info: dict[str, Any]) -> str:
    """Human-readable lines of :func:`environment_info`'s result."""
    width = max(len(k) for k in info["versions"])
    lines = [f"{name:<{width}}  {version}" for name, version in info["versions"].items()]
    lines.append(f"{'platform':<{width}}  {info['platform']}")
    lines.append(f"{'device':<{width}}  {info['device']} ({info['device_detail']})")
    for name, status in info.get("components", {}).items():
        missing = status["missing"]
        extras = ",".join(status["extras"])
        state = f"missing {', '.join(missing)}: pip install 'hf-ext[{extras}]'" if missing else "ready"
        lines.append(f"{name:<{width}}  {state}")
    return "\n".join(lines)


def _cmd_env(args: argparse.Namespace) -> int:
    info = environment_info()
    print(json.dumps(info, indent=2) if args.json else format_environment(info))
    return 0


def _add_env_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("env", help="versions of hf_ext and its libraries, and the device",
                              description="Print the versions of hf_ext, Python and its libraries, and the device.")
    add_common_options(p, json=True)
    p.set_defaults(func=_cmd_env)
    return p


def command_modules() -> list[str]:
    """The modules that add a command group: the tour's, then each component's ``cli`` in canonical order."""
    return [*BUILTIN_COMMAND_MODULES, *(c.cli for c in components() if c.cli), *_legacy_modules]


def __getattr__(name: str) -> Any:
    if name == "COMMAND_MODULES":  # deprecated in 0.2: components declare cli= with register_component
        warn_deprecated("hf_ext.cli.COMMAND_MODULES", "hf_ext.cli.command_modules()")
        return DeprecatedList(command_modules(), old="hf_ext.cli.COMMAND_MODULES",
                              new="register_component(cli=...) in the component's __init__ (CONTRIBUTING.md)",
                              on_append=_legacy_modules.append)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _CurrentStderrHandler(logging.StreamHandler):
    """A stream handler writing to ``sys.stderr`` as it is when a record is emitted, not when the handler was made:
    ``main()`` called in-process (tests, notebooks) after ``sys.stderr`` was replaced must not write to a closed
    stream."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def build_parser() -> argparse.ArgumentParser:
    """The ``hf-ext`` parser with ``env``, ``tour`` and every component's group, in the canonical order."""
    parser = ArgumentParser(
        prog="hf-ext",
        description="Hugging Face-native research components. `hf-ext tour` runs all of them on tiny models.",
    )
    parser.add_argument("--version", action="version", version=f"hf-ext {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more logging, from hf_ext and transformers (-v info, -vv debug)")
    parser.add_argument("--debug", action="store_true",
                        help="show the Python traceback of an error (also HF_EXT_DEBUG=1; may come anywhere in the "
                             "command line)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_env_parser(subparsers)
    summaries = {c.cli: c for c in components() if c.cli}
    for name in command_modules():
        module = importlib.import_module(name)
        component = summaries.get(name)
        if component is not None and hasattr(module, "add_commands"):
            description = (inspect.getdoc(module.add_commands) or "").split("\n\n")[0].replace("\n", " ") or None
            module.add_commands(add_group(subparsers, component.name, help=component.summary or component.title,
                                          description=description))
        elif hasattr(module, "add_parser"):  # the tour's command, and the pre-0.2 protocol
            module.add_parser(subparsers)
        else:
            raise TypeError(f"CLI module {name!r} (a component's cli=) has no add_commands(actions) function")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``hf-ext`` with ``argv`` (default ``sys.argv[1:]``) and return the exit code.

    Exit codes: 0 success, 1 a command failed (e.g. a tour step) or an internal error, 2 bad usage or a user error
    (a bad value, a missing path): one line on stderr, no traceback unless ``--debug``
    (:func:`hf_ext.utils.cli.run_command`).

    Example:
        >>> main(["env", "--json"])  # doctest: +ELLIPSIS
        {...}
        0
    """
    import os

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("HF_EXT_DEBUG", "").strip().lower() in ("1", "true", "yes")
    argv = [a for a in argv if a != "--debug"]  # accepted anywhere, not only before the command
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version, usage errors: return the code instead of exiting
        return exit_code(exit_)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    root = logging.root
    if not root.handlers:  # as logging.basicConfig, but following sys.stderr (in-process callers swap it)
        handler = _CurrentStderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
        root.setLevel(level)
    if args.verbose:
        set_verbosity(level)  # hf_ext's loggers follow transformers' verbosity: raise both
    if args.command is None:
        parser.print_help()
        return 2
    args.debug = debug
    return run_command(args)


if __name__ == "__main__":
    sys.exit(main())
