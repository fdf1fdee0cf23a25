"""JRT-RNN prefix linear attention (PLA) on the GPU, from the fused Based kernels.

reference-models.md §3.2: y_t = [Σ_{s≤t} κ(q_t,k_s) v_s + Σ_{s∈enc} κ(q_t,k^e_s) v^e_s] / [same κ sums + ε].
Equivalently, causal Based attention whose initial state is the encoder state
S_e = Σ_{s∈enc} φ(k^e_s) v^eᵀ_s, z_e = Σ_{s∈enc} φ(k^e_s) (the reference's ``pla_attention_chunked``).

Two launches (three with sequence segments):
1. the state-only pass of the chunk kernel over (k_enc, v_enc, enc_mask), non-causal: every chunk
   adds φ(k^e)ᵀV^e; it visits only the chunks between each row's first and last encoder token, so an
   encoder of M tokens costs M tokens of key/value reads whatever T is (with ``masks_are_ranges`` and TMA
   tiles its chunks start at the first encoder token and its tiles end at the last: no mask is applied);
2. the Based output pass over (q, k, v, key_mask) starting from (S_e, z_e).
``enc_mask`` may be any [B, T] pattern (the adapters pass the first M' real tokens of each row).
One launch for both (the encoder loop first, then the causal loop, the state kept in registers) was measured
slower: 3.42 vs 3.19 ms at B = 16, N = M = 32768 on an H100 (the causal loop spilled more); see benchmarks/README.md.
"""
from __future__ import annotations

from typing import Optional

import torch

from .reference import DEFAULT_EPS
from .triton_prefill import based_prefill_triton, state_from_keys_triton, supported  # noqa: F401


def pla_prefill_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_enc: torch.Tensor,
    v_enc: torch.Tensor,
    enc_mask: torch.Tensor,
    key_mask: Optional[torch.Tensor] = None,
    output_final_state: bool = False,
    eps: float = DEFAULT_EPS,
    n_seg: Optional[int] = None,
    config: Optional[dict] = None,
    masks_are_ranges: bool = False,
):
    """Same contract as ``reference.pla_attention_chunked`` (compact state). ``masks_are_ranges``: both masks are
    one contiguous run per row (``based_prefill_triton``'s ``mask_is_range``), as the adapters' are."""
    assert supported(q, k, v) and supported(q, k_enc, v_enc)
    enc_state = state_from_keys_triton(k_enc, v_enc, enc_mask, n_seg=n_seg, config=config, skip_empty=True,
                                       mask_is_range=masks_are_ranges)
    return based_prefill_triton(
        q, k, v, key_mask=key_mask, initial_state=enc_state, output_final_state=output_final_state,
        eps=eps, n_seg=n_seg, config=config, mask_is_range=masks_are_ranges,
    )
