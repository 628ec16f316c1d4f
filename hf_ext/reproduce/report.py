"""Reports of ``hf-ext reproduce``: markdown tables, plots and a JSON of every figure, in one run folder.

A :class:`Report` holds tables (:class:`Table`: column names, raw values, one format per column), free-form
figures (any JSON-ready numbers: per-item values, curves, settings) and plots. :meth:`Report.write` puts
``report.md``, ``report.json`` and the PNGs into ``runs/reproduce-<component>-<model>-<time>/``; the markdown
tables are rendered from the same values as the JSON, and :func:`render_table` renders a table straight from
the JSON (the README's tables are regenerated that way and diffed in a test).

Times depend on machine load, quality figures do not: the report records the load average while it ran and marks
its times *contended* when the 1-minute load average exceeded the number of cores at any sample.

Example:
    >>> t = Table("demo", "Demo", ["method", "score"], [["a", 0.5], ["b", 0.25]], formats=["s", ".2f"])
    >>> print(t.to_markdown())
    | method | score |
    |:--|--:|
    | a | 0.50 |
    | b | 0.25 |
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hf_ext.utils.logging import get_logger

logger = get_logger(__name__)


@dataclass
class Table:
    """One table of a report.

    Attributes:
        key: identifier, unique in its report (the README refers to it).
        title: heading shown above the table.
        columns: column names.
        rows: raw values (str, int, float or ``None``), one list per row.
        formats: per column a ``format()`` spec (``"s"``, ``".3f"``, ``"d"``, ``".1%"``); ``None`` values print ``–``.
        notes: a sentence printed under the table.
    """

    key: str
    title: str
    columns: list[str]
    rows: list[list[Any]]
    formats: list[str] | None = None
    notes: str = ""

    def __post_init__(self):
        if self.formats is None:
            self.formats = ["s"] * len(self.columns)
        if len(self.formats) != len(self.columns):
            raise ValueError(f"table {self.key!r}: {len(self.formats)} formats for {len(self.columns)} columns")
        for row in self.rows:
            if len(row) != len(self.columns):
                raise ValueError(f"table {self.key!r}: row {row!r} has {len(row)} cells, expected {len(self.columns)}")

    def to_markdown(self) -> str:
        """The table as GitHub markdown (text columns left-aligned, numbers right-aligned)."""
        return render_table(asdict(self))


def _cell(value: Any, spec: str) -> str:
    if value is None:
        return "–"
    if isinstance(value, str) or spec == "s":
        return str(value).replace("|", "\\|")
    return format(value, spec)


def render_table(table: dict[str, Any]) -> str:
    """Markdown of a table given as a dict (a :class:`Table`'s fields, e.g. read back from ``report.json``)."""
    formats = table.get("formats") or ["s"] * len(table["columns"])
    align = ["--:" if f != "s" else ":--" for f in formats]
    lines = ["| " + " | ".join(table["columns"]) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(_cell(v, f) for v, f in zip(row, formats)) + " |" for row in table["rows"]]
    return "\n".join(lines)


class LoadMonitor:
    """Samples the 1-minute load average; :attr:`contended` when it exceeded the core count at any sample.

    Example:
        >>> mon = LoadMonitor(); mon.sample(); isinstance(mon.contended, bool)
        True
    """

    def __init__(self) -> None:
        self.cores = os.cpu_count() or 1
        self.samples: list[float] = []

    def sample(self) -> None:
        try:
            self.samples.append(os.getloadavg()[0])
        except OSError:  # not available on this platform
            pass

    @property
    def contended(self) -> bool:
        return bool(self.samples) and max(self.samples) > self.cores

    def to_dict(self) -> dict[str, Any]:
        return {"cores": self.cores, "loadavg_max": max(self.samples, default=None),
                "loadavg_mean": sum(self.samples) / len(self.samples) if self.samples else None,
                "contended": self.contended}


@dataclass
class Report:
    """A reproduction's results.

    Attributes:
        component: e.g. ``"atman"``.
        model: the model name or Hub id.
        quick: whether this was a ``--quick`` run.
        title: heading of ``report.md``.
        summary: paragraphs printed before the tables (what was measured, on what, the caveats).
        tables: the tables.
        figures: every other figure, JSON-ready (per-item values, curves, settings, times).
        plots: ``(file name, draw(path))`` callables, run by :meth:`write` when matplotlib is installed.
        artifacts: ``(name, write(path))`` callables, run by :meth:`write` (e.g. an exported adapter folder).
        load: the load monitor of the run.
    """

    component: str
    model: str
    quick: bool
    title: str
    summary: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    plots: list[tuple[str, Callable[[Path], None]]] = field(default_factory=list)
    artifacts: list[tuple[str, Callable[[Path], None]]] = field(default_factory=list)
    load: LoadMonitor = field(default_factory=LoadMonitor)
    started: float = field(default_factory=time.time)

    def table(self, key: str) -> Table:
        for t in self.tables:
            if t.key == key:
                return t
        raise KeyError(f"report has no table {key!r}; tables: {[t.key for t in self.tables]}")

    def to_json(self) -> dict[str, Any]:
        """Everything but the plots' code: settings, environment, tables (raw values) and figures."""
        from hf_ext.cli import package_versions

        return {"component": self.component, "model": self.model, "quick": self.quick, "title": self.title,
                "summary": self.summary, "tables": [asdict(t) for t in self.tables], "figures": self.figures,
                "environment": {"versions": package_versions(), "platform": platform.platform(),
                                "load": self.load.to_dict(), "started": _dt.datetime.fromtimestamp(self.started).isoformat(
                                    timespec="seconds"), "wall_seconds": round(time.time() - self.started, 1)}}

    def to_markdown(self, data: dict[str, Any] | None = None, plot_files: Sequence[str] = ()) -> str:
        data = data or self.to_json()
        env = data["environment"]
        load = env["load"]
        lines = [f"# {self.title}", "", f"Model: `{self.model}` · {'quick' if self.quick else 'full'} run · "
                 f"{env['started']} · {env['wall_seconds']:.0f} s wall · hf_ext {env['versions']['hf_ext']}, "
                 f"torch {env['versions']['torch']}, transformers {env['versions']['transformers']} · {env['platform']}",
                 ""]
        if load["contended"]:
            lines += [f"**Times are contended**: the machine's 1-minute load average reached {load['loadavg_max']:.1f} "
                      f"on {load['cores']} cores during the run; quality figures do not depend on load, times do.", ""]
        lines += [p + "\n" for p in self.summary]
        for t in data["tables"]:
            lines += [f"## {t['title']}", "", render_table(t), ""]
            if t["notes"]:
                lines += [t["notes"], ""]
        for name in plot_files:
            lines += [f"![{name}]({name})", ""]
        if self.artifacts:
            lines += ["Artifacts: " + ", ".join(f"`{name}/`" for name, _ in self.artifacts), ""]
        lines += ["Every figure of this report is in `report.json`.", ""]
        return "\n".join(lines)

    def write(self, out_dir: str | os.PathLike | None = None, *, root: str | os.PathLike = "runs") -> Path:
        """Write ``report.md``, ``report.json`` and the plots; returns the folder.

        Args:
            out_dir: the folder (default ``<root>/reproduce-<component>-<model>-<YYYYmmdd-HHMMSS>``).
            root: parent of the default folder.
        """
        if out_dir is None:
            stamp = _dt.datetime.fromtimestamp(self.started).strftime("%Y%m%d-%H%M%S")
            out_dir = Path(root) / f"reproduce-{self.component}-{self.model.replace('/', '--')}-{stamp}"
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.load.sample()
        data = self.to_json()
        (out / "report.json").write_text(json.dumps(data, indent=1, default=float) + "\n", encoding="utf-8")
        for name, write in self.artifacts:
            write(out / name)
        written = []
        try:
            import matplotlib

            matplotlib.use("Agg")
            for name, draw in self.plots:
                draw(out / name)
                written.append(name)
        except ImportError:
            logger.warning("matplotlib is not installed: no plots (pip install 'hf-ext[plots]')")
        (out / "report.md").write_text(self.to_markdown(data, written), encoding="utf-8")
        return out
