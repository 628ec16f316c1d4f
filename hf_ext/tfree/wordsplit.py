"""T-FREE pre-tokenization: text ⇄ "words" with whitespace compression (pure Python, no torch).

The rules follow the T-FREE reference pre-tokenizer (spec ``tfree.md`` §2), re-implemented here:

1. ``<|…|>`` substrings are special words (only when ``parse_special=True``; :class:`TFreeTokenizer` escapes
   user text by default, so text that merely *looks* like a special token round-trips as plain characters).
2. Every digit, every non-word character (punctuation, a single space, ``\\n``, ``_``) is its own word; runs of
   Unicode letters stay one word ("Straße").
3. A single space between two words where one is *expected* is dropped; a space where none is expected becomes
   ``<|ws|>``; two adjacent words where a space would be expected get ``<|no_ws|>`` between them.
4. ``"\\n"`` becomes ``<|\\n|>`` (the token contains a real newline character).
5. Runs of ``<|ws|>`` / ``<|\\n|>`` are merged into "factorial" tokens ``<|4<-ws->|>``, ``<|2<-ws->|>`` (cap 4).

:func:`words_to_text` inverts this exactly: ``words_to_text(text_to_words(s, parse_special=False)) == s`` for
every string ``s``.

Example:
    >>> text_to_words("numbers 1234.")
    ['numbers', '<|ws|>', '1', '2', '3', '4', '.']
    >>> words_to_text(['numbers', '<|ws|>', '1', '2', '3', '4', '.'])
    'numbers 1234.'
"""

from __future__ import annotations

import re
import string

__all__ = [
    "NL", "NO_WS", "NO_WS_AFTER", "NO_WS_BEFORE", "SPECIAL_WORDS", "WS", "expects_space", "is_special_word",
    "text_to_words", "words_to_text",
]

WS = "<|ws|>"
NO_WS = "<|no_ws|>"
NL = "<|\n|>"
EOT = "<|endoftext|>"
#: Characters after which no space is expected / before which no space is expected.
NO_WS_AFTER = frozenset("#$=-+*/'\"\\(<[]~^&@%_\n ")
NO_WS_BEFORE = frozenset(".,:;?!=-+*/'\"\\)>]~^&@%_\n " + string.digits)
#: Factorial whitespace tokens: run length -> token (the encoder caps at 4; 6 and 8 exist in the release list).
WS_RUN_TOKENS = {1: WS, 2: "<|2<-ws->|>", 4: "<|4<-ws->|>", 6: "<|6<-ws->|>", 8: "<|8<-ws->|>"}
NL_RUN_TOKENS = {1: NL, 2: "<|2<-\n->|>", 4: "<|4<-\n->|>", 6: "<|6<-\n->|>", 8: "<|8<-\n->|>"}
_WS_COUNT = {tok: n for n, tok in WS_RUN_TOKENS.items()}
_NL_COUNT = {tok: n for n, tok in NL_RUN_TOKENS.items()}
#: The special words of the released checkpoints' dictionary (forced first into every decode dictionary).
SPECIAL_WORDS: tuple[str, ...] = (
    NL, EOT, NO_WS, WS, *(WS_RUN_TOKENS[n] for n in (2, 4, 6, 8)), *(NL_RUN_TOKENS[n] for n in (2, 4, 6, 8)),
    "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
)

#: One regex for steps 1-2: a special word, a run of letters, or any other single character.
#: (``(?s:.)`` = any other character, newline included: the letter run is tried first, so it only sees non-letters.)
SPLIT_PATTERN = re.compile(r"<\|.*?\|>|[^\W\d_]+|(?s:.)")
SPLIT_PATTERN_ESCAPED = re.compile(r"[^\W\d_]+|(?s:.)")


def is_special_word(word: str) -> bool:
    """Whether ``word`` is a special / whitespace word (``<|…|>``): hashed whole, never split into trigrams."""
    return len(word) >= 4 and word.startswith("<|") and word.endswith("|>")


def expects_space(left: str, right: str) -> bool:
    """Whether a single space is the expected default between the adjacent words ``left`` and ``right``.

    Example:
        >>> expects_space("Hello", "World"), expects_space("Hello", "!"), expects_space("(", "a")
        (True, False, False)
    """
    return (left != " " and right != " " and left[-1] not in NO_WS_AFTER and right[0] not in NO_WS_BEFORE
            and not is_special_word(left) and not is_special_word(right))


def _merge_runs(words: list[str]) -> list[str]:
    out: list[str] = []
    i, n = 0, len(words)
    while i < n:
        w = words[i]
        if w == WS or w == NL:
            j = i
            while j < n and words[j] == w:
                j += 1
            run = j - i
            table = WS_RUN_TOKENS if w == WS else NL_RUN_TOKENS
            out.extend([table[4]] * (run // 4))
            if run % 4 >= 2:
                out.append(table[2])
            if run % 2:
                out.append(table[1])
            i = j
        else:
            out.append(w)
            i += 1
    return out


def text_to_words(text: str, *, parse_special: bool = True) -> list[str]:
    """Split ``text`` into T-FREE words (the reference algorithm, spec §2; readable pure-Python version).

    Args:
        text: any string.
        parse_special: treat ``<|…|>`` substrings as special words (the reference behaviour). ``False`` escapes
            them: such text is split into its characters like any other text, so it round-trips exactly.

    Returns:
        The word list (special words such as ``<|ws|>`` included).

    Example:
        >>> text_to_words("Hello\\nWorld!")
        ['Hello', '<|\\n|>', 'World', '!']
        >>> text_to_words("  two  spaces")
        ['<|2<-ws->|>', 'two', '<|2<-ws->|>', 'spaces']
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    pieces = (SPLIT_PATTERN if parse_special else SPLIT_PATTERN_ESCAPED).findall(text)
    out: list[str] = []
    n = len(pieces)
    for i, piece in enumerate(pieces):
        if piece == " ":
            if 0 < i < n - 1 and expects_space(pieces[i - 1], pieces[i + 1]):
                continue  # the expected default: dropped, re-inserted by words_to_text
            out.append(WS)
            continue
        if i > 0 and expects_space(pieces[i - 1], piece):
            out.append(NO_WS)  # a space was expected here but there is none
        out.append(NL if piece == "\n" else piece)
    return _merge_runs(out)


def words_to_text(words: list[str]) -> str:
    """Invert :func:`text_to_words`: rebuild the text, re-inserting every expected space.

    Args:
        words: T-FREE words (e.g. decoded dictionary entries).

    Example:
        >>> words_to_text(['This', 'is', 'a', '<', '|', '<|no_ws|>', 'test'])
        'This is a <|test'
    """
    parts: list[str] = []
    prev: str | None = None  # the previous *real* word when nothing separates it from the current one
    suppress = False
    for w in words:
        count = _WS_COUNT.get(w)
        if count is not None:
            parts.append(" " * count)
            prev, suppress = None, False
            continue
        count = _NL_COUNT.get(w)
        if count is not None:
            parts.append("\n" * count)
            prev, suppress = None, False
            continue
        if w == NO_WS:
            suppress = True
            continue
        if prev is not None and not suppress and expects_space(prev, w):
            parts.append(" ")
        parts.append(w)
        prev, suppress = w, False
    return "".join(parts)
