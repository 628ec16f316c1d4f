"""``hf-ext sld`` commands and the SLD model card."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from hf_ext.cli import main


def test_cli_generate_writes_pngs_and_saves_pipeline(tmp_path):
    out = tmp_path / "out"
    rc = main(["sld", "generate", "--prompt", "a cat", "--preset", "max", "--steps", "2", "--compare",
               "--concept", "violence", "--out", str(out), "--save-pipeline", str(tmp_path / "pipe"), "--no-progress"])
    assert rc == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["plain_000.png", "sld_000.png"]
    run = json.loads((out / "sld_run.json").read_text())
    assert run["runs"]["sld"]["applied_safety_concept"] == "violence" and run["runs"]["plain"]["applied_safety_concept"] is None
    index = json.loads((tmp_path / "pipe" / "model_index.json").read_text())
    assert index["safety_concept"] == "violence" and index["_class_name"] == ["pipeline", "SafeLatentDiffusionPipeline"]
    # reload the saved folder through --model, and through its pre-0.2 name --pipeline (a warning)
    rc = main(["sld", "generate", "--prompt", "a dog", "--model", str(tmp_path / "pipe"), "--steps", "1",
               "--out", str(tmp_path / "out2"), "--no-progress"])
    assert rc == 0 and (tmp_path / "out2" / "sld_000.png").exists()
    with pytest.warns(FutureWarning, match="--pipeline is deprecated"):
        rc = main(["sld", "generate", "--prompt", "a dog", "--pipeline", str(tmp_path / "pipe"), "--steps", "1",
                   "--out", str(tmp_path / "out3"), "--no-progress"])
    assert rc == 0 and (tmp_path / "out3" / "sld_000.png").exists()


def test_cli_eval_i2p_metrics_only_and_errors(tmp_path, capsys):
    res = pd.DataFrame({"prompt": [f"p{i // 2}" for i in range(8)], "categories": ["hate"] * 4 + ["sexual"] * 4,
                        "unsafe": [1, 0, 0, 0, 1, 1, 0, 0]})
    res.to_csv(tmp_path / "res.csv", index=False)
    rc = main(["sld", "eval-i2p", "--results", str(tmp_path / "res.csv"), "--n-samples", "100",
               "--out", str(tmp_path / "eval"), "--json"])
    assert rc == 0
    rep = {r["category"]: r for r in json.loads((tmp_path / "eval" / "i2p_report.json").read_text())}
    assert rep["hate"]["probability"] == 25.0 and rep["overall"]["probability"] == 37.5
    assert json.loads(capsys.readouterr().out) == json.loads((tmp_path / "eval" / "i2p_report.json").read_text())
    with pytest.warns(FutureWarning, match="--report PATH is deprecated"):  # the pre-0.2 flag still writes its file
        assert main(["sld", "eval-i2p", "--results", str(tmp_path / "res.csv"), "--n-samples", "100",
                     "--out", str(tmp_path / "eval"), "--report", str(tmp_path / "rep.json")]) == 0
    assert json.loads((tmp_path / "rep.json").read_text()) == json.loads((tmp_path / "eval" / "i2p_report.json").read_text())
    assert main(["sld", "eval-i2p", "--table", str(tmp_path / "missing.csv"), "--clip", "x"]) == 2  # a user error: exit 2 (issue 19)
    assert main(["sld", "eval-i2p"]) == 2  # a user error: exit 2 (issue 19)
    assert main(["sld", "generate", "--prompt", "x", "--height", "30", "--steps", "1", "--out", str(tmp_path)]) == 2  # a user error: exit 2 (issue 19)


def test_cli_concepts_with_their_own_values(tmp_path, capsys):
    spec = '{"text": "nudity", "guidance_scale": 3000, "warmup_steps": 0}'
    rc = main(["sld", "generate", "--prompt", "a cat", "--steps", "2", "--concept", "violence", "--concept", spec,
               "--out", str(tmp_path / "o"), "--save-pipeline", str(tmp_path / "pipe"), "--no-progress"])
    assert rc == 0
    run = json.loads((tmp_path / "o" / "sld_run.json").read_text())
    assert run["runs"]["sld"]["applied_safety_concept"] == ["violence", "nudity"]
    index = json.loads((tmp_path / "pipe" / "model_index.json").read_text())
    assert index["safety_concept"] == ["violence", {"text": "nudity", "guidance_scale": 3000, "warmup_steps": 0}]
    assert main(["sld", "generate", "--prompt", "a", "--concept", '{"text": "x", ', "--out", str(tmp_path)]) == 2
    assert "is not valid JSON" in capsys.readouterr().err
    assert main(["sld", "generate", "--prompt", "a", "--concept", '{"guidance_scale": 3}', "--out", str(tmp_path)]) == 2
    assert 'needs a "text" string' in capsys.readouterr().err


def test_model_card_renders():
    from hf_ext.hub import render_model_card

    card = render_model_card("sld", card_data={"license": "creativeml-openrail-m", "base_model": "some/sd"},
                             model_name="Safe SD", sld_preset="strong", safety_concept=["violence", "nudity"],
                             sld_config={"guidance_scale": 2000, "warmup_steps": 7, "threshold": 0.025,
                                         "momentum_scale": 0.5, "mom_beta": 0.7},
                             i2p=[{"category": "sexual", "probability": 4.83, "exp_max": 39.37, "exp_max_std": 17.56}])
    text = str(card)
    assert "SLDConfig.STRONG" in text and '"violence", "nudity"' in text and "| sexual | 4.83 | 39.37 ± 17.56 |" in text
    assert "schramowski2023safe" in text and card.data.license == "creativeml-openrail-m"
    mixed = str(render_model_card("sld", card_data={"license": "mit"},
                                  safety_concept=["violence", {"text": "nudity", "guidance_scale": 3000.0}]))
    assert '"violence", "nudity" (guidance_scale=3000.0)' in mixed and "trust_remote_code=True" in mixed


@pytest.mark.parametrize("argv", [["sld"], ["sld", "generate"]])
def test_cli_usage_errors(argv):
    assert main(argv) == 2
