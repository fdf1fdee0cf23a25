"""Context cutting as the paper's runs did it (``--cutting_context``; reference-tasks.md §4.2).

Each record's context field is tokenized with the evaluated model's tokenizer and cut to a window of
D = context_length − answer_length tokens: up to D//2 tokens before the first case-insensitive
occurrence of the answer and the rest of the budget after it, then decoded back to text (with the
paper's tokenizer clean-up). Edge cases kept from the reference because they define the benchmark:

* a record whose answer (or, for SWDE/FDA, attribute name) is 1 character or shorter is dropped;
  lists use only their first element;
* ``alt_answers`` are tried when no answer is found; with no answer keys (TriviaQA, DROP) the window
  starts at the document head;
* an answer that is not found gives ``C[:-1]`` as the prefix, i.e. a window at the document end,
  unless the record has ``tok_pos`` and the prefix is longer than D;
* the answer's token position is the token count of the prefix tokenized on its own, not its offset
  inside the document's tokens (they can differ by one at the boundary);
* every cut field is round-tripped through the tokenizer, even when it fits whole.

``protocol="clean"`` (opt-in, documented in the README) keeps 1-character answers and puts the
window of a not-found answer at the document head.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from .tokenization import decode_like_paper, encode_like_paper

PAPER = "paper"
CLEAN = "clean"
PROTOCOLS = (PAPER, CLEAN)


@dataclass(frozen=True)
class Window:
    start: int  # token index (inclusive) in the document's tokens
    end: int  # token index (exclusive)
    answer_token: int  # the token position the window was placed around
    found: bool  # whether an answer was located in the text (always True with no answer keys)


def _find(needle: str, haystack: str) -> int:
    match = re.search(re.escape(needle), haystack, flags=re.IGNORECASE)
    return match.start() if match else -1


def _first(value):
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError("empty answer list")
        return value[0]
    return value


def answer_offset(doc: dict, context: str, answer_keys, protocol: str = PAPER) -> Optional[int]:
    """Character offset the window is placed around; -1 if not found; None if the record is dropped."""
    pos = -1
    for key in answer_keys:
        answer = _first(doc[key])
        if len(answer) == 0 or (protocol == PAPER and len(answer) <= 1):
            return None
        hit = _find(answer, context)
        if hit >= 0 and (pos == -1 or hit < pos):
            pos = hit
    if pos < 0 and doc.get("alt_answers"):
        for alt in doc["alt_answers"]:
            hit = _find(alt, context)
            if hit >= 0 and (pos == -1 or hit < pos):
                pos = hit
            if pos >= 0:
                break
    if not answer_keys:
        pos = 0
    return pos


def place_window(n_doc_tokens: int, answer_token: int, budget: int) -> tuple[int, int]:
    """[start, end): up to budget//2 tokens before the answer, the rest after; never extended backwards."""
    start = max(0, answer_token - budget // 2)
    end = min(n_doc_tokens, answer_token + (budget - (answer_token - start)))
    return start, end


def cut_text(
    doc: dict,
    context: str,
    answer_keys,
    tokenizer,
    context_length: int = 1000,
    answer_length: int = 50,
    protocol: str = PAPER,
) -> Optional[tuple[str, Window]]:
    """Cut ``context`` for ``doc``; returns (window text, Window) or None when the record is dropped."""
    budget = context_length - answer_length
    if budget <= 0:
        raise ValueError(f"context_length ({context_length}) must exceed answer_length ({answer_length})")
    context = context.strip()
    pos = answer_offset(doc, context, answer_keys, protocol)
    if pos is None:
        return None
    tokens = encode_like_paper(tokenizer, context)
    found = pos >= 0
    if not found and protocol == CLEAN:
        pos = 0
    # REF: context[:answer_pos] with answer_pos == -1 is everything but the last character.
    prefix_tokens = len(encode_like_paper(tokenizer, context[:pos]))
    answer_token = prefix_tokens
    tok_pos = doc.get("tok_pos")
    if not found and protocol == PAPER and tok_pos is not None and prefix_tokens > budget:
        answer_token = int(tok_pos)
    start, end = place_window(len(tokens), answer_token, budget)
    return decode_like_paper(tokenizer, tokens[start:end]), Window(start, end, answer_token, found)
