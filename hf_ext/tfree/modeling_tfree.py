"""``TFreeForCausalLM``: any transformers decoder with a T-FREE sparse trigram embedding, head, loss and decoding.

* **Embedding**: ``nn.EmbeddingBag(v, h, mode="sum")`` over each word's activation ids (a word with ``T`` trigrams
  sums ``T·m`` rows; duplicates count twice, as in the reference), fed to the backbone as ``inputs_embeds``.
* **Head**: ``Linear(h, v)`` gives ``v`` multi-label logits per word position.
* **Loss**: ``loss_scale × mean_{p, j} BCEWithLogits(x_pj, y_pj; pos_weight)`` over the predicted positions and all
  ``v`` outputs, computed sparsely — ``Σ softplus(x) + Σ_pos [pos_weight·softplus(−x) − softplus(x)]`` — from the next
  word's activation ids, never building the dense ``[seq, v]`` target.
* **Decode dictionary** (:mod:`hf_ext.tfree.dictionary`): the model owns it as CSR buffers (unique activation ids per word, their multiplicities and
  the word's trigram count), saved with the weights; ``forward(input_ids=word ids)`` maps ids to patterns itself and
  returns dictionary scores (``[B, logits_to_keep, d]``), so ``generate()`` works unchanged (greedy, sampling, beam
  search, logits processors, KV cache, batch > 1).

Example:
    >>> from hf_ext.tfree import TFreeConfig, TFreeForCausalLM, TFreeTokenizer
    >>> tok = TFreeTokenizer(words=["hello", "world"], hash_vocab_size=1000, num_activations=4)
    >>> model = TFreeForCausalLM(TFreeConfig(hash_vocab_size=1000, num_activations=4))
    >>> model.set_decode_dictionary(tok)
    >>> ids = tok("hello world", return_tensors="pt").input_ids
    >>> model(ids).logits.shape  # one score per dictionary word
    torch.Size([1, 2, 18])
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from transformers import AutoModel, GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from hf_ext.utils.logging import get_logger
from hf_ext.utils.saving import AtomicSaveMixin

from ..compat import cache_argument, cache_field, generation_vocab_size, output_cache
from ..core.model_checks import padding_exact, record_padding_exact
from .cache_check import cache_exact
from .configuration_tfree import TFreeConfig
from .dictionary import DecodeDictionary, dictionary_fingerprint
from .hashing import TrigramHasher
from .loss import sparse_bce_loss
from .wordsplit import EOT, SPECIAL_WORDS

if TYPE_CHECKING:
    from transformers import Cache
    from transformers.utils import ModelOutput

    from .tokenization_tfree import TFreeTokenizer

logger = get_logger(__name__)

__all__ = ["TFreeCausalLMOutput", "TFreeForCausalLM", "TFreePreTrainedModel", "sparse_bce_loss", "dictionary_fingerprint"]


#: the output field of the KV cache in this transformers release (see :mod:`hf_ext.compat`).
_CACHE_FIELD = cache_field()


@dataclass
class TFreeCausalLMOutput(CausalLMOutputWithPast):
    """Output of :class:`TFreeForCausalLM` (``CausalLMOutputWithPast`` plus the raw activation logits).

    Attributes:
        loss: scalar sparse BCE loss (when ``labels`` are given).
        logits: dictionary scores ``[B, K, d]`` for the last ``K = logits_to_keep`` positions (``None`` in a training
            forward unless ``return_dictionary_scores=True``).
        activation_logits: raw multi-label logits ``[B, K, v]`` (when ``return_activation_logits=True``).
        cache / past_key_values, hidden_states, attentions: as the backbone returns them.
    """

    activation_logits: torch.Tensor | None = None


class TFreePreTrainedModel(AtomicSaveMixin, PreTrainedModel):
    """Base class of the T-FREE models: config class, weight init and the transformers loading hooks."""
    config_class = TFreeConfig
    base_model_prefix = "tfree"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = False
    accepts_loss_kwargs = False  # the loss is a mean over positions × v; Trainer must scale for grad accumulation

    def _init_weights(self, module: nn.Module) -> None:
        h = self.config.hidden_size
        if isinstance(module, nn.EmbeddingBag):
            nn.init.normal_(module.weight, std=(2 / (5 * h)) ** 0.5)  # "pythia" init of the release
        elif isinstance(module, nn.Linear) and module is getattr(self, "lm_head", None):
            nn.init.normal_(module.weight, std=(2 / (5 * h)) ** 0.5)


def _backbone(text_config) -> PreTrainedModel:
    """The bare decoder for ``text_config``: ``AutoModel``'s class, else the base-model class transformers lists for its
    ``model_type`` (AutoModel looks the config class up by name, and a class registered under two names, as
    Evolla's is, is missed); a type with neither raises ``AutoModel``'s ``ValueError``."""
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

    name = MODEL_MAPPING_NAMES.get(getattr(text_config, "model_type", None))
    if type(text_config) in AutoModel._model_mapping or not isinstance(name, str) or not hasattr(transformers, name):
        return AutoModel.from_config(text_config)
    return getattr(transformers, name)._from_config(text_config)


class TFreeForCausalLM(TFreePreTrainedModel, GenerationMixin):
    """T-FREE causal LM over any transformers decoder backbone (``config.text_config``).

    Inputs are either ``input_ids`` ``[B, W]`` — ids of words in the model's decode dictionary (what ``generate()``
    feeds back) — or ``activation_ids`` ``[B, W, A]`` from :meth:`TFreeTokenizer.encode_activations` (``-1`` padded;
    no dictionary needed: the training path).

    Labels: ``[B, W, A]`` activation ids (``-1`` padding; a word with none is ignored) or ``[B, W]`` dictionary word
    ids (``-100`` ignored). Like transformers' causal LMs, position ``p`` is trained to predict word ``p + 1``.

    Example:
        >>> from transformers import Qwen2Config
        >>> cfg = TFreeConfig(text_config=Qwen2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        ...                   num_attention_heads=4, num_key_value_heads=2), hash_vocab_size=512, num_activations=4)
        >>> model = TFreeForCausalLM(cfg)
        >>> acts = torch.randint(0, 512, (2, 5, 12))
        >>> out = model(activation_ids=acts, labels=acts)
        >>> out.loss.shape, out.logits
        (torch.Size([]), None)
    """

    def __init__(self, config: TFreeConfig):
        super().__init__(config)
        h, v = config.hidden_size, config.hash_vocab_size
        self.model = _backbone(config.text_config)
        # the backbone's own token embedding is never used (inputs_embeds): shrink it to one row and freeze it, so
        # DDP does not wait for a gradient it never gets
        self.model.set_input_embeddings(nn.Embedding(1, h))
        self.model.get_input_embeddings().weight.requires_grad_(False)
        self.embed = nn.EmbeddingBag(v, h, mode="sum")
        self.lm_head = nn.Linear(h, v, bias=False)
        d, nnz = config.dictionary_size, config.dictionary_nnz
        self.register_buffer("dict_indptr", torch.zeros(d + 1, dtype=torch.long))
        self.register_buffer("dict_indices", torch.zeros(nnz, dtype=torch.long))
        self.register_buffer("dict_counts", torch.zeros(nnz, dtype=torch.long))
        self.register_buffer("dict_trigrams", torch.zeros(d, dtype=torch.long))
        self._hasher: TrigramHasher | None = None
        self.post_init()

    # ------------------------------------------------------------------ HF plumbing
    # input/output embedding accessors: transformers' defaults over ``embed`` and ``lm_head``
    _input_embed_layer = "embed"

    def get_decoder(self) -> nn.Module:
        return self.model

    @property
    def hasher(self) -> TrigramHasher:
        """The :class:`TrigramHasher` of this config (hash vocabulary, activations), built on first use."""
        if self._hasher is None:
            c = self.config
            self._hasher = TrigramHasher(c.hash_vocab_size, c.num_activations, c.num_lowercase_activations,
                                         c.hash_scheme, c.trigram_unit, c.entire_words)
        return self._hasher

    # ------------------------------------------------------------------ decode dictionary
    @property
    def decode_dictionary(self) -> DecodeDictionary:
        """The decode dictionary (:class:`~hf_ext.tfree.dictionary.DecodeDictionary`) over this model's buffers."""
        return DecodeDictionary(self)

    @property
    def dictionary_size(self) -> int:
        """Number of words in the decode dictionary (``d``)."""
        return int(self.dict_trigrams.numel())

    def set_decode_dictionary(self, words_or_tokenizer: TFreeTokenizer | Sequence[str], *,
                              tokenizer: TFreeTokenizer | None = None) -> None:
        """Replace the decode dictionary with a :class:`TFreeTokenizer`'s word list or a list of words (e.g. a
        ``wordfreq`` list); see :meth:`~hf_ext.tfree.dictionary.DecodeDictionary.set`."""
        self.decode_dictionary.set(words_or_tokenizer, tokenizer=tokenizer)

    def add_decode_words(self, words: Sequence[str], *, tokenizer: TFreeTokenizer | None = None) -> list[int]:
        """Append ``words`` to the decode dictionary (no de-duplication); returns their new ids."""
        return self.decode_dictionary.add(words, tokenizer=tokenizer)

    def truncate_decode_dictionary(self, size: int) -> None:
        """Keep only the first ``size`` dictionary words (undo :meth:`add_decode_words`)."""
        self.decode_dictionary.truncate(size)

    def dictionary_scores(self, activation_logits: torch.Tensor) -> torch.Tensor:
        """Scores ``[..., d]`` of every dictionary word from multi-label logits ``[..., v]`` (see
        :meth:`~hf_ext.tfree.dictionary.DecodeDictionary.scores`)."""
        return self.decode_dictionary.scores(activation_logits)

    # ------------------------------------------------------------------ embedding
    def embed_words(self, input_ids: torch.Tensor | None = None, activation_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Word embeddings ``[B, W, h]`` from dictionary ``input_ids`` ``[B, W]`` or ``activation_ids`` ``[B, W, A]``."""
        c = self.config
        m = c.num_activations
        w_dtype = self.embed.weight.dtype
        if activation_ids is not None:
            if not torch.is_tensor(activation_ids) or activation_ids.dim() != 3:
                raise ValueError("activation_ids must be a [batch, words, activations] LongTensor padded with -1, got "
                                 f"{type(activation_ids).__name__} {tuple(getattr(activation_ids, 'shape', ()))}")
            if activation_ids.dtype not in (torch.int64, torch.int32):
                raise TypeError(f"activation_ids must be an integer tensor, got {activation_ids.dtype}")
            B, W, _ = activation_ids.shape
            if activation_ids.numel() and int(activation_ids.max()) >= c.hash_vocab_size:
                raise ValueError(f"activation ids must be < hash_vocab_size={c.hash_vocab_size}; got "
                                 f"{int(activation_ids.max())} (a tokenizer with another v?)")
            valid = activation_ids >= 0
            lens = valid.sum(-1).reshape(-1)
            flat = activation_ids[valid].long()
            offsets = torch.cumsum(lens, 0) - lens
            weights = None
            factor = torch.ones_like(lens, dtype=w_dtype)
            if c.embedding_aggregation == "mean":
                factor = factor / m
            if c.normalize_by_trigrams:
                factor = factor / (lens.to(w_dtype) / m).clamp(min=1)
            if c.embedding_aggregation == "mean" or c.normalize_by_trigrams:
                weights = torch.repeat_interleave(factor, lens, output_size=flat.numel())
            return self.embed(flat, offsets, per_sample_weights=weights).view(B, W, -1)
        if input_ids is None:
            raise ValueError("pass input_ids (dictionary word ids), activation_ids or inputs_embeds")
        if not torch.is_tensor(input_ids) or input_ids.dim() != 2:
            raise ValueError(f"input_ids must be a [batch, words] LongTensor, got {tuple(getattr(input_ids, 'shape', ()))}")
        B, W = input_ids.shape
        ids = input_ids.reshape(-1).long()
        self.decode_dictionary.check_ids(ids)
        flat, counts, row, lens = self.decode_dictionary.rows(ids)
        factor = torch.ones(len(ids), dtype=w_dtype, device=ids.device)
        if c.embedding_aggregation == "mean":
            factor = factor / m
        if c.normalize_by_trigrams:
            factor = factor / self.dict_trigrams[ids].to(w_dtype).clamp(min=1)
        weights = counts.to(w_dtype) * factor[row]
        offsets = torch.cumsum(lens, 0) - lens
        return self.embed(flat, offsets, per_sample_weights=weights).view(B, W, -1)

    # ------------------------------------------------------------------ forward
    def _targets(self, labels: torch.Tensor, attention_mask: torch.Tensor | None):
        """Positives (rows, cols) and weights of the shifted targets: position p predicts word p + 1."""
        B, W = labels.shape[:2]
        n = B * (W - 1)
        if labels.dim() == 3:
            tgt = labels[:, 1:].reshape(n, -1)
            valid = tgt >= 0
            first = valid.clone()
            first[:, 1:] &= tgt[:, 1:] != tgt[:, :-1]  # ids are sorted per word: keep each once
            rows, cols = first.nonzero(as_tuple=True)
            cols = tgt[rows, cols]
            weights = valid.any(-1)
        elif labels.dim() == 2:
            tgt = labels[:, 1:].reshape(-1)
            weights = tgt != -100
            if weights.any():
                self.decode_dictionary.check_ids(tgt[weights])
            safe = torch.where(weights, tgt, torch.zeros_like(tgt))
            cols, _, rows, _ = self.decode_dictionary.rows(safe)
            keep = weights[rows]
            rows, cols = rows[keep], cols[keep]
        else:
            raise ValueError(f"labels must be [batch, words, activations] activation ids or [batch, words] word ids, "
                             f"got shape {tuple(labels.shape)}")
        if attention_mask is not None and attention_mask.dim() == 2:
            weights = weights & attention_mask[:, 1:].reshape(-1).bool()
        return rows, cols, weights.float()

    def forward(self, input_ids: torch.Tensor | None = None, activation_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                past_key_values: Cache | None = None, cache: Cache | None = None,
                inputs_embeds: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                use_cache: bool | None = None, logits_to_keep: int | torch.Tensor = 0,
                return_activation_logits: bool = False, return_dictionary_scores: bool | None = None,
                **kwargs: Any) -> TFreeCausalLMOutput:
        """Run the backbone on word embeddings; loss from sparse targets, dictionary scores for kept positions.

        Args:
            input_ids: ``[B, W]`` dictionary word ids; or activation_ids ``[B, W, A]``; or inputs_embeds ``[B, W, h]``.
            attention_mask: ``[B, W]`` word mask (1 = real word).
            labels: see the class docstring. With labels the output has the loss and no dictionary scores unless
                ``return_dictionary_scores=True``.
            logits_to_keep: score only the last ``k`` positions (``0`` = all; ``generate()`` passes 1), or a 1-D
                tensor of positions.
            return_activation_logits: also return the raw ``[B, K, v]`` multi-label logits.
            past_key_values, cache: the backbone's KV cache (either name; ``cache`` wins), as ``generate()`` passes it.
        """
        kwargs.pop("num_items_in_batch", None)
        if inputs_embeds is None:
            inputs_embeds = self.embed_words(input_ids=input_ids if activation_ids is None else None,
                                             activation_ids=activation_ids)
        backbone_kwargs = {k: v for k, v in kwargs.items() if v is not None and k != "return_dict"}
        cache = cache if cache is not None else past_key_values
        if cache is not None:
            backbone_kwargs[self._backbone_cache_arg()] = cache
        if position_ids is None and attention_mask is not None and attention_mask.dim() == 2:
            # left padding: count only real words (every backbone family, every transformers version)
            width = inputs_embeds.shape[1]
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -width:]
        try:
            out = self.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids,
                             use_cache=use_cache, return_dict=True, **backbone_kwargs)
        except (RuntimeError, AttributeError, TypeError, KeyError, IndexError) as err:
            backbone = self.config.text_config.model_type
            raise NotImplementedError(
                f"T-FREE cannot run the {backbone!r} backbone ({type(self.model).__name__}): it feeds the backbone "
                f"word embeddings as inputs_embeds (with attention_mask/position_ids and a KV cache), and this backbone "
                f"failed on that: {type(err).__name__}: {err}") from err
        hidden = out.last_hidden_state
        loss = None
        if labels is not None:
            if labels.shape[:2] != hidden.shape[:2]:
                raise ValueError(f"labels {tuple(labels.shape)} must match the input's [batch, words] "
                                 f"{tuple(hidden.shape[:2])}")
            rows, cols, weights = self._targets(labels.to(hidden.device), attention_mask)
            act = self.lm_head(hidden[:, :-1]).reshape(-1, self.config.hash_vocab_size)
            loss = sparse_bce_loss(act, rows, cols, weights, self.config.pos_weight, self.config.loss_scale)
        want_scores = return_dictionary_scores if return_dictionary_scores is not None else labels is None
        logits = act_logits = None
        if want_scores or return_activation_logits:
            if isinstance(logits_to_keep, int):
                kept = hidden[:, -logits_to_keep:] if logits_to_keep > 0 else hidden
            else:
                kept = hidden[:, logits_to_keep]
            act_logits = self.lm_head(kept)
            if want_scores:
                logits = self.dictionary_scores(act_logits)
        new_cache = output_cache(out)
        return TFreeCausalLMOutput(loss=loss, logits=logits,
                                   activation_logits=act_logits if return_activation_logits else None,
                                   hidden_states=getattr(out, "hidden_states", None),
                                   attentions=getattr(out, "attentions", None), **{_CACHE_FIELD: new_cache})

    def _backbone_cache_arg(self) -> str:
        return cache_argument(self.model)
    def _supports_default_dynamic_cache(self) -> bool:  # generate() asks by class name: the backbone's (MiniMax)
        return super()._supports_default_dynamic_cache.__func__(type(self.model))

    # ------------------------------------------------------------------ text in, text out
    @contextlib.contextmanager
    def prompt_words(self, tokenizer: TFreeTokenizer, texts: Sequence[str]
                     ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Temporarily add the prompts' out-of-dictionary words to the tokenizer and the decode dictionary.

        Yields the padded ``input_ids`` and ``attention_mask`` of ``texts``. Both dictionaries are restored on exit.
        """
        d0, t0 = self.dictionary_size, len(tokenizer)
        if tokenizer.hash_config() != self.config.hash_config():
            raise ValueError(f"the tokenizer hashes with {tokenizer.hash_config()} but the model with "
                             f"{self.config.hash_config()}")
        fp = getattr(self.config, "dictionary_fingerprint", None)
        if d0 == 0:
            raise ValueError("the model's decode dictionary is empty: call model.set_decode_dictionary(tokenizer)")
        if d0 > t0 or (fp is not None and dictionary_fingerprint(tokenizer.words[:d0]) != fp):
            raise ValueError("the tokenizer's word list does not start with the model's decode dictionary; call "
                             "model.set_decode_dictionary(tokenizer) first")
        try:
            # the prompts' new words are added here, on purpose and undone below: the tokenizer itself grows its
            # dictionary only when asked (``grow_dictionary=True``)
            tokenizer.add_words(w for t in texts for w in tokenizer.tokenize(t))
            enc = tokenizer(list(texts), return_tensors="pt", padding=True, padding_side="left")
            if len(tokenizer) > d0:
                self.add_decode_words(tokenizer.words[d0:], tokenizer=tokenizer)
            yield enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)
        finally:
            if self.dictionary_size > d0:
                self.truncate_decode_dictionary(d0)
            if len(tokenizer) > t0:
                tokenizer.truncate_dictionary(t0)

    @torch.no_grad()
    def generate(self, *args: Any, **kwargs: Any) -> torch.LongTensor | ModelOutput:
        """``GenerationMixin.generate`` over the decode dictionary (the logits' width; see
        :func:`hf_ext.compat.generation_vocab_size`).

        A left-padded batch on a backbone that does not score a padded row like the same row unpadded (a
        state-space or recurrent backbone ignores the attention mask; checked once per model on the first padded
        batch) is generated one unpadded row at a time, and the rows are put back in the batch's layout.
        """
        ids = kwargs.get("input_ids", args[0] if args else None)
        mask = kwargs.get("attention_mask")
        if isinstance(ids, torch.Tensor) and kwargs.get("use_cache") is not False and not cache_exact(self, ids, mask):
            kwargs["use_cache"] = False
        with generation_vocab_size(self.config, self.dictionary_size):
            if (isinstance(ids, torch.Tensor) and isinstance(mask, torch.Tensor) and ids.shape[0] > 1
                    and bool((mask == 0).any()) and not self._padding_exact(ids, mask)):
                return self._generate_rows(ids, mask, {k: v for k, v in kwargs.items() if k != "input_ids"}, args[1:])
            return super().generate(*args, **kwargs)

    def _padding_exact(self, ids: torch.Tensor, mask: torch.Tensor) -> bool:
        """Whether the most-padded row's next-word scores equal those of the same row unpadded (once per model)."""
        known = padding_exact(self)
        if known is not None:
            return known
        b = int((mask == 0).sum(-1).argmax())
        pad = int((mask[b] == 0).sum())
        padded = self(input_ids=ids[b:b + 1], attention_mask=mask[b:b + 1], use_cache=False).logits[0, -1]
        alone = self(input_ids=ids[b:b + 1, pad:], use_cache=False).logits[0, -1]
        exact = bool(torch.allclose(padded.float(), alone.float(), atol=1e-4, rtol=1e-4))
        if not exact:
            logger.info("T-FREE backbone %r scores left-padded rows differently from unpadded ones: generating one "
                        "row at a time", self.config.text_config.model_type)
        record_padding_exact(self, exact)
        return exact

    def _generate_rows(self, ids: torch.Tensor, mask: torch.Tensor, kwargs: dict, args: tuple) -> torch.Tensor:
        if args or kwargs.get("return_dict_in_generate") or kwargs.get("num_return_sequences", 1) != 1 \
                or kwargs.get("num_beams", 1) != 1:
            raise NotImplementedError(
                f"T-FREE's {self.config.text_config.model_type!r} backbone does not score left-padded rows like "
                "unpadded ones, so a padded batch is generated one row at a time, which supports a tensor result "
                "with one sequence per row only (no return_dict_in_generate, num_beams or num_return_sequences); "
                "pass one prompt at a time")
        pad_id = kwargs.get("pad_token_id")
        pad_id = pad_id if pad_id is not None else (self.generation_config.pad_token_id or 0)
        rows = []
        for b in range(ids.shape[0]):
            keep = mask[b].bool()
            one = {**kwargs, "attention_mask": torch.ones(1, int(keep.sum()), dtype=mask.dtype, device=mask.device)}
            rows.append(super().generate(input_ids=ids[b][keep][None], **one)[0, int(keep.sum()):])
        new = max(r.numel() for r in rows)
        tail = torch.full((ids.shape[0], new), int(pad_id), dtype=ids.dtype, device=ids.device)
        for b, r in enumerate(rows):  # a row that stopped early is padded on the right, as batched generate does
            tail[b, :r.numel()] = r
        return torch.cat([ids, tail], dim=1)

    def generate_text(self, tokenizer: TFreeTokenizer, prompts: str | Sequence[str], *, max_new_words: int = 20,
                      skip_special_tokens: bool = True, **generate_kwargs: Any) -> list[str]:
        """Generate continuations of ``prompts`` (strings) with ``generate()``; prompt OOV words become decodable.

        Example:
            >>> from hf_ext.tfree import TFreeConfig, TFreeForCausalLM, TFreeTokenizer
            >>> tok = TFreeTokenizer(words=["hello", "world"], hash_vocab_size=1000, num_activations=4)
            >>> model = TFreeForCausalLM(TFreeConfig(hash_vocab_size=1000, num_activations=4))
            >>> model.set_decode_dictionary(tok)
            >>> texts = model.generate_text(tok, ["hello"], max_new_words=3, do_sample=False)
            >>> len(texts), isinstance(texts[0], str)  # a trained model continues "hello" with " world …"
            (1, True)
        """
        if isinstance(prompts, str):
            prompts = [prompts]
        eos = tokenizer.convert_tokens_to_ids(EOT) if EOT in tokenizer.get_vocab() else None
        generate_kwargs.setdefault("eos_token_id", eos)
        generate_kwargs.setdefault("pad_token_id", eos if eos is not None else 0)
        with self.prompt_words(tokenizer, prompts) as (ids, mask):
            out = self.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_words, **generate_kwargs)
            texts = []
            for row, prompt in zip(out[:, ids.shape[1]:].tolist(), prompts):
                new = [i for i in row if not (skip_special_tokens and i == eos)]
                full = tokenizer.decode(tokenizer.encode(prompt, add_special_tokens=False) + new)
                texts.append(full[len(prompt):] if full.startswith(prompt) else tokenizer.decode(new))
        return texts


#: Index of ``<|endoftext|>`` in the default dictionary order (special words first).
EOT_ID = SPECIAL_WORDS.index(EOT)
