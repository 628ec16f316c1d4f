"""Vendoring hf_ext code into a Hub export, so that ``trust_remote_code=True`` loads without hf_ext installed.

transformers copies only the defining module files of remote-code classes and their same-folder relative imports.
:func:`vendor_sources` therefore collects, transitively, every module the exported classes import from ``hf_ext``
(or from their own top-level package), flattens them into one folder and rewrites the imports between them to
same-folder relative imports (``from .anatomy import get_anatomy``; ``import hf_ext.core.anatomy as a`` becomes
``from . import anatomy as a``). :func:`hf_ext.hub.export_for_hub` writes the result next to the weights.

Example:
    >>> files = vendor_sources(["hf_ext.tfree.modeling_tfree"])
    >>> "modeling_tfree.py" in files and "hashing.py" in files
    True
"""

from __future__ import annotations

import ast
import contextlib
import importlib.machinery
import importlib.util
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["VENDORED_TOP_LEVEL", "vendor_pipeline", "vendor_sources"]

#: Top-level packages whose modules are vendored into the export (plus the exported classes' own package).
VENDORED_TOP_LEVEL = ("hf_ext",)


@dataclass(frozen=True)
class _Source:
    name: str  # dotted module name
    path: Path  # its .py file
    flat: str  # file name in the export folder


def _find_module(name: str) -> importlib.machinery.ModuleSpec | None:
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError):  # a parent is not a package / has no __path__
        return None


def _is_package(name: str) -> bool | None:
    """True for a package, False for a plain module, None if ``name`` is not importable."""
    spec = _find_module(name)
    if spec is None:
        return None
    return spec.submodule_search_locations is not None


def _source_of(name: str) -> _Source:
    spec = _find_module(name)
    origin = getattr(spec, "origin", None)
    if spec is None or origin is None or not origin.endswith(".py"):
        raise ValueError(f"cannot vendor module {name!r}: no Python source file found (origin {origin!r}); "
                         "exported code must live in importable .py files")
    if spec.submodule_search_locations is not None:
        raise ValueError(f"cannot vendor {name!r}: it is a package __init__; define the classes in a module file")
    return _Source(name, Path(origin), name.rpartition(".")[2] + ".py")


class _ImportRewriter:
    """Finds the vendored imports of one module file and renders their same-folder relative replacements."""

    def __init__(self, source: _Source, top_level: frozenset[str]):
        self.source = source
        self.package = source.name.rpartition(".")[0]
        self.top_level = top_level
        self.needed: list[str] = []  # dotted module names this file needs vendored

    def where(self, node: ast.stmt) -> str:
        return f"{self.source.path}:{node.lineno}"

    def _module_binding(self, module: str, asname: str, node: ast.stmt) -> str:
        """``from . import x as y``, plus a ``from .x import`` that transformers' loader can see (it only follows
        ``from .x import name`` when copying remote code)."""
        kind = _is_package(module)
        if kind is None:
            raise ValueError(f"{self.where(node)}: cannot find module {module!r} imported by {self.source.name}")
        if kind:
            raise ValueError(f"{self.where(node)}: {self.source.name} imports the package {module!r} (its __init__), "
                             "which cannot be vendored; import the names from the module that defines them")
        self.needed.append(module)
        last = module.rpartition(".")[2]
        return f"from .{last} import __name__ as _vendored_{last}_; from . import {last} as {asname}"

    def rewrite(self, node: ast.Import | ast.ImportFrom) -> str | None:
        """The replacement text of ``node``, or None if it imports nothing that is vendored."""
        if isinstance(node, ast.Import):
            return self._rewrite_import(node)
        return self._rewrite_from(node)

    def _rewrite_import(self, node: ast.Import) -> str | None:
        if not any(a.name.split(".")[0] in self.top_level for a in node.names):
            return None
        parts = []
        for alias in node.names:
            if alias.name.split(".")[0] not in self.top_level:
                parts.append(f"import {alias.name}" + (f" as {alias.asname}" if alias.asname else ""))
                continue
            if alias.asname is None:
                parent, _, last = alias.name.rpartition(".")
                hint = f"`from {parent} import {last}` or `import {alias.name} as {last}`" if parent else "an alias"
                raise ValueError(f"{self.where(node)}: `import {alias.name}` binds the package name "
                                 f"{alias.name.split('.')[0]!r}, which does not exist once the code is vendored; "
                                 f"write {hint}")
            parts.append(self._module_binding(alias.name, alias.asname, node))
        return "; ".join(parts)

    def _rewrite_from(self, node: ast.ImportFrom) -> str | None:
        if node.level:
            if not self.package:
                raise ValueError(f"{self.where(node)}: relative import in the top-level module {self.source.name}")
            try:
                base = importlib.util.resolve_name("." * node.level + (node.module or ""), self.package)
            except ImportError as err:
                raise ValueError(f"{self.where(node)}: {err}") from None
        else:
            base = node.module or ""
            if base.split(".")[0] not in self.top_level:
                return None
        kind = _is_package(base)
        if kind is None:
            raise ValueError(f"{self.where(node)}: cannot find module {base!r} imported by {self.source.name}")
        names = ", ".join(a.name + (f" as {a.asname}" if a.asname else "") for a in node.names)
        if not kind:  # from <module> import names
            self.needed.append(base)
            return f"from .{base.rpartition('.')[2]} import {names}"
        parts = []  # from <package> import <submodules>
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            if alias.name == "*" or _is_package(sub) is None:
                hint = ""
                with contextlib.suppress(Exception):
                    defined_in = getattr(getattr(sys.modules.get(base), alias.name), "__module__", None)
                    if defined_in and defined_in != base:
                        hint = f" (e.g. `from {defined_in} import {alias.name}`)"
                raise ValueError(
                    f"{self.where(node)}: {self.source.name} imports {alias.name!r} from the package {base!r}, i.e. "
                    f"from its __init__, which cannot be vendored; import it from the module that defines it{hint}"
                )
            parts.append(self._module_binding(sub, alias.asname or alias.name, node))
        return "; ".join(parts)


#: Callables that import a module named by a string (the vendored copy cannot rewrite such names).
_STRING_IMPORTERS = frozenset({"import_module", "__import__", "require", "find_spec", "import_string", "_load"})


def _string_imports(tree: ast.AST, top_level: frozenset[str]) -> list[tuple[int, str]]:
    """``(line, name)`` of every call that imports a vendored module by a string literal: ``import_module("hf_ext.x")``
    and friends, or a registry-style ``"hf_ext.x:Name"`` argument of any call."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        fname = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        for arg in [*node.args, *(k.value for k in node.keywords)]:
            if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
                continue
            head = arg.value.split(":")[0].split(".")[0]
            if head in top_level and (fname in _STRING_IMPORTERS or ":" in arg.value and "." in arg.value):
                found.append((node.lineno, arg.value))
    return found


def _replace_spans(source: str, edits: list[tuple[ast.stmt, str]]) -> str:
    """Replace each statement's exact source span (ast offsets are UTF-8 byte columns) by its new text."""
    data = source.encode("utf-8")
    starts = [0]
    for line in data.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    spans = sorted(((starts[n.lineno - 1] + n.col_offset, starts[n.end_lineno - 1] + n.end_col_offset, text)
                    for n, text in edits), reverse=True)
    for begin, end, text in spans:
        data = data[:begin] + text.encode("utf-8") + data[end:]
    return data.decode("utf-8")


def vendor_sources(roots: Sequence[str]) -> dict[str, str]:
    """Self-contained code for the modules ``roots``: flat file name -> source with vendored imports rewritten.

    Args:
        roots: dotted names of the modules to export (e.g. the ``__module__`` of the exported classes).

    Returns:
        ``{file name in the export folder: source}``; every ``hf_ext`` import is rewritten to a same-folder relative
        import of the flattened file.

    Raises:
        ValueError: two modules that would flatten to the same file name, a module without a source file, or a
            module that imports a vendored module by a string (``importlib.import_module("hf_ext.x")``,
            ``require("hf_ext.x")``, a registry path ``"hf_ext.x:Name"``): the copy could not find it.

    Follows, transitively, every import of an ``hf_ext`` module (and of a module of the roots' own top-level
    package, and every relative import), absolute or relative, at module level or inside functions.
    """
    top_level = frozenset({*VENDORED_TOP_LEVEL, *(r.split(".")[0] for r in roots if "." in r)})
    files: dict[str, str] = {}
    owners: dict[str, str] = {}  # flat file name -> module
    queue, seen = list(dict.fromkeys(roots)), set()
    while queue:
        name = queue.pop(0)
        if name in seen:
            continue
        seen.add(name)
        source = _source_of(name)
        if source.flat in owners:
            raise ValueError(f"cannot flatten the exported code: modules {owners[source.flat]!r} and {name!r} would "
                             f"both become {source.flat}; rename one of them")
        owners[source.flat] = name
        text = source.path.read_text(encoding="utf-8")
        rewriter = _ImportRewriter(source, top_level)
        edits = []
        tree = ast.parse(text, filename=str(source.path))
        by_string = _string_imports(tree, top_level)
        if by_string:
            line, target = by_string[0]
            raise ValueError(f"{source.path}:{line}: {name} imports {target!r} by a string, which the exported copy "
                             "cannot resolve where hf_ext is not installed (it would fail with 'No module named "
                             f"{target.split(':')[0]!r}'); import it with an import statement instead")
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                new = rewriter.rewrite(node)
                if new is not None:
                    edits.append((node, new))
        files[source.flat] = new_text = _replace_spans(text, edits)
        ast.parse(new_text, filename=source.flat)  # the rewrite must leave valid Python
        queue.extend(m for m in rewriter.needed if m not in seen)
    return files


def vendor_pipeline(cls: type, save_directory: str | Path) -> list[str]:
    """Make a saved diffusers pipeline folder load with plain diffusers, without hf_ext installed.

    Writes the vendored sources of ``cls``'s module (:func:`vendor_sources`) and a ``pipeline.py`` next to
    ``model_index.json``, and sets its ``_class_name`` to ``["pipeline", cls.__name__]`` (diffusers' form for a
    custom pipeline in the folder), so ``DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)`` finds
    the class. diffusers copies only the files ``pipeline.py`` imports directly, so ``pipeline.py`` imports every
    vendored file.

    Args:
        cls: the pipeline class (a ``DiffusionPipeline`` subclass defined in an importable module).
        save_directory: a folder written by ``save_pretrained`` (it must hold ``model_index.json``).

    Returns:
        The names of the files written, ``pipeline.py`` first.

    Raises:
        FileNotFoundError: ``save_directory`` has no ``model_index.json``.

    Example:
        >>> import json, tempfile
        >>> from hf_ext.diffusion.sld import SafeLatentDiffusionPipeline
        >>> d = tempfile.mkdtemp()
        >>> _ = Path(d, "model_index.json").write_text('{"_class_name": "SafeLatentDiffusionPipeline"}')
        >>> vendor_pipeline(SafeLatentDiffusionPipeline, d)[:2]
        ['pipeline.py', 'pipeline_sld.py']
        >>> json.loads(Path(d, "model_index.json").read_text())["_class_name"]
        ['pipeline', 'SafeLatentDiffusionPipeline']
    """
    folder = Path(save_directory)
    index = folder / "model_index.json"
    if not index.is_file():
        raise FileNotFoundError(f"save_directory={str(save_directory)!r} has no model_index.json; call "
                                "save_pretrained(save_directory) first")
    files = vendor_sources([cls.__module__])
    if "pipeline.py" in files:
        raise ValueError(f"cannot vendor {cls.__module__}: a vendored module is named pipeline.py, the file name "
                         "diffusers loads custom pipelines from; rename it")
    module = cls.__module__.rpartition(".")[2]
    lines = [f'"""{cls.__name__}, vendored from {cls.__module__} so that plain diffusers loads this folder:',
             "``DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)``.",
             "",
             "diffusers copies only the files this module imports directly, hence one import per vendored file.",
             '"""', ""]
    lines += [f"from .{name[:-3]} import __name__ as _vendored_{name[:-3]}_  # noqa: F401"
              for name in files if name[:-3] != module]
    lines += [f"from .{module} import {cls.__name__}  # noqa: F401", ""]
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    (folder / "pipeline.py").write_text("\n".join(lines), encoding="utf-8")
    config = json.loads(index.read_text(encoding="utf-8"))
    config["_class_name"] = ["pipeline", cls.__name__]
    index.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return ["pipeline.py", *files]
