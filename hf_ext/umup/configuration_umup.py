"""Configuration of a u-μP Llama (unit-scaled maximal update parametrization, Blake et al., arXiv 2407.17465).

:class:`UMupConfig` holds Llama-style architecture fields plus the five u-μP hyper-parameters (all default 1) and the
residual depth convention. There is no base width and no init std: weights are unit-initialised and the scale lives
in the ops.

Example:
    >>> cfg = UMupConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
    ...                  num_attention_heads=4, num_key_value_heads=2)
    >>> cfg.head_dim, cfg.umup_depth_convention, cfg.tie_word_embeddings
    (16, 'blocks', False)
"""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

from hf_ext.utils.validation import check_elements, check_float, check_size

#: Residual depth conventions: ``"blocks"`` (unit_scaling: depth = number of decoder layers L) or ``"branches"``
#: (Aleph-Alpha/scaling's default: depth = 2L, every attention and MLP branch counts).
DEPTH_CONVENTIONS: tuple[str, ...] = ("blocks", "branches")
#: FP8 modes of the non-critical linears (q, k, v, gate, up): off, CPU simulation, ``torch._scaled_mm`` (CUDA sm89+).
FP8_MODES: tuple[str | None, ...] = (None, "simulate", "scaled_mm")
ALPHA_FIELDS: tuple[str, ...] = ("umup_alpha_ffn_act", "umup_alpha_attn_softmax", "umup_alpha_res",
                                 "umup_alpha_res_attn_ratio", "umup_alpha_loss_softmax")


class UMupConfig(PretrainedConfig):
    """Llama-style decoder with u-μP.

    Args:
        vocab_size, hidden_size, intermediate_size, num_hidden_layers, num_attention_heads, num_key_value_heads,
        head_dim, max_position_embeddings, rms_norm_eps, attention_bias, mlp_bias: as ``LlamaConfig``
            (``num_key_value_heads`` defaults to ``num_attention_heads``, ``head_dim`` to
            ``hidden_size // num_attention_heads``). ``hidden_act`` must be ``"silu"`` (gated SiLU MLP).
        rope_theta: RoPE base (default rotary embedding only).
        umup_alpha_ffn_act: α_ffn-act, the SiLU gate's ``mult`` (``x·σ(α·g)``).
        umup_alpha_attn_softmax: α_attn-softmax, attention logits are ``α·q·k/d_head``.
        umup_alpha_res: α_res, the RMS of the residual branches relative to the embedding.
        umup_alpha_res_attn_ratio: α_res-attn-ratio ρ, attention-branch / MLP-branch contribution.
        umup_alpha_loss_softmax: α_loss-softmax, a temperature multiplying the logits. It is folded into the returned
            ``logits`` so that ``generate()`` samples what training optimised.
        umup_depth_convention: ``"blocks"`` (default, unit_scaling: τ and the LR depth factor use L) or
            ``"branches"`` (Aleph-Alpha/scaling: 2L).
        umup_attn_seq_len: the sequence length ``S`` in the attention scaling rule (default:
            ``max_position_embeddings``). unit_scaling uses each call's key length; a fixed value keeps a
            position's output independent of how many tokens follow it, so KV-cache generation equals the full
            forward. Set it to the training sequence length for unit-scaled attention outputs.
        umup_fp8: ``None`` (default), ``"simulate"`` (E4M3 forward / E5M2 gradients, saturating casts, any device)
            or ``"scaled_mm"`` (real FP8 GEMMs on Hopper/Ada) for the non-critical linears q, k, v, gate and up;
            the attention output and FFN down projections and the readout stay in the model dtype.

    Raises:
        ValueError: an unknown depth convention or FP8 mode, a non-positive or non-finite α, a hidden size not
            divisible by the number of heads, heads not divisible by KV heads, tied word embeddings, an activation
            other than SiLU, non-positive sizes.
    """

    model_type = "umup_llama"
    keys_to_ignore_at_inference = ["cache", "past_key_values"]

    def __init__(
        self,
        vocab_size: int = 32000,
        hidden_size: int = 512,
        intermediate_size: int = 1408,
        num_hidden_layers: int = 4,
        num_attention_heads: int = 8,
        num_key_value_heads: int | None = None,
        head_dim: int | None = None,
        hidden_act: str = "silu",
        max_position_embeddings: int = 2048,
        rms_norm_eps: float = 1e-6,
        rope_theta: float = 10000.0,
        attention_bias: bool = False,
        mlp_bias: bool = False,
        use_cache: bool = True,
        umup_alpha_ffn_act: float = 1.0,
        umup_alpha_attn_softmax: float = 1.0,
        umup_alpha_res: float = 1.0,
        umup_alpha_res_attn_ratio: float = 1.0,
        umup_alpha_loss_softmax: float = 1.0,
        umup_depth_convention: str = "blocks",
        umup_attn_seq_len: int | None = None,
        umup_fp8: str | None = None,
        pad_token_id: int | None = None,
        bos_token_id: int | None = 1,
        eos_token_id: int | list[int] | None = 2,
        tie_word_embeddings: bool = False,
        **kwargs: Any,
    ) -> None:
        # sizes first: the defaults below (head_dim) and transformers' own validators compute with them
        for name, value in (("vocab_size", vocab_size), ("hidden_size", hidden_size),
                            ("intermediate_size", intermediate_size), ("num_hidden_layers", num_hidden_layers),
                            ("num_attention_heads", num_attention_heads),
                            ("max_position_embeddings", max_position_embeddings)):
            check_size(f"UMupConfig.{name}", value)
        check_float("UMupConfig.rope_theta", rope_theta, min=0, min_open=True)
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_attention_heads if num_key_value_heads is None else num_key_value_heads
        if head_dim is None and isinstance(num_attention_heads, int) and num_attention_heads > 0:
            head_dim = hidden_size // num_attention_heads
        self.head_dim = head_dim
        self.hidden_act = hidden_act
        self.max_position_embeddings = max_position_embeddings
        self.rms_norm_eps = rms_norm_eps
        self.rope_theta = float(rope_theta)
        self.attention_bias = attention_bias
        self.mlp_bias = mlp_bias
        self.use_cache = use_cache
        self.umup_alpha_ffn_act = umup_alpha_ffn_act
        self.umup_alpha_attn_softmax = umup_alpha_attn_softmax
        self.umup_alpha_res = umup_alpha_res
        self.umup_alpha_res_attn_ratio = umup_alpha_res_attn_ratio
        self.umup_alpha_loss_softmax = umup_alpha_loss_softmax
        self.umup_depth_convention = umup_depth_convention
        self.umup_attn_seq_len = umup_attn_seq_len
        self.umup_fp8 = umup_fp8
        if tie_word_embeddings:
            raise ValueError("u-μP needs an untied readout (its LR and forward scale differ from the embedding's); "
                             "pass tie_word_embeddings=False")
        kwargs.pop("rope_parameters", None)
        super().__init__(pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id,
                         tie_word_embeddings=False, **kwargs)
        self.validate_umup()

    @property
    def attn_seq_len(self) -> int:
        """The ``S`` used by the attention scaling rule (:attr:`umup_attn_seq_len` or ``max_position_embeddings``)."""
        return int(self.umup_attn_seq_len or self.max_position_embeddings)

    def validate_umup(self) -> None:
        """Check the fields (called by ``__init__``; call again after editing fields by hand)."""
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                     "num_key_value_heads", "head_dim", "max_position_embeddings"):
            check_size(f"UMupConfig.{name}", getattr(self, name))
        check_elements("the embedding [vocab_size, hidden_size]", (self.vocab_size, self.hidden_size))
        check_elements("an MLP weight [intermediate_size, hidden_size]", (self.intermediate_size, self.hidden_size))
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(f"hidden_size={self.hidden_size} is not divisible by num_attention_heads="
                             f"{self.num_attention_heads}; choose a head count that divides the hidden size")
        if self.num_attention_heads % self.num_key_value_heads != 0:
            raise ValueError(f"num_attention_heads={self.num_attention_heads} is not a multiple of num_key_value_heads="
                             f"{self.num_key_value_heads} (grouped-query attention shares each KV head by a whole group)")
        if self.vocab_size < 2:
            raise ValueError(f"vocab_size must be >= 2 (the loss gradient scale is V/sqrt(V-1)), got {self.vocab_size}")
        for name in ALPHA_FIELDS:
            check_float(f"UMupConfig.{name}", getattr(self, name), min=0, min_open=True)  # α's multiply scales
        if self.umup_depth_convention not in DEPTH_CONVENTIONS:
            raise ValueError(f"unknown umup_depth_convention {self.umup_depth_convention!r}; choose one of "
                             f"{DEPTH_CONVENTIONS} ('blocks' = unit_scaling, 'branches' = Aleph-Alpha/scaling)")
        if self.umup_fp8 not in FP8_MODES:
            raise ValueError(f"unknown umup_fp8 {self.umup_fp8!r}; choose one of {FP8_MODES}")
        check_size("UMupConfig.umup_attn_seq_len", self.umup_attn_seq_len, allow_none=True)
        if self.hidden_act != "silu":
            raise ValueError(f"hidden_act={self.hidden_act!r} is not supported; the u-μP MLP is a gated SiLU ('silu')")
        check_float("UMupConfig.rms_norm_eps", self.rms_norm_eps, min=0)
        check_float("UMupConfig.rope_theta", self.rope_theta, min=0, min_open=True)
