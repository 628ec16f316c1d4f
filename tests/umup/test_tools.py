"""coord_check, the LR sweep, the `hf-ext umup` CLI and the model card."""

from __future__ import annotations

import json
import math

import pytest
import torch

from hf_ext.cli import main
from hf_ext.umup.coord_check import coord_check, plot_coord_check, width_growth
from hf_ext.umup.sweep import best_lrs, lr_sweep, mean_losses, stdlib_bytes, transfer_summary


def test_coord_check_umup_is_width_stable_and_sp_is_not(tmp_path):
    torch.set_num_threads(1)
    rows = coord_check(widths=(32, 128), steps=3, batch_size=2, seq_len=32)
    at_init = [r for r in rows if r["parametrization"] == "umup" and r["step"] == 0 and r["kind"] == "act"
               and r["name"] != "logits"]  # logits are 1/sqrt(width) by design (μP readout 1/fan_in)
    assert all(0.7 < r["rms"] < 1.6 for r in at_init), at_init  # unit-scaled at init, every width
    assert width_growth(rows, "umup", "act") < 1.6
    assert width_growth(rows, "sp", "act") > 2 * width_growth(rows, "umup", "act")
    png = plot_coord_check(rows, tmp_path / "cc.png")
    assert png.stat().st_size > 1000
    with pytest.raises(ValueError, match="parametrization"):
        coord_check(widths=(32,), parametrizations=("mup",))


def test_sweep_rows_best_lr_and_summary():
    rows = [{"parametrization": "umup", "width": w, "log2_lr": lr, "seed": s, "loss": loss}
            for w, losses in ((64, {-1: 2.5, 0: 2.4, 1: 2.45}), (256, {-1: 2.3, 0: 2.3, 1: 2.5}))
            for lr, loss in losses.items() for s in (0, 1)]
    rows.append({"parametrization": "umup", "width": 64, "log2_lr": 2, "seed": 0, "loss": float("nan")})
    assert best_lrs(rows) == {"umup": {64: 0, 256: -1}}  # tie at 256 → the lower LR
    assert math.isnan(mean_losses(rows)["umup"][64][2])
    summary = transfer_summary(rows)
    assert summary["umup_shift"] == -1 and summary["best_log2_lr"]["umup"] == {"64": 0, "256": -1}


def test_tiny_sweep_trains_both_parametrizations():
    torch.set_num_threads(1)
    data = stdlib_bytes(200_000)
    assert data.dtype == torch.long and int(data.max()) < 256
    rows = lr_sweep(widths=(32,), log2_lrs={"umup": [0], "sp": [-7]}, steps=12, seeds=(0,), batch_size=4, seq_len=32,
                    progress=False, data=data)
    losses = {r["parametrization"]: r["loss"] for r in rows}
    assert all(loss < math.log(256) for loss in losses.values()), losses  # both learn below the uniform loss
    with pytest.raises(ValueError, match="parametrization"):
        lr_sweep(widths=(32,), parametrizations=("xp",), steps=1, seeds=(0,), progress=False)


def test_cli_sweep_and_coord_check(tmp_path, capsys):
    code = main(["umup", "sweep", "--widths", "32", "--umup-lrs", "0", "--sp-lrs", "-7", "--steps", "3",
                 "--seeds", "0", "--batch-size", "2", "--seq-len", "16", "--out", str(tmp_path / "s"), "--no-progress",
                 "--threads", "1"])
    assert code == 0, capsys.readouterr()
    doc = json.loads((tmp_path / "s" / "sweep.json").read_text())
    assert len(doc["rows"]) == 2 and (tmp_path / "s" / "sweep.png").exists()
    code = main(["umup", "coord-check", "--widths", "32", "64", "--steps", "1", "--batch-size", "2", "--seq-len", "16",
                 "--parametrizations", "umup", "--out", str(tmp_path / "c")])
    assert code == 0 and (tmp_path / "c" / "coord_check.png").exists()
    assert "activation RMS" in capsys.readouterr().out
    assert main(["umup", "sweep", "--widths", "48", "--out", str(tmp_path / "bad")]) == 2  # not a multiple of 32


def test_model_card_renders():
    from hf_ext.hub import render_model_card
    from hf_ext.umup import UMupConfig, UMupLlamaForCausalLM, umup_param_groups

    cfg = UMupConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                     umup_alpha_res=1.5)
    model = UMupLlamaForCausalLM(cfg)
    groups = [{"name": g["name"], "lr": g["lr"]} for g in umup_param_groups(model, 0.5)]
    card = render_model_card("umup", card_data={"license": "apache-2.0", "model_name": "tiny-umup", "tags": ["u-mup"]},
                             config=cfg.to_dict(), base_lr=0.5, weight_decay=1e-4, lr_groups=groups,
                             model_name="tiny-umup", auto_class="AutoModelForCausalLM")
    text = str(card)
    assert "u-μP" in text and "| α_res, α_res-attn-ratio | 1.5, 1.0 |" in text
    assert "| readout | 0.5 |" in text and "blake2025umup" in text and card.data.license == "apache-2.0"
