"""`hf-ext reproduce scar --quick` on SmolLM2-135M-Instruct (real tier: tests/real/ is marked `real`)."""

import json

from hf_ext.cli import main


def test_quick_scar_reproduction(tmp_path):
    assert main(["reproduce", "scar", "--model", "smollm2-135m-instruct", "--quick", "--out", str(tmp_path),
                 "--no-progress"]) == 0
    data = json.loads((tmp_path / "report.json").read_text())
    tables = {t["key"]: t for t in data["tables"]}
    assert {"scar.data", "scar.detection", "scar.steering", "scar.sae"} <= set(tables)
    detection = {row[0]: row[1:] for row in tables["scar.detection"]["rows"]}
    assert detection["german"][0] > 0.8  # German vs English questions: easy for a pretrained LM's activations
    for row in tables["scar.sae"]["rows"]:
        assert 0 < row[4] <= 1  # explained variance on held-out prose
    for concept in ("german", "immoral"):
        assert (tmp_path / f"adapter-{concept}" / "adapter_model.safetensors").is_file()
        assert "model-index" in (tmp_path / f"adapter-{concept}" / "README.md").read_text()
