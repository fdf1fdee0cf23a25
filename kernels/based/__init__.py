"""Based linear attention and JRT-RNN prefix linear attention: references (CPU) and Triton kernels (CUDA).

Model code calls the three dispatch functions below; they pick the fused kernel for CUDA tensors
when one is available, else the plain-PyTorch reference in ``reference.py``. Set
``JRT_EVAL_KERNELS=reference`` to force the reference everywhere (debugging, parity checks).
"""
from __future__ import annotations

import os
from typing import Optional

import torch

from .reference import (  # noqa: F401
    DEFAULT_EPS,
    BasedState,
    based_attention_chunked,
    based_attention_quadratic,
    based_decode_step,
    feature_dim,
    pla_attention_chunked,
    pla_attention_quadratic,
    state_from_keys,
    taylor_features,
    taylor_kernel,
)


def _use_fused(t: torch.Tensor) -> bool:
    return t.is_cuda and os.environ.get("JRT_EVAL_KERNELS", "auto") != "reference"


def based_prefill(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_mask: Optional[torch.Tensor] = None,
    initial_state: Optional[BasedState] = None,
    output_final_state: bool = False,
    eps: float = DEFAULT_EPS,
):
    """Causal Based attention over [B, T, H, f] q/k and [B, T, H, dv] v -> (o, state or None)."""
    return based_attention_chunked(
        q, k, v, key_mask=key_mask, initial_state=initial_state,
        output_final_state=output_final_state, eps=eps,
    )


def pla_prefill(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_enc: torch.Tensor,
    v_enc: torch.Tensor,
    enc_mask: torch.Tensor,
    key_mask: Optional[torch.Tensor] = None,
    output_final_state: bool = False,
    eps: float = DEFAULT_EPS,
):
    """JRT-RNN prefix linear attention -> (o, state or None); ``enc_mask [B, T]`` marks the encoder prefix."""
    return pla_attention_chunked(
        q, k, v, k_enc, v_enc, enc_mask, key_mask=key_mask,
        output_final_state=output_final_state, eps=eps,
    )


def based_step(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    state: BasedState,
    eps: float = DEFAULT_EPS,
    double_add_kv: bool = False,
) -> torch.Tensor:
    """One decode step, [B, H, f] q/k and [B, H, dv] v; updates ``state`` in place."""
    return based_decode_step(q, k, v, state, eps=eps, double_add_kv=double_add_kv)
