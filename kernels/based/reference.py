"""Plain-PyTorch reference for Based linear attention and JRT-RNN prefix linear attention.

This file is the contract the Triton kernels in this package are tested against, and the
CPU path of the model adapters. Math (reference-models.md §2.4, §3.2):

    φ(x) = [1, x / f^¼, vec(x xᵀ) / (√2 √f)]          (273 wide for f = 16)
    φ(q)·φ(k) = 1 + s + s²/2,  s = q·k / √f            (2nd-order Taylor of exp)
    y_t = Σ_{s≤t} κ_ts v_s / (Σ_{s≤t} κ_ts + ε)

We keep the symmetric ("compact") feature map, which gives the same kernel with
1 + f + f(f+1)/2 = 153 features for f = 16 instead of 273: off-diagonal products appear once,
scaled by √2 (x_i x_j / √f), squares keep 1/(√2 √f).

Layouts follow fla: q, k [B, T, H, f]; v [B, T, H, dv]; output [B, T, H, dv].
Recurrent state: ``BasedState(S [B, H, D, dv], z [B, H, D])``, float32, D = compact width.

Padding: ``key_mask [B, T]`` (True = real token) zeroes the whole feature vector φ(k) of
masked positions, so a pad contributes nothing to numerator or denominator. Zeroing raw k
would be wrong: φ(0) = [1, 0, ...] still adds 1 to the denominator.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch

DEFAULT_EPS = 1e-12  # REF's quadratic and recurrent paths; fla's parallel_based uses 1e-6


class BasedState(NamedTuple):
    S: torch.Tensor  # [B, H, D, dv] float32: Σ φ(k) vᵀ
    z: torch.Tensor  # [B, H, D] float32: Σ φ(k)


def feature_dim(f: int, compact: bool = True) -> int:
    return 1 + f + (f * (f + 1) // 2 if compact else f * f)


def taylor_features(x: torch.Tensor, compact: bool = True) -> torch.Tensor:
    """φ(x) over the last dim; compact=False gives REF's 273-wide `TaylorExp` layout."""
    f = x.shape[-1]
    rd = math.sqrt(f)
    first = x / math.sqrt(rd)
    ones = torch.ones_like(x[..., :1])
    if not compact:
        second = (x.unsqueeze(-1) * x.unsqueeze(-2)).flatten(-2) / (math.sqrt(2) * rd)
        return torch.cat([ones, first, second], dim=-1)
    i, j = torch.triu_indices(f, f, device=x.device)
    prod = x[..., i] * x[..., j]
    # diagonal: x_i² / (√2 √f); off-diagonal pairs stand for two symmetric terms: x_i x_j / √f
    # masked_fill_, not scale[i == j] = ...: a boolean index reads the device (nonzero), which a CUDA-graph
    # capture of the decode step forbids
    scale = torch.full((len(i),), 1.0 / rd, dtype=x.dtype, device=x.device)
    scale.masked_fill_(i == j, 1.0 / (math.sqrt(2) * rd))
    return torch.cat([ones, first, prod * scale], dim=-1)


def taylor_kernel(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """κ(q_t, k_s) = 1 + s + s²/2 with s = q·k/√f, for [..., T, f] x [..., S, f] -> [..., T, S]."""
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    return 1 + s + 0.5 * s * s


def _acc(x: torch.Tensor) -> torch.Tensor:
    """Accumulation precision: float32, or float64 when the caller passes float64 (tests)."""
    return x if x.dtype == torch.float64 else x.float()


def _masked_features(k: torch.Tensor, key_mask: Optional[torch.Tensor], compact: bool) -> torch.Tensor:
    phi = taylor_features(_acc(k), compact)
    if key_mask is not None:
        phi = phi * key_mask[:, :, None, None].to(phi.dtype)
    return phi


def based_attention_quadratic(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_mask: Optional[torch.Tensor] = None,
    eps: float = DEFAULT_EPS,
) -> torch.Tensor:
    """Naive O(T²) causal form: (tril(κ) V) / rowsum(tril(κ)). Computed in float32."""
    B, T, H, _ = q.shape
    kappa = taylor_kernel(_acc(q).transpose(1, 2), _acc(k).transpose(1, 2))  # [B, H, T, T]
    allowed = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    if key_mask is not None:
        allowed = allowed & key_mask[:, None, None, :].bool()
    kappa = kappa * allowed
    num = kappa @ _acc(v).transpose(1, 2)
    den = kappa.sum(-1, keepdim=True) + eps
    return (num / den).transpose(1, 2).to(v.dtype)


def state_from_keys(
    k: torch.Tensor, v: torch.Tensor, key_mask: Optional[torch.Tensor] = None, compact: bool = True
) -> BasedState:
    """S = Σ_t φ(k_t) v_tᵀ, z = Σ_t φ(k_t) over the (unmasked) positions."""
    phi = _masked_features(k, key_mask, compact)  # [B, T, H, D]
    S = torch.einsum("bthd,bthe->bhde", phi, _acc(v))
    return BasedState(S, phi.sum(1))


def based_attention_chunked(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_mask: Optional[torch.Tensor] = None,
    initial_state: Optional[BasedState] = None,
    output_final_state: bool = False,
    eps: float = DEFAULT_EPS,
    chunk_size: int = 64,
    compact: bool = True,
):
    """Causal Based attention in O(T): inside a chunk the quadratic form, across chunks the state.

    Returns ``(o, state)``; ``state`` is None unless ``output_final_state``. ``initial_state``
    acts as keys/values that precede position 0 (JRT-RNN's encoder state).
    """
    B, T, H, f = q.shape
    dv = v.shape[-1]
    D = feature_dim(f, compact)
    phi_q = taylor_features(_acc(q), compact)
    phi_k = _masked_features(k, key_mask, compact)
    vf = _acc(v)
    if initial_state is None:
        S = phi_q.new_zeros(B, H, D, dv)
        z = phi_q.new_zeros(B, H, D)
    else:
        S, z = initial_state.S.to(phi_q.dtype).clone(), initial_state.z.to(phi_q.dtype).clone()
    out = phi_q.new_empty(B, T, H, dv)
    for c0 in range(0, T, chunk_size):
        c1 = min(c0 + chunk_size, T)
        pq = phi_q[:, c0:c1].transpose(1, 2)  # [B, H, C, D]
        pk = phi_k[:, c0:c1].transpose(1, 2)
        vc = vf[:, c0:c1].transpose(1, 2)  # [B, H, C, dv]
        intra = (pq @ pk.transpose(-1, -2)).tril()  # [B, H, C, C]
        num = pq @ S + intra @ vc
        den = (pq * z[:, :, None]).sum(-1) + intra.sum(-1)
        out[:, c0:c1] = (num / (den[..., None] + eps)).transpose(1, 2)
        S = S + pk.transpose(-1, -2) @ vc
        z = z + pk.sum(2)
    return out.to(v.dtype), (BasedState(S, z) if output_final_state else None)


def based_decode_step(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    state: BasedState,
    eps: float = DEFAULT_EPS,
    double_add_kv: bool = False,
    compact: bool = True,
) -> torch.Tensor:
    """One token per row: update the state in place, then read out. q, k [B, H, f]; v [B, H, dv].

    ``double_add_kv`` reproduces REF's decode defect (φ(k)vᵀ added twice to S, φ(k) once to z).
    """
    phi_q = taylor_features(_acc(q), compact)
    phi_k = taylor_features(_acc(k), compact)
    kv = phi_k.unsqueeze(-1) * _acc(v).unsqueeze(-2)
    state.S.add_(kv, alpha=2.0 if double_add_kv else 1.0)
    state.z.add_(phi_k)
    num = (phi_q.unsqueeze(-1) * state.S).sum(-2)
    den = (phi_q * state.z).sum(-1, keepdim=True)
    return (num / (den + eps)).to(v.dtype)


def pla_attention_quadratic(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_enc: torch.Tensor,
    v_enc: torch.Tensor,
    enc_mask: torch.Tensor,
    key_mask: Optional[torch.Tensor] = None,
    eps: float = DEFAULT_EPS,
) -> torch.Tensor:
    """Prefix linear attention, naive form (reference-models.md §3.2).

    y_t = [Σ_{s≤t} κ(q_t,k_s) v_s + Σ_{s∈enc} κ(q_t,k^e_s) v^e_s] / [same sums of κ + ε]
    ``enc_mask [B, T]`` marks the encoder prefix (the first M' real tokens of each row).
    """
    T = q.shape[1]
    qf = _acc(q).transpose(1, 2)
    causal = taylor_kernel(qf, _acc(k).transpose(1, 2))
    allowed = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    if key_mask is not None:
        allowed = allowed & key_mask[:, None, None, :].bool()
    causal = causal * allowed
    enc = taylor_kernel(qf, _acc(k_enc).transpose(1, 2)) * enc_mask[:, None, None, :].to(qf.dtype)
    num = causal @ _acc(v).transpose(1, 2) + enc @ _acc(v_enc).transpose(1, 2)
    den = causal.sum(-1, keepdim=True) + enc.sum(-1, keepdim=True) + eps
    return (num / den).transpose(1, 2).to(v.dtype)


def pla_attention_chunked(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_enc: torch.Tensor,
    v_enc: torch.Tensor,
    enc_mask: torch.Tensor,
    key_mask: Optional[torch.Tensor] = None,
    output_final_state: bool = False,
    eps: float = DEFAULT_EPS,
    chunk_size: int = 64,
    compact: bool = True,
):
    """PLA as causal Based attention whose initial state is the encoder state (S_e, z_e)."""
    enc_state = state_from_keys(k_enc, v_enc, enc_mask, compact)
    return based_attention_chunked(
        q, k, v, key_mask=key_mask, initial_state=enc_state,
        output_final_state=output_final_state, eps=eps, chunk_size=chunk_size, compact=compact,
    )
