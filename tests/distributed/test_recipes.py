"""The README's CPU launch recipes, run as written: 2 processes (DDP and FSDP2) against the same command in one.

For every trainable component: the DDP and the FSDP2 line run under torchrun (gloo); both must report world size 2,
the FSDP2 run every parameter as a ``DTensor`` with about half the elements on each process and the DDP run none;
their per-step losses equal the 1-process run's and every saved safetensors file has the same keys, shapes and dtypes
with values within the README's fp32 tolerance (launch.FINE / launch.COARSE).
"""

from __future__ import annotations

import pytest

from .launch import REPO, compare_outputs, launch, readme_recipes, run_meta, single_process

pytestmark = [pytest.mark.multiprocess, pytest.mark.xdist_group("multiprocess")]

COMPONENTS = ["umup", "tfree", "scar", "fusion-a", "fusion-b"]


def test_readme_has_a_ddp_and_an_fsdp_recipe_per_component(capsys):
    cpu, gpu = readme_recipes(0), readme_recipes(1)
    assert sorted(cpu) == sorted(f"{c}-{kind}" for c in COMPONENTS for kind in ("ddp", "fsdp"))
    for c in COMPONENTS:
        ddp, fsdp = cpu[f"{c}-ddp"], cpu[f"{c}-fsdp"]
        assert ddp[:4] == ["torchrun", "--standalone", "--nproc_per_node", "2"] and "--fsdp" not in ddp
        assert [a for a in fsdp if a != "--fsdp"] == [a.replace(f"{c}-ddp", f"{c}-fsdp") for a in ddp]
    assert sorted(gpu) == sorted(cpu)
    for name, argv in gpu.items():
        config = "configs/accelerate/fsdp2.yaml" if name.endswith("-fsdp") else "configs/accelerate/ddp.yaml"
        assert argv[:4] == ["accelerate", "launch", "--config_file", config] and "--fsdp" not in argv
        assert (REPO / config).is_file()
        assert argv[argv.index("-m"):argv.index("-m") + 2] == cpu[name][cpu[name].index("-m"):cpu[name].index("-m") + 2]
        _options_exist(argv, capsys)


def _options_exist(argv, capsys):
    """Every ``--option`` of a (GPU) recipe is one its command accepts (they cannot run here)."""
    import importlib

    args = argv[argv.index("-m") + 2:]
    words = [a for a in args[: next(i for i, a in enumerate(args) if a.startswith("--"))]]
    try:  # argparse exits after --help; hf_ext.cli.main returns its exit code instead
        assert importlib.import_module(argv[argv.index("-m") + 1]).main([*words, "--help"]) == 0
    except SystemExit as stop:
        assert stop.code == 0
    helptext = capsys.readouterr().out
    unknown = [a for a in args if a.startswith("--") and a not in helptext]
    assert not unknown, f"{unknown} are not options of {' '.join(argv[:argv.index('-m') + 2 + len(words)])}"


def _check_run(folder, world, sharded, losses_one):
    size, reports, losses = run_meta(folder)
    assert size == world
    for report in reports:
        assert report["sharded"] is sharded
        if sharded:
            assert report["dtensor_parameters"] == report["parameters"] > 0
            assert report["global_numel"] / world <= report["local_numel"] <= 0.55 * report["global_numel"]
        else:
            assert report["dtensor_parameters"] == 0 and report["local_numel"] == report["global_numel"]
    assert len(losses) == len(losses_one)
    for a, b in zip(losses, losses_one):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("component", COMPONENTS)
def test_two_processes_ddp_and_fsdp2_equal_one_process(component, tmp_path):
    recipes = readme_recipes(0)
    for kind in ("ddp", "fsdp"):
        launch(recipes[f"{component}-{kind}"], tmp_path)
    one = tmp_path / "runs" / f"{component}-one"
    single_process(recipes[f"{component}-ddp"], one)
    size, reports, losses_one = run_meta(one)
    assert size == 1 and not any(r["sharded"] for r in reports)
    assert losses_one[-1] < losses_one[0]  # it trained
    _check_run(tmp_path / "runs" / f"{component}-ddp", 2, False, losses_one)
    _check_run(tmp_path / "runs" / f"{component}-fsdp", 2, True, losses_one)
    for kind in ("ddp", "fsdp"):
        compare_outputs(one, tmp_path / "runs" / f"{component}-{kind}")


def test_accelerate_fsdp2_config_shards_on_cpu_too(tmp_path):
    """``accelerate launch --config_file configs/accelerate/fsdp2.yaml`` on CPU: Accelerate drops its FSDP plugin,
    hf_ext still shards (2 processes, DTensors) and matches one process."""
    argv = readme_recipes(0)["umup-ddp"]
    args = argv[argv.index("-m"):]
    args[args.index("--out") + 1] = "runs/umup-acc"
    launch(["accelerate", "launch", "--config_file", str(REPO / "configs/accelerate/fsdp2.yaml"), *args], tmp_path)
    one = tmp_path / "runs" / "umup-one"
    single_process(argv, one)
    _check_run(tmp_path / "runs" / "umup-acc", 2, True, run_meta(one)[2])
    compare_outputs(one, tmp_path / "runs" / "umup-acc")
