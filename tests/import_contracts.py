"""hf_ext's own import-linter contract types (``contract_types`` in pyproject.toml's ``[tool.importlinter]``).

Both read the component registry, so that a new component is covered without editing the contracts:

* ``shared_imports_no_component``: import-linter's ``forbidden`` contract whose forbidden modules are every registered
  component package outside ``source_modules`` (core and the plumbing import no component, not even indirectly).
* ``no_private_names_across_packages``: no module imports a private name (``_x``) from a module of another package
  (a component package, ``hf_ext.core``, ``hf_ext.utils`` … or the top-level ``hf_ext`` modules). Names are read
  from the source (every ``from … import`` statement, at any depth), since the import graph knows only modules.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import grimp
from importlinter.contracts.forbidden import ForbiddenContract
from importlinter.domain import fields
from importlinter.domain.contract import Contract, ContractCheck
from importlinter.domain.imports import ModuleExpression


def _component_packages() -> list[str]:
    from hf_ext.registry import components

    return sorted({c.package for c in components()}, key=len, reverse=True)


class SharedImportsNoComponentContract(ForbiddenContract):
    """``forbidden`` with ``forbidden_modules`` = the registered component packages not under ``source_modules``."""

    type_name = "shared_imports_no_component"
    forbidden_modules = fields.SetField(subfield=fields.ModuleExpressionField(), required=False)

    def check(self, graph: grimp.ImportGraph, verbose: bool) -> ContractCheck:
        sources = {expression.expression for expression in self.source_modules}  # type: ignore[attr-defined]
        self.forbidden_modules = {
            ModuleExpression(package) for package in _component_packages()
            if not any(package == s or package.startswith(s + ".") for s in sources)
        }
        return super().check(graph, verbose)


class NoPrivateNamesAcrossPackagesContract(Contract):
    """No ``from <module of package A> import _name`` in package B.

    Options:
        allowed: ``"importer -> imported: _name"`` entries tolerated for now; an entry that no longer matches breaks
            the contract, so that it is deleted once the import is gone.
    """

    type_name = "no_private_names_across_packages"
    allowed = fields.SetField(subfield=fields.StringField(), required=False)

    def check(self, graph: grimp.ImportGraph, verbose: bool) -> ContractCheck:
        packages = _component_packages()

        def package_of(module: str) -> str:
            for package in packages:
                if module == package or module.startswith(package + "."):
                    return package
            parts = module.split(".")
            top = ".".join(parts[:2])
            return top if len(parts) > 1 and top in graph.modules and graph.find_children(top) else parts[0]

        found: list[str] = []
        for module in sorted(graph.modules):
            spec = importlib.util.find_spec(module)
            if spec is None or not spec.origin or not spec.origin.endswith(".py"):
                continue
            tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
            is_package = spec.origin.endswith("__init__.py")
            for node in ast.walk(tree):
                if not isinstance(node, ast.ImportFrom) or node.module is None and node.level == 0:
                    continue
                imported = _resolve(module, is_package, node)
                root = module.split(".")[0]
                if imported.split(".")[0] != root or package_of(imported) == package_of(module):
                    continue
                for alias in node.names:
                    name = alias.name
                    if name.startswith("_") and not name.startswith("__"):
                        found.append(f"{module} -> {imported}: {name} (line {node.lineno})")
        allowed = set(self.allowed or ())  # type: ignore[arg-type]
        keys = {entry.rsplit(" (line", 1)[0] for entry in found}
        violations = [entry for entry in found if entry.rsplit(" (line", 1)[0] not in allowed]
        stale = sorted(allowed - keys)
        return ContractCheck(kept=not violations and not stale,
                             metadata={"violations": violations, "stale": stale})

    def render_broken_contract(self, check: ContractCheck) -> None:
        from importlinter.application import output

        for entry in check.metadata["violations"]:
            output.print_error(f"private name imported from another package: {entry}")
        for entry in check.metadata["stale"]:
            output.print_error(f"'allowed' entry matches no import any more (delete it): {entry}")
        output.new_line()


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module a ``from … import`` statement in ``module`` imports from."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])
