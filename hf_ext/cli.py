"""The ``hf-ext`` command line: ``hf-ext --version``, ``hf-ext env``, ``hf-ext tour`` and one group per component.

Sub-command groups live in the modules of :data:`COMMAND_MODULES`; each exposes
``add_parser(subparsers) -> argparse.ArgumentParser`` which adds its sub-parser and sets
``func=handler`` (``handler(args) -> int``, the exit code) with ``set_defaults``. Those modules import only
the standard library at module level: ``hf-ext --help`` and ``--version`` never import torch.

Example:
    >>> from hf_ext.cli import main
    >>> main(["--version"])  # doctest: +SKIP
    hf-ext 0.2.0
    0
    >>> info = environment_info()  # doctest: +SKIP
    >>> info["versions"]["hf_ext"]  # doctest: +SKIP
    '0.2.0'
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import logging
import platform
import sys
from collections.abc import Sequence
from typing import Any

from hf_ext import __version__

logger = logging.getLogger(__name__)

#: Modules that add a sub-command group; a component appends ``"hf_ext.<component>.cli"`` here.
COMMAND_MODULES: list[str] = [
    "hf_ext.tour.runner",
    "hf_ext.atman.cli",
    "hf_ext.dtm.cli",
    "hf_ext.scar.cli",
    "hf_ext.umup.cli",
    "hf_ext.diffusion.sld.cli",
    "hf_ext.moral.cli",
    "hf_ext.diffusion.multifusion.cli",
    "hf_ext.tfree.cli",
    "hf_ext.mad.cli",
    "hf_ext.reproduce.cli",
]

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


def environment_info() -> dict[str, Any]:
    """:func:`package_versions` and :func:`device_info` together, plus the platform (what ``hf-ext env --json`` prints).

    Example:
        >>> sorted(environment_info())  # doctest: +SKIP
        ['cpu_count', 'cuda_devices', 'device', 'device_detail', 'platform', 'torch_threads', 'versions']
    """
    return {"versions": package_versions(), "platform": platform.platform(), **device_info()}


def format_environment(info: dict[str, Any]) -> str:
    """Human-readable lines of :func:`environment_info`'s result."""
    width = max(len(k) for k in info["versions"])
    lines = [f"{name:<{width}}  {version}" for name, version in info["versions"].items()]
    lines.append(f"{'platform':<{width}}  {info['platform']}")
    lines.append(f"{'device':<{width}}  {info['device']} ({info['device_detail']})")
    return "\n".join(lines)


def _cmd_env(args: argparse.Namespace) -> int:
    info = environment_info()
    print(json.dumps(info, indent=2) if args.json else format_environment(info))
    return 0


def _add_env_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("env", help="versions of hf_ext and its libraries, and the device",
                              description="Print the versions of hf_ext, Python and its libraries, and the device.")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=_cmd_env)
    return p


def build_parser() -> argparse.ArgumentParser:
    """The ``hf-ext`` parser with ``env`` and every group of :data:`COMMAND_MODULES`."""
    parser = argparse.ArgumentParser(
        prog="hf-ext",
        description="Hugging Face-native research components. `hf-ext tour` runs all of them on tiny models.",
    )
    parser.add_argument("--version", action="version", version=f"hf-ext {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-v info, -vv debug)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_env_parser(subparsers)
    for name in COMMAND_MODULES:
        module = importlib.import_module(name)
        if not hasattr(module, "add_parser"):
            raise TypeError(f"CLI module {name!r} in hf_ext.cli.COMMAND_MODULES has no add_parser(subparsers) function")
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``hf-ext`` with ``argv`` (default ``sys.argv[1:]``) and return the exit code.

    Exit codes: 0 success, 1 a command failed (e.g. a tour step), 2 bad usage (argparse's convention).

    Example:
        >>> main(["env", "--json"])  # doctest: +SKIP
        0
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version, usage errors: return the code instead of exiting
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 2)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.command is None:
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
