"""The pure SLD step: against an element-wise hand-written reference loop, closed forms and properties."""

from __future__ import annotations

import math

import pytest
import torch

from hf_ext.diffusion.sld.guidance import PRESETS, SLDConfig, SLDGuidanceRunner, sld_step


def _reference_loop(us, ps, ss, *, s_g, s_S, lam, s_m, beta, delta):
    """The paper's Eq. 3–8 element by element with Python floats (momentum charged during warm-up)."""
    outs = []
    n = us[0].numel()
    nu = [0.0] * n
    for i, (u_t, p_t, s_t) in enumerate(zip(us, ps, ss)):
        u, p, s = u_t.flatten().tolist(), p_t.flatten().tolist(), s_t.flatten().tolist()
        out = []
        for j in range(n):
            diff = p[j] - s[j]
            mu = 0.0 if diff >= lam else min(1.0, abs(diff) * s_S)
            gamma = mu * (s[j] - u[j]) + s_m * nu[j]
            nu[j] = beta * nu[j] + (1 - beta) * gamma
            g = (p[j] - u[j]) - (gamma if i >= delta else 0.0)
            out.append(u[j] + s_g * g)
        outs.append(torch.tensor(out, dtype=torch.float64).view_as(u_t))
    return outs


def _random_preds(steps, shape=(2, 3, 4), seed=0, scale=0.01):
    g = torch.Generator().manual_seed(seed)
    u = [torch.randn(shape, generator=g) for _ in range(steps)]
    # concept/prompt close to uncond so that the gate is non-trivial at s_S ~ 1000
    p = [x + scale * torch.randn(shape, generator=g) for x in u]
    s = [x + scale * torch.randn(shape, generator=g) for x in u]
    return u, p, s


@pytest.mark.parametrize("name", ["weak", "medium", "strong", "max"])
def test_runner_matches_elementwise_reference_loop(name):
    steps = 6
    cfg = PRESETS[name].replace(warmup_steps=min(PRESETS[name].warmup_steps, 2))
    u, p, s = _random_preds(steps)
    ref = _reference_loop(u, p, s, s_g=7.5, s_S=cfg.guidance_scale, lam=cfg.threshold, s_m=cfg.momentum_scale,
                          beta=cfg.mom_beta, delta=cfg.warmup_steps)
    for skip in (False, True):
        runner = SLDGuidanceRunner(cfg, guidance_scale=7.5, num_timesteps=steps, skip_warmup_concept=skip)
        for i in range(steps):
            eps_s = s[i] if runner.concept_needed(i) else None
            out = runner(i, u[i], p[i], eps_s)
            torch.testing.assert_close(out.double(), ref[i], atol=2e-5, rtol=1e-5)
    # the comparison is not vacuous: SLD changed the prediction
    cfg_only = u[-1] + 7.5 * (p[-1] - u[-1])
    assert (out - cfg_only).abs().max() > 1e-3


def test_gate_properties_and_momentum_recursion():
    u, p, s = _random_preds(1, shape=(4, 4, 8, 8), seed=1, scale=0.05)
    u, p, s = u[0], p[0], s[0]
    cfg = SLDConfig(guidance_scale=50.0, warmup_steps=0, threshold=0.01, momentum_scale=0.0, mom_beta=0.3)
    out = sld_step(u, p, s, None, step=0, guidance_scale=7.5, config=cfg, return_diagnostics=True)
    diff = p - s
    mu = torch.where(diff >= 0.01, torch.zeros_like(diff), (diff.abs() * 50).clamp(max=1))
    assert 0.0 <= float(mu.min()) and float(mu.max()) <= 1.0
    gamma = mu * (s - u)
    torch.testing.assert_close(out.noise_pred, u + 7.5 * ((p - u) - gamma))
    torch.testing.assert_close(out.momentum[0], (1 - 0.3) * gamma)  # ν_1 = β·0 + (1−β)γ_0
    assert out.diagnostics.guided_fraction == pytest.approx(float((mu > 0).float().mean()))
    assert out.diagnostics.gamma_norm == pytest.approx(float(gamma.norm()), rel=1e-5)
    # second step with momentum: γ_1 = μ(ε_S−ε_∅) + s_m ν_1 and ν_2 = β ν_1 + (1−β) γ_1
    cfg2 = cfg.replace(momentum_scale=0.5)
    out2 = sld_step(u, p, s, out.momentum, step=1, guidance_scale=7.5, config=cfg2)
    gamma1 = gamma + 0.5 * out.momentum[0]
    torch.testing.assert_close(out2.momentum[0], 0.3 * out.momentum[0] + 0.7 * gamma1)


def test_closed_forms_threshold_extremes():
    u, p, s = (x[0] for x in _random_preds(1, seed=2))
    # λ = −∞: μ ≡ 0 and ν stays 0 -> plain CFG, bit for bit
    off = SLDConfig(guidance_scale=5000.0, warmup_steps=0, threshold=-1e12, momentum_scale=0.5, mom_beta=0.7)
    out = sld_step(u, p, s, None, step=0, guidance_scale=7.5, config=off)
    assert torch.equal(out.noise_pred, u + 7.5 * (p - u))
    assert torch.count_nonzero(out.momentum[0]) == 0
    # s_S huge, λ huge, s_m = 0: μ ≡ 1 -> ε_∅ + s_g(ε_p − ε_S)
    full = SLDConfig(guidance_scale=1e12, warmup_steps=0, threshold=1e12, momentum_scale=0.0, mom_beta=0.0)
    out = sld_step(u, p, s, None, step=0, guidance_scale=7.5, config=full)
    torch.testing.assert_close(out.noise_pred, u + 7.5 * (p - s), atol=1e-5, rtol=1e-5)


def test_linearity_in_prediction_scale():
    u, p, s = (x[0] for x in _random_preds(1, seed=3))
    cfg = SLDConfig(guidance_scale=800.0, warmup_steps=0, threshold=0.002, momentum_scale=0.0, mom_beta=0.4)
    c = 4.0
    a = sld_step(u, p, s, None, step=0, guidance_scale=3.0, config=cfg).noise_pred
    scaled = cfg.replace(guidance_scale=800.0 / c, threshold=0.002 * c)
    b = sld_step(c * u, c * p, c * s, None, step=0, guidance_scale=3.0, config=scaled).noise_pred
    torch.testing.assert_close(b, c * a, atol=1e-5, rtol=1e-5)


def test_multiple_concepts_subtract_each_gamma():
    u, p, s1 = (x[0] for x in _random_preds(1, seed=4))
    s2 = s1.flip(-1)
    cfg = SLDConfig(guidance_scale=300.0, warmup_steps=0, threshold=0.01, momentum_scale=0.0, mom_beta=0.0)
    out = sld_step(u, p, [s1, s2], None, step=0, guidance_scale=5.0, config=cfg)

    def gamma(s):
        d = p - s
        return torch.where(d >= 0.01, torch.zeros_like(d), (d.abs() * 300).clamp(max=1)) * (s - u)

    torch.testing.assert_close(out.noise_pred, u + 5.0 * ((p - u) - gamma(s1) - gamma(s2)))
    assert len(out.momentum) == 2


def test_warmup_fraction_and_skip_rule():
    assert SLDConfig.MEDIUM.replace(warmup_steps=0.2).warmup_index(50) == 10
    assert SLDConfig.MEDIUM.replace(warmup_steps=0.2).warmup_index(25) == 5
    assert SLDConfig.MEDIUM.warmup_index(25) == 10  # integer mode is a loop index (diffusers parity)
    r = SLDGuidanceRunner(SLDConfig.WEAK.replace(warmup_steps=0.3), guidance_scale=7.5, num_timesteps=10)
    assert [r.concept_needed(i) for i in range(5)] == [False, False, False, True, True]
    r = SLDGuidanceRunner(SLDConfig.MEDIUM, guidance_scale=7.5, num_timesteps=20)  # s_m > 0: always needed
    assert all(r.concept_needed(i) for i in range(20))
    with pytest.raises(ValueError, match="needed"):
        sld_step(torch.zeros(1), torch.zeros(1), None, None, step=15, guidance_scale=7.5, config=SLDConfig.WEAK)


def test_presets_match_paper_and_diffusers():
    from diffusers.pipelines.deprecated.stable_diffusion_safe import SafetyConfig

    table = {  # spec §1.2: (δ, s_S, λ, s_m, β_m)
        "weak": (15, 200.0, 0.0, 0.0, 0.0), "weak_diffusers": (15, 20.0, 0.0, 0.0, 0.0),
        "medium": (10, 1000.0, 0.01, 0.3, 0.4), "strong": (7, 2000.0, 0.025, 0.5, 0.7),
        "max": (0, 5000.0, 1.0, 0.5, 0.7),
    }
    for name, (d, sS, lam, sm, b) in table.items():
        c = SLDConfig.from_preset(name)
        assert (c.warmup_steps, c.guidance_scale, c.threshold, c.momentum_scale, c.mom_beta) == (d, sS, lam, sm, b)
    # the deliberate Weak discrepancy: paper 200 vs diffusers 20
    assert SLDConfig.WEAK.guidance_scale == 200 and SafetyConfig.WEAK["sld_guidance_scale"] == 20
    for ours, theirs in [(SLDConfig.WEAK_DIFFUSERS, SafetyConfig.WEAK), (SLDConfig.MEDIUM, SafetyConfig.MEDIUM),
                         (SLDConfig.STRONG, SafetyConfig.STRONG), (SLDConfig.MAX, SafetyConfig.MAX)]:
        assert ours.to_diffusers_kwargs() == {k: float(v) if k != "sld_warmup_steps" else v for k, v in theirs.items()}
    assert SLDConfig() == SLDConfig.MEDIUM  # call defaults = Medium
    assert not SLDConfig.OFF.enabled and not SLDConfig(guidance_scale=1.0).enabled


@pytest.mark.parametrize("kwargs, err, match", [
    (dict(guidance_scale=-1.0), ValueError, "sld_guidance_scale must be >= 0"),
    (dict(momentum_scale=-0.1), ValueError, "sld_momentum_scale"),
    (dict(mom_beta=1.5), ValueError, "sld_mom_beta"),
    (dict(warmup_steps=-1), ValueError, "sld_warmup_steps"),
    (dict(warmup_steps=10.0), ValueError, "fraction"),
    (dict(warmup_steps="10"), TypeError, "sld_warmup_steps"),
    (dict(threshold="x"), TypeError, "threshold"),
])
def test_bad_config_values(kwargs, err, match):
    with pytest.raises(err, match=match):
        SLDConfig(**kwargs)


def test_unknown_preset_and_kwargs():
    with pytest.raises(ValueError, match="unknown SLD preset 'extreme'"):
        SLDConfig.from_preset("extreme")
    with pytest.raises(TypeError, match="unknown SLD keyword"):
        SLDConfig.from_diffusers_kwargs({"sld_scale": 3})
    assert SLDConfig.from_preset({"sld_guidance_scale": 20}).guidance_scale == 20.0
    assert SLDConfig.from_preset("Weak-Diffusers") is SLDConfig.WEAK_DIFFUSERS
    assert math.isinf(SLDConfig(threshold=float("inf")).threshold)
