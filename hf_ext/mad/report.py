"""MAD results -> per-task table, bar chart per task, accuracy vs each difficulty knob (PNG) and a markdown report.

Aggregation as mad-lab's ``mad/analysis.py``: per setting keep the best ``test_acc`` over the lr x wd sweep
(``idxmax``), a task's MAD score is the mean over its settings, the overall MAD score the unweighted mean over tasks.

Example:
    >>> from hf_ext.mad.report import mad_report
    >>> from hf_ext.mad.bench import run_benchmark
    >>> rows = run_benchmark("mA Sg", preset="lite", tasks=["CR"], hidden_size=16, epochs=1, progress=False,
    ...                      overrides={"num_train_examples": 32, "num_test_examples": 8}, out_dir="mad_results")
    >>> paths = mad_report("mad_results", "mad_results/report")
    >>> sorted(paths)
    ['bars', 'knobs', 'markdown', 'table', 'table_csv']
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..markdown import markdown_table
from .config import KNOBS, MAD_TASKS, SHORTHANDS, TASKS

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["best_per_setting", "load_rows", "mad_report", "mad_scores"]


def load_rows(source: str | os.PathLike | Sequence[Mapping[str, Any]] | pd.DataFrame) -> pd.DataFrame:
    """A pandas DataFrame of result rows from a results folder (``results.parquet`` or ``rows-*.jsonl``), a parquet/
    JSON file, a list of dicts or a DataFrame.

    Raises:
        FileNotFoundError: a folder without results. ValueError: no rows.
    """
    import pandas as pd

    if isinstance(source, pd.DataFrame):
        df = source
    elif isinstance(source, (list, tuple)):
        df = pd.DataFrame(list(source))
    else:
        p = Path(source)
        if p.is_dir():
            files = sorted(p.glob("rows-*.jsonl"))
            if files:
                df = pd.DataFrame([json.loads(line) for f in files for line in f.read_text().splitlines() if line.strip()])
            elif (p / "results.parquet").is_file():
                df = pd.read_parquet(p / "results.parquet")
            else:
                raise FileNotFoundError(f"no MAD results in {p} (expected rows-*.jsonl or results.parquet from `hf-ext mad run`)")
        elif p.suffix == ".parquet":
            df = pd.read_parquet(p)
        elif p.suffix in (".json", ".jsonl"):
            text = p.read_text()
            df = pd.DataFrame(json.loads(text) if p.suffix == ".json" else [json.loads(x) for x in text.splitlines() if x.strip()])
        else:
            raise FileNotFoundError(f"MAD results source {source!r} is not a folder, .parquet or .json file")
    if df.empty:
        raise ValueError("no MAD result rows to report")
    return df


def best_per_setting(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of the best ``test_acc`` per (arch, protocol, setting) over the lr x wd sweep (mad-lab's idxmax)."""
    df = df.dropna(subset=["test_acc"])
    idx = df.groupby(["arch", "protocol", "setting"])["test_acc"].idxmax()
    return df.loc[idx].reset_index(drop=True)


def mad_scores(df: pd.DataFrame) -> pd.DataFrame:
    """Per-task MAD scores (columns = task shorthands in mad-lab order, then MQAR, plus ``MAD``), one row per
    (arch, protocol). ``MAD`` is the mean over the six mad-lab tasks only (MQAR has its own column)."""
    best = best_per_setting(df)
    table = best.groupby(["arch", "protocol", "task"])["test_acc"].mean().unstack("task")
    cols = [t for t in TASKS if t in table.columns]
    table = table[cols]
    table["MAD"] = table[[t for t in cols if t in MAD_TASKS]].mean(axis=1)
    return table.rename(columns=SHORTHANDS)


def mad_report(source: str | os.PathLike | Sequence[Mapping[str, Any]] | pd.DataFrame, out_dir: str | Path, title: str = "MAD benchmark", knob_plots: bool = True) -> dict[str, Any]:
    """Write ``mad_scores.csv``, ``mad_bars.png`` (bar chart per task), ``mad_knob_<task>.png`` (accuracy vs each
    difficulty knob, one panel per knob) and ``report.md`` into ``out_dir``; returns the paths.

    Args:
        source: see :func:`load_rows`.
        out_dir: folder (created).
        title: heading of the markdown report.
        knob_plots: also draw the accuracy-vs-knob figures (one per task).
    """
    from hf_ext.utils.imports import require

    matplotlib = require("matplotlib")
    matplotlib.use("Agg")
    plt = require("matplotlib.pyplot")

    out = Path(out_dir)
    df = load_rows(source)  # a bad source fails before the report folder is created
    out.mkdir(parents=True, exist_ok=True)
    df["label"] = df["arch"] + " (" + df["protocol"] + ")"
    table = mad_scores(df)
    csv = out / "mad_scores.csv"
    table.to_csv(csv)
    best = best_per_setting(df)
    best["label"] = best["arch"] + " (" + best["protocol"] + ")"
    labels = list(dict.fromkeys(best["label"]))

    # bar chart: one group per task, one bar per arch
    tasks = [SHORTHANDS[t] for t in TASKS if SHORTHANDS[t] in table.columns] + ["MAD"]
    fig, ax = plt.subplots(figsize=(1.2 * len(tasks) + 2, 3.6))
    width = 0.8 / max(len(table), 1)
    for i, (key, row) in enumerate(table.iterrows()):
        xs = [j + i * width for j in range(len(tasks))]
        ax.bar(xs, [row.get(t, float("nan")) for t in tasks], width=width, label=f"{key[0]} ({key[1]})")
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(tasks))], tasks)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("test accuracy (best over lr/wd)")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    bars = out / "mad_bars.png"
    fig.savefig(bars, dpi=110)
    plt.close(fig)

    # accuracy vs knob, per task
    knob_pngs = []
    for task in TASKS if knob_plots else ():
        sub = best[best["task"] == task]
        if sub.empty:
            continue
        knobs = [k for k in KNOBS[task] if k in sub.columns]
        # the reference point of each knob = its most frequent value (the baseline's, even under overrides)
        base_vals = {k: sub[k].mode().iloc[0] for k in knobs}
        fig, axes = plt.subplots(1, len(knobs), figsize=(3.2 * len(knobs), 2.8), squeeze=False)
        for ax, knob in zip(axes[0], knobs):
            others = [k for k in KNOBS[task] if k != knob and k in sub.columns]
            mask = (sub[others] == [base_vals[k] for k in others]).all(axis=1) if others else sub.index == sub.index
            for label in labels:
                pts = sub[mask & (sub["label"] == label)].sort_values(knob)
                if len(pts):
                    ax.plot(pts[knob], pts["test_acc"], marker="o", label=label)
            ax.set_xlabel(knob)
            ax.set_ylim(0, 1.05)
            if knob in ("vocab_size", "seq_len", "num_train_examples"):
                ax.set_xscale("log", base=2)
        axes[0][0].set_ylabel(f"{SHORTHANDS[task]} test acc")
        if axes[0][-1].get_legend_handles_labels()[0]:
            axes[0][-1].legend(fontsize=6)
        fig.suptitle(task, fontsize=9)
        fig.tight_layout()
        png = out / f"mad_knob_{SHORTHANDS[task]}.png"
        fig.savefig(png, dpi=100)
        plt.close(fig)
        knob_pngs.append(png)

    lines = [f"# {title}", "", "MAD score per task (best test accuracy over the lr x wd sweep, mean over the task's "
             "settings; MAD = mean over tasks; mad-lab's `analysis.py` aggregation).", ""]
    lines.append(_markdown_table(table))
    lines += ["", f"![per-task scores]({bars.name})", ""]
    lines += [f"![{p.stem}]({p.name})" for p in knob_pngs]
    lines += ["", "## Best run per setting", "", _markdown_table(best[["label", "setting", "lr", "weight_decay",
                                                                       "test_acc", "test_acc_micro", "test_ppl",
                                                                       "epochs_run"]].set_index("label"))]
    md = out / "report.md"
    md.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"markdown": md, "bars": bars, "knobs": knob_pngs, "table_csv": csv, "table": table}


def _markdown_table(df) -> str:
    df = df.reset_index()
    return markdown_table([str(c) for c in df.columns], (row.tolist() for _, row in df.iterrows()))
