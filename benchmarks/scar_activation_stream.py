"""SCAR training memory: activations streamed from disk (memory-mapped ActivationStore) vs held in memory.

Two cache sizes, 1× (at least 1 GiB of float32 activations, width 4096 as Llama-3-8B) and 4× the tokens, are written
once to a temporary folder with the same :class:`~hf_ext.scar.activation_store.ActivationWriter` that
``build_activation_dataset(..., output_dir=...)`` uses. Each arm then trains a SCAR adapter for one epoch with
``train_scar`` (``transformers.Trainer``, shuffled batches of 2048 tokens) in its **own subprocess**, and reports the
peak resident memory above the post-load baseline (imports and the adapter built; ``_timing.peak_rss_mb``):

* ``streamed``: ``train_scar`` on the ``ActivationStore`` (128 MiB shards; a shard's mapped pages are released as
  soon as a batch's rows are copied out of it).
* ``memory``: the cache loaded into RAM first (``ActivationStore.to_tensors``: the activations once, float32, the
  leanest in-memory form; a ``datasets.Dataset`` from ``build_activation_dataset`` costs more), then ``train_scar``.

Target: streamed peak at 4× ≤ 1.1 × streamed peak at 1× (the in-memory path grows with the tokens). Before the
memory arms, both paths are checked to train to the same adapter on a small store (equal losses and weights).
Prints one row per arm and the ratios, appends JSON rows to ``<out>/scar_activation_stream.jsonl``.

Usage:
    python benchmarks/scar_activation_stream.py --quick   # smoke test: tiny stores, arms in this process
    python benchmarks/scar_activation_stream.py           # 1 GiB / 4 GiB stores (5 GiB of disk), one subprocess per arm
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from pathlib import Path

from _timing import ArmSpec, append_json_row, common_argparser, measure_peak

NAME = "scar_activation_stream"
SIZES = {
    "quick": dict(n_inputs=64, tokens_1x=2048, n_latents=32, k=4, batch_size=256),
    "full": dict(n_inputs=4096, tokens_1x=65536, n_latents=32, k=4, batch_size=2048),  # 1× = 65536·4096·4 B = 1 GiB
}


def write_store(folder: str, tokens: int, n_inputs: int, seed: int = 0) -> str:
    """A store of ``tokens`` seeded Gaussian activations (a concept direction on ~30 % of them), written in chunks."""
    import torch

    from hf_ext.scar.activation_store import ActivationWriter

    g = torch.Generator().manual_seed(seed)
    direction = torch.randn(n_inputs, generator=g) * 3
    with ActivationWriter(folder, n_inputs=n_inputs, num_concepts=1, shard_mb=128, overwrite=True) as writer:
        for start in range(0, tokens, 8192):
            n = min(8192, tokens - start)
            y = (torch.rand(n, 1, generator=g) < 0.3).float()
            writer.write(torch.randn(n, n_inputs, generator=g) + y * direction, y, torch.arange(start, start + n))
    return folder


def load_arm(store: str, mode: str, n_latents: int, k: int, batch_size: int) -> dict:
    """Setup (not measured): imports and the adapter."""
    import torch

    from hf_ext.scar import ScarAdapter, ScarConfig
    from hf_ext.scar.activation_store import ActivationStore
    from hf_ext.scar.training import train_scar  # noqa: F401  (import cost belongs to the baseline)

    torch.set_num_threads(1)
    n_inputs = ActivationStore(store).n_inputs
    adapter = ScarAdapter(ScarConfig(n_inputs=n_inputs, n_latents=n_latents, k=k, concepts=["c"]), seed=0)
    return {"store": store, "mode": mode, "adapter": adapter, "batch_size": batch_size}


def train_arm(state: dict) -> list[float]:
    """Measured: open (streamed) or load (memory) the cache, then one epoch of ``train_scar``."""
    from hf_ext.scar.activation_store import ActivationStore
    from hf_ext.scar.training import ActivationTensors, train_scar

    store = ActivationStore(state["store"])
    data = store if state["mode"] == "streamed" else ActivationTensors(*store.to_tensors())
    _, log = train_scar(state["adapter"], data, epochs=1, batch_size=state["batch_size"], lr=1e-4, seed=0,
                        progress=False, logging_steps=10_000)
    return [row["train_loss"] for row in log if "train_loss" in row]


def _same_result(folder: str, size: dict) -> float:
    """Both paths train to the same adapter (max |Δweight|); run before the memory arms."""

    from hf_ext.scar import ScarAdapter, ScarConfig
    from hf_ext.scar.activation_store import ActivationStore
    from hf_ext.scar.training import ActivationTensors, train_scar

    store = ActivationStore(folder)
    adapters = []
    for data in (store, ActivationTensors(*store.to_tensors())):
        adapter = ScarAdapter(ScarConfig(n_inputs=store.n_inputs, n_latents=size["n_latents"], k=size["k"],
                                         concepts=["c"]), seed=0)
        train_scar(adapter, data, epochs=1, batch_size=size["batch_size"], lr=1e-3, seed=0, progress=False)
        adapters.append(adapter.state_dict())
    return max(float((adapters[0][k] - adapters[1][k]).abs().max()) for k in adapters[0])


def _in_process(store: str, mode: str, size: dict) -> float:
    """Quick mode: the arm in this process (smoke test; the RSS growth is not a clean measurement)."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    train_arm(load_arm(store, mode, size["n_latents"], size["k"], size["batch_size"]))
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024


def main() -> int:
    parser = common_argparser(__doc__.splitlines()[0])
    parser.add_argument("--keep", default=None, help="write the stores here and keep them (default: a temporary folder)")
    args = parser.parse_args()
    size = SIZES["quick" if args.quick else "full"]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="scar-stream-") as tmp:
        root = Path(args.keep or tmp)
        stores = {}
        for factor in (1, 4):
            stores[factor] = write_store(str(root / f"x{factor}"), factor * size["tokens_1x"], size["n_inputs"])
        from hf_ext.scar.activation_store import ActivationStore

        gib = {f: ActivationStore(s).nbytes / 2**30 for f, s in stores.items()}
        check = write_store(str(root / "check"), 4 * size["batch_size"], size["n_inputs"])
        max_diff = _same_result(check, size)
        if max_diff > 1e-6:
            print(f"streamed and in-memory training differ by {max_diff:.2e}: not the same computation", file=sys.stderr)
            return 1
        peaks = {}
        for mode in ("streamed", "memory"):
            for factor in (1, 4):
                if args.quick:
                    peaks[(mode, factor)] = {"peak_mb": _in_process(stores[factor], mode, size), "method": "in-process"}
                else:
                    spec = ArmSpec(str(Path(__file__).resolve()), setup="load_arm", run="train_arm",
                                   kwargs={"store": stores[factor], "mode": mode, "n_latents": size["n_latents"],
                                           "k": size["k"], "batch_size": size["batch_size"]})
                    peaks[(mode, factor)] = measure_peak(spec, timeout=3600)
                res = peaks[(mode, factor)]
                print(f"{mode:<8} {factor}x ({gib[factor]:.2f} GiB of activations): peak {res['peak_mb']:8.1f} MiB "
                      f"above the post-load baseline ({res['method']})")
        for mode in ("streamed", "memory"):
            one, four = peaks[(mode, 1)]["peak_mb"], peaks[(mode, 4)]["peak_mb"]
            ratio = four / one if one >= 1.0 else float("nan")  # quick stores are too small for a memory claim
            target = " (target ≤ 1.1)" if mode == "streamed" and not args.quick else ""
            print(f"{mode:<8} peak 4x / 1x = {ratio:.3f}{target}")
            row = {"benchmark": NAME, "case": mode, "quick": args.quick, "device": "cpu", **size,
                   "gib_1x": gib[1], "gib_4x": gib[4], "peak_mb_1x": peaks[(mode, 1)]["peak_mb"],
                   "peak_mb_4x": peaks[(mode, 4)]["peak_mb"], "ratio_4x_over_1x": ratio,
                   "method": peaks[(mode, 1)]["method"], "max_abs_weight_diff_streamed_vs_memory": max_diff}
            path = append_json_row(NAME, row, out=args.out, device="cpu")
    print(f"rows appended to {path} ({time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
