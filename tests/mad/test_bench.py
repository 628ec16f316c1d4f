"""The MAD runner and report: a pinned learning test, the madlab protocol's selection/early-stop rules, the job grid,
resumable runs, the optimizer hook, transformers backbones, the report, and the CLI."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from hf_ext.mad import baseline, generate_splits
from hf_ext.mad.bench import LR_GRIDS, make_jobs, make_model, run_benchmark, train_run
from hf_ext.mad.report import mad_report

TINY = {"num_train_examples": 32, "num_test_examples": 16}


@pytest.mark.slow
def test_tiny_attention_model_learns_in_context_recall():
    """A 4-layer MADStack (mA Sg mA Sg, d=64) reaches > 0.9 macro test accuracy on CR (V=16, L=32) in < 60 s of CPU."""
    cfg = baseline("CR", vocab_size=16, seq_len=32, num_train_examples=1024, num_test_examples=256)
    data = generate_splits(cfg)
    t0 = time.process_time()
    model = make_model("mA Sg mA Sg", cfg, hidden_size=64, num_heads=4, seed=0)
    res = train_run(model, cfg, data, lr=3e-3, weight_decay=0.0, epochs=30, batch_size=32, seed=0, early_stop_acc=0.95)
    cpu_s = time.process_time() - t0
    assert res.test_acc > 0.9, res.history
    assert cpu_s < 60 * torch.get_num_threads(), cpu_s


def test_madlab_protocol_selects_min_ppl_epoch_and_stops_early():
    cfg = baseline("CR", seq_len=16, **TINY)
    data = generate_splits(cfg)
    res = train_run(make_model("mA Sg", cfg, hidden_size=16, num_heads=2), cfg, data, 1e-2, 0.0, epochs=4,
                    batch_size=8, early_stop_acc=1.01)
    ppl = [h["test_ppl"] for h in res.history]
    assert res.epochs_run == 4 and res.best_epoch == int(np.argmin(ppl))
    assert res.test_acc == res.history[res.best_epoch]["test_acc"]
    stop = train_run(make_model("mA Sg", cfg, hidden_size=16, num_heads=2), cfg, data, 1e-3, 0.0, epochs=5,
                     batch_size=8, early_stop_acc=0.0)
    assert stop.epochs_run == 1 and stop.stopped_early
    clean = train_run(make_model("mA Sg", cfg, hidden_size=16, num_heads=2), cfg, data, 1e-3, 0.1, epochs=2,
                      batch_size=8, protocol="clean")
    assert "val_acc" in clean.history[0]
    with pytest.raises(ValueError, match="protocol"):
        train_run(None, cfg, data, 1e-3, 0.0, 1, protocol="hidden")


def test_job_grid_and_lr_grids():
    assert len(make_jobs("mA Sg mA Sg", preset="full")) == 396
    assert len(make_jobs("umup", preset="full")) == 66 * len(LR_GRIDS["umup"]) * 2
    assert max(LR_GRIDS["umup"]) >= 1.0 > max(LR_GRIDS["default"])
    lite = make_jobs("mA Sg", preset="lite")
    assert len(lite) == 6 and {j.setting.name for j in lite} == {baseline(t).name for t in
                                                                  ("CR", "NR", "FR", "M", "C", "SC")}
    assert all(j.epochs == 20 and j.weight_decay == 0.0 for j in lite)
    with pytest.raises(ValueError, match="preset"):
        make_jobs("mA", preset="medium")


def test_runner_rows_resume_hook_and_report(tmp_path):
    calls = []

    def factory(model, lr, wd):
        calls.append((lr, wd))
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)

    kw = dict(preset="lite", tasks=["CR", "C"], hidden_size=16, num_heads=2, epochs=1, max_steps=2, batch_size=8,
              overrides=TINY, out_dir=tmp_path, progress=False)
    rows = run_benchmark("mA Sg", optimizer_factory=factory, **kw)
    assert len(rows) == 2 and calls == [(5e-4, 0.0), (5e-4, 0.0)]
    assert (tmp_path / "results.parquet").is_file() and (tmp_path / "results.json").is_file()
    assert {r["task"] for r in rows} == {"in-context-recall", "compression"}
    rows2 = run_benchmark("mA Sg", optimizer_factory=factory, **kw)  # resumed: nothing rerun
    assert len(rows2) == 2 and len(calls) == 2
    run_benchmark("hf:llama", **{**kw, "tasks": ["CR", "C"], "lrs": [1e-3, 1e-2]})
    paths = mad_report(tmp_path, tmp_path / "report")
    table = paths["table"]
    # independent aggregation: best over lr per setting, mean over settings per task, mean over tasks
    allrows = [json.loads(x) for f in sorted(tmp_path.glob("rows-*.jsonl")) for x in f.read_text().splitlines()]
    hf = [r for r in allrows if r["arch"] == "hf:llama"]
    best = {}
    for r in hf:
        best[r["task"]] = max(best.get(r["task"], -1), r["test_acc"])
    assert table.loc[("hf:llama", "madlab"), "CR"] == pytest.approx(best["in-context-recall"])
    assert table.loc[("hf:llama", "madlab"), "MAD"] == pytest.approx(np.mean(list(best.values())))
    assert paths["bars"].stat().st_size > 0 and len(paths["knobs"]) == 2
    assert "| arch |" in paths["markdown"].read_text()


def test_transformers_backbones_and_compression_wrapper():
    from hf_ext.mad.models import CausalLMAutoEncoder, MADAutoEncoder

    c = baseline("C", **TINY)
    assert isinstance(make_model("mA Sg", c, hidden_size=16, num_heads=2), MADAutoEncoder)
    for arch in ("hf:gpt2", "hf:qwen2"):
        assert isinstance(make_model(arch, c, hidden_size=16, num_heads=2), CausalLMAutoEncoder)
        m = make_model(arch, baseline("CR", seq_len=16, **TINY), hidden_size=16, num_heads=2)
        assert m.config.vocab_size == 16
    mamba = make_model("hf:mamba", baseline("CR", seq_len=16, **TINY), hidden_size=16)
    assert mamba.config.intermediate_size == 32 and mamba.config.num_hidden_layers == 2  # derived sizes follow
    with pytest.raises(ValueError, match="unknown MAD layer"):
        make_model("transformer", c)
    with pytest.raises(ValueError, match="unknown transformers model type"):
        make_model("hf:not-a-model", c)


def test_umup_through_auto_class_and_its_optimizer():
    pytest.importorskip("hf_ext.umup.modeling_umup")
    from hf_ext.mad.bench import default_optimizer_factory

    cfg = baseline("CR", seq_len=16, **TINY)
    data = generate_splits(cfg)
    model = make_model("umup", cfg, hidden_size=16, num_heads=2)
    assert type(model).__name__ == "UMupLlamaForCausalLM"
    res = train_run(model, cfg, data, lr=1.0, weight_decay=0.0, epochs=2, batch_size=8,
                    optimizer_factory=default_optimizer_factory("umup", "madlab"))
    assert np.isfinite(res.history[-1]["train_loss"]) and res.steps == 8


def test_cli(tmp_path, capsys):
    from hf_ext.cli import main

    assert main(["mad", "grid"]) == 0
    assert "66 settings" in capsys.readouterr().out
    assert main(["mad", "generate", "M", "--set", "num_train_examples=4", "num_test_examples=2",
                 "--out", str(tmp_path / "gen")]) == 0
    assert (tmp_path / "gen" / "train.parquet").is_file()
    assert main(["mad", "generate", "nope"]) == 2
    out = tmp_path / "run"
    assert main(["mad", "run", "--arch", "mA Sg", "--lite", "--tasks", "M", "--hidden-size", "16", "--num-heads", "2",
                 "--epochs", "1", "--max-steps", "1", "--set", "num_train_examples=16", "num_test_examples=8",
                 "--out", str(out), "--report", "--no-progress"]) == 0
    assert (out / "report" / "mad_bars.png").is_file()
    assert main(["mad", "report", str(out)]) == 0
    assert main(["mad", "report", str(tmp_path / "empty")]) == 2
    assert main(["mad", "export", "--out", str(tmp_path / "exp"), "--tasks", "M", "--set", "num_train_examples=4",
                 "num_test_examples=2"]) == 0
    assert (tmp_path / "exp" / "README.md").is_file()
