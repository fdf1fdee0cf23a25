"""The interface every model family implements, and the batched greedy decoder built on it.

A family model is an ``nn.Module`` with three entry points:

* ``forward(input_ids, attention_mask=None) -> logits [B, T, V]`` — parallel pass (loglikelihood).
* ``prefill(input_ids, attention_mask=None) -> (logits [B, V], cache)`` — logits of the last
  position and the per-layer recurrent state after reading the whole prompt.
* ``step(input_ids [B], cache) -> logits [B, V]`` — one new token per row; updates ``cache``.

Padding contract: prompts are **left**-padded and ``attention_mask`` is 1 on real tokens. A pad must
never reach any state (conv windows, linear-attention sums, SSM states, KV caches), so results do not
depend on batch size or on which prompts share a batch. Positions (RoPE) count real tokens only.

A cache implements ``select(rows)`` (keep only these batch rows), so finished rows can leave the
batch. It may implement ``reserve(n)``: at most ``n`` more steps will follow (a hint, never a limit; a
full-attention KV cache allocates its room once instead of growing, which also keeps one CUDA graph for
the whole decode). Logits are float32 over the model's padded vocabulary; the decoder masks rows past
the tokenizer's vocabulary before the argmax.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Protocol, Sequence

import torch


class Cache(Protocol):
    def select(self, rows: torch.Tensor) -> "Cache": ...

    # optional: def reserve(self, steps: int) -> "Cache" (see the module docstring)


@dataclass
class GenerationResult:
    tokens: list[list[int]]  # generated ids per row (stop text included, cut by the caller)
    steps: int = 0  # decode steps actually run
    finished_early: list[bool] = field(default_factory=list)


def greedy_generate(
    model,
    input_ids: torch.Tensor,
    attention_mask: Optional[torch.Tensor],
    max_new_tokens: int,
    is_done: Optional[Callable[[list[int]], bool]] = None,
    vocab_limit: Optional[int] = None,
    overlap: Optional[bool] = None,
) -> GenerationResult:
    """Prefill once, then decode greedily one token per step from the recurrent cache.

    ``is_done(tokens)`` is asked after every step for every active row (stop strings, EOS);
    finished rows leave the batch (their cache rows are dropped), so a batch costs what its
    longest answer costs, not ``max_new_tokens`` steps for everyone. Greedy decoding makes this
    equal to "generate to max length, then cut" for the text before the stop.
    ``vocab_limit`` masks logits of ids >= limit (padded vocabulary rows). ``overlap`` (None: on CUDA) queues
    each decode step before the host reads the previous step's tokens (below); the tokens do not change
    (on CPU it only changes the order, which the tests use to check the CUDA path's bookkeeping).
    """
    B = input_ids.shape[0]
    out: list[list[int]] = [[] for _ in range(B)]
    done = [False] * B
    if max_new_tokens <= 0:
        return GenerationResult(out, 0, done)
    logits, cache = model.prefill(input_ids, attention_mask)
    if hasattr(cache, "reserve"):
        cache.reserve(max_new_tokens - 1)  # the first token comes from the prefill
    ids = _greedy(logits, vocab_limit)
    # On CUDA the host's per-token work (copying the ids back, is_done, bookkeeping) overlaps the next decode
    # step: step t + 1 is queued for every active row before the tokens of step t are read, and rows that turn
    # out to be finished are dropped from its result. Rows are independent, so the kept rows' tokens are the
    # same either way; a finished row costs one extra step of batch work. Without this, the GPU idled during
    # the host's part of every step (H100, batch 32, graphed decode: Mamba-130M 1.07 -> 0.86 ms per step;
    # Based-360M 1.03x per batch, benchmarks/decode_loop.py).
    overlap = ids.is_cuda if overlap is None else bool(overlap)  # on CPU: same order, no gain (tests use it)
    active = list(range(B))
    steps = 0
    n = 0  # tokens so far, the same for every active row
    while True:
        n += 1
        last = n >= max_new_tokens
        nxt = None
        if overlap:
            host, copied = ids, None
            if ids.is_cuda:
                host = torch.empty(ids.shape, dtype=ids.dtype, pin_memory=True)
                host.copy_(ids, non_blocking=True)
                copied = torch.cuda.Event()
                copied.record(torch.cuda.current_stream(ids.device))
            if not last:
                nxt = _greedy(model.step(ids, cache), vocab_limit)
                steps += 1
            if copied is not None:
                copied.synchronize()
            toks = host.tolist()
        else:
            toks = ids.tolist()
        keep = []
        for j, (row, tok) in enumerate(zip(active, toks)):
            out[row].append(tok)
            done[row] = is_done is not None and is_done(out[row])
            if not done[row] and not last:
                keep.append(j)
        if not keep:
            return GenerationResult(out, steps, done)
        if len(keep) < len(active):
            idx = torch.tensor(keep, device=ids.device)
            active, cache = [active[j] for j in keep], cache.select(idx)
            if nxt is None:
                ids = ids[idx]
            else:  # the queued step ran for the finished rows too: drop them from its result
                nxt = nxt[idx]
        if nxt is None:
            nxt = _greedy(model.step(ids, cache), vocab_limit)
            steps += 1
        ids = nxt


def _greedy(logits: torch.Tensor, vocab_limit: Optional[int]) -> torch.Tensor:
    """Argmax over the tokenizer's vocabulary (padded rows of the logits masked out, in place)."""
    if vocab_limit is not None and logits.shape[-1] > vocab_limit:
        logits[:, vocab_limit:] = float("-inf")
    return logits.argmax(-1)


def left_pad(sequences: Sequence[Sequence[int]], pad_id: int, device=None):
    """Stack token lists with left padding; returns (input_ids, attention_mask)."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, s in enumerate(sequences):
        if len(s):
            ids[i, width - len(s):] = torch.tensor(list(s), dtype=torch.long)
            mask[i, width - len(s):] = 1
    return ids.to(device), mask.to(device)


def positions_from_mask(attention_mask: Optional[torch.Tensor], B: int, T: int, device) -> torch.Tensor:
    """Per-row position ids that count real tokens only (left pads get position 0)."""
    if attention_mask is None:
        return torch.arange(T, device=device).expand(B, T)
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def cast_matmul_weights(model: torch.nn.Module, dtype: torch.dtype) -> None:
    """Store nn.Linear weights in ``dtype`` once. Under autocast this is the same math as casting them on
    every call (autocast rounds them to ``dtype`` anyway) without re-casting at each decode step. Conv
    weights stay as they are: decode steps use them in elementwise math, which autocast leaves in fp32.
    Captured decode graphs (they read the old weights) are released first."""
    if hasattr(model, "release_graphs"):
        model.release_graphs()
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            module.to(dtype)
