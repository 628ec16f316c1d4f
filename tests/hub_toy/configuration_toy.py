"""Config of the hub-export toy causal LM."""

from transformers import PreTrainedConfig


class HubToyConfig(PreTrainedConfig):
    """A tiny decoder-only config (vocab of hf_ext.testing.tiny_tokenizer, 2 layers, width 32)."""

    model_type = "hf_ext_hub_toy"

    def __init__(self, vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                 max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                 tie_word_embeddings=False, **kwargs):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.max_position_embeddings = max_position_embeddings
        super().__init__(pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id,
                         tie_word_embeddings=tie_word_embeddings, **kwargs)
