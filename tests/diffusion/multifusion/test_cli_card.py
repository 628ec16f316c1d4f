"""``hf-ext multifusion generate|train`` and the model cards."""

from __future__ import annotations

import json

import pytest

from hf_ext.diffusion.multifusion import cli

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


def test_cli_generate_and_train(tmp_path, red_image):
    img_path = tmp_path / "ref.png"
    red_image.save(img_path)
    rc = cli.main(["generate", "a photo of", f"image:{img_path}", "a green apple", "--weights", "1", "1", "20",
                   "--negative", "blurry", "--steps", "2", "--cross-attention-weighting", "--out", str(tmp_path / "gen")])
    out = tmp_path / "gen" / "image.png"
    assert rc == 0 and out.is_file()
    from PIL import Image

    assert Image.open(out).size == (32, 32)
    assert cli.main(["generate", "x", "--weights", "1", "2", "--steps", "1", "--out", str(out)]) == 2  # 1 item, 2 weights
    assert cli.main(["generate", "image:/no/such.png", "--out", str(out)]) == 2
    rc = cli.main(["train", "--steps", "2", "--batch-size", "2", "--num-samples", "4", "--out",
                   str(tmp_path / "run"), "--no-progress", "--save-pipeline"])
    assert rc == 0
    losses = json.loads((tmp_path / "run" / "losses.json").read_text())
    assert len(losses["losses"]) == 2 and losses["processes"] == 1
    assert (tmp_path / "run" / "final" / "trainable.safetensors").is_file()
    assert (tmp_path / "run" / "pipeline" / "model_index.json").is_file()
    rc = cli.main(["train", "--stage", "semantic", "--encoder", "magma", "--family", "gpt2", "--steps", "1",
                   "--output-dir", str(tmp_path / "sem"), "--no-progress"])  # --output-dir: the pre-0.2 name of --out
    assert rc == 0 and (tmp_path / "sem" / "losses.json").is_file()


def test_hf_ext_cli_has_the_group():
    from hf_ext.cli import build_parser, command_modules

    assert "hf_ext.diffusion.multifusion.cli" in command_modules()
    args = build_parser().parse_args(["multifusion", "train", "--out", "x"])
    assert args.func.__name__ == "_cmd_train"


@pytest.mark.parametrize("template", ["multifusion", "mvader"])
def test_model_cards_render(template):
    from hf_ext.hub import render_model_card

    card = render_model_card(template, card_data={"license": "apache-2.0", "tags": ["multifusion"]},
                             model_name="tiny-mf", repo_id="me/tiny-mf", encoder="tiny Llava")
    text = str(card)
    assert "tiny-mf" in text and "from_pretrained" in text and "license: apache-2.0" in text
    assert "[More Information Needed]" not in text.split("## Citation")[0].split("## Intended use")[1]
