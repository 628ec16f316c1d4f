"""A custom tokenizer class for the hub-export toy (the character vocabulary of hf_ext.testing.tiny_tokenizer)."""

from transformers import PreTrainedTokenizerFast


class HubToyTokenizer(PreTrainedTokenizerFast):
    """``PreTrainedTokenizerFast`` under its own name, so that the export must ship it as remote code."""
