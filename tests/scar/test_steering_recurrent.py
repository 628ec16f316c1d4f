"""SCAR steering on xLSTM (issue 17): the conformance run found steering "changed nothing" there. The cause is the
family's init, not SCAR: xLSTM zero-initialises its gate projections, so its MLP output is identically 0 and a
normalised SAE (``x`` with zero spread) can only reconstruct 0. With weights a checkpoint could have (no all-zero
projection), steering equals the model's own forward with the MLP output replaced by SCAR's formula written out."""

from __future__ import annotations

import torch
import transformers

from hf_ext.scar import ScarAdapter
from tests.conformance.catalog import _unzero
from tests.conformance.cells import _naive_sae
from tests.conformance.shrink import shrink_config

IDS = torch.tensor([[1, 10, 11, 12, 13, 14], [1, 20, 21, 22, 23, 24]])


def _xlstm(unzero: bool):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = transformers.xLSTMForCausalLM(shrink_config(transformers.xLSTMConfig)).eval()
        if unzero:
            _unzero(model)
    return model


@torch.no_grad()
def test_the_families_init_gives_an_identically_zero_mlp_output():
    model = _xlstm(unzero=False)
    seen = []
    handle = model.backbone.blocks[-1].ffn.register_forward_hook(lambda m, a, o: seen.append(o))
    model(input_ids=IDS, use_cache=False)
    handle.remove()
    assert not bool(seen[0].any())


@torch.no_grad()
def test_steering_equals_the_models_own_forward_with_the_naive_sae_at_the_site():
    model = _xlstm(unzero=True)
    plain = model(input_ids=IDS, use_cache=False).logits
    scar = ScarAdapter.for_model(model, layer=-1, site="mlp", concepts=["c"], seed=1)
    scar.latent_bias[0] = 2.0
    scar.attach(model)
    with scar.steer({"c": -4.0}, output="replace"):
        steered = model(input_ids=IDS, use_cache=False).logits
    scar.detach()
    site = model.backbone.blocks[-1].ffn

    def naive(module, args, out):
        flat = out.reshape(-1, out.shape[-1])
        return _naive_sae(scar, flat, alpha=-4.0).to(out.dtype).view_as(out)

    handle = site.register_forward_hook(naive)
    reference = model(input_ids=IDS, use_cache=False).logits
    handle.remove()
    torch.testing.assert_close(steered, reference, atol=1e-4, rtol=1e-4)
    assert (steered - plain).abs().max() > 1e-3
