"""Production PyTorch paths for the recurrent mixers (CPU, and GPU where no Triton kernel applies).

* :func:`causal_conv1d_torch` — depthwise causal conv in ``[b, T, c]`` layout through ``F.conv1d``;
  :func:`conv_step_torch` — its one-token decode step on a ``[b, c, k-1]`` state.
* :func:`gated_rms_norm_torch` — the gated RMSNorm of Mamba-2 (gate, then norm) and GLA (norm, then gate).
* :func:`silu_mul_torch` — the SiLU-gated product of a gated MLP from its fused gate / up projection.
* :func:`selective_scan_torch` — Mamba-1 scan; discretisation vectorised per block of time steps, the
  recurrence itself sequential (memory ``O(b · block · d · n)`` instead of ``O(b · T · d · n)``).
* :func:`ssd_chunked` — Mamba-2 SSD, chunk by chunk (the state-space-duality block decomposition: quadratic
  inside a chunk, state passing between chunks). Peak memory is a few ``[b, h, L, L]`` tensors for one
  chunk, not the ``[b, chunks, L, L, h, p]`` broadcast that makes transformers' fallback allocate ~96 GiB
  at batch 32.
* :func:`selective_state_update_torch`, :func:`ssd_step_torch` — one Mamba-1 / Mamba-2 decode token on the state,
  in place (the step of the same recurrence); a 16-bit state is stepped in float32 and rounded once, as the Triton
  steps do (the adapters' default ``state_dtype="model"``, mamba_ssm's cache).
* :func:`gla_chunked` — GLA in chunks with pairwise decays ``exp(b_l - b_s)`` (all ≤ 1, so no overflow
  for strongly decaying gates), state passing between chunks.

All accumulate in float32 (float64 if the inputs are float64) and return float outputs plus the final
recurrent state, so prefill hands the exact state to the decoder. ``mask [b, T]`` (1 = real token) makes
a position neutral: no decay and no input, i.e. left padding is equivalent to no padding.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _wd(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _working_state(state: torch.Tensor) -> torch.Tensor:
    """A decode state in its working dtype: itself when float32 / float64, else a float32 copy, which the step
    writes back once (so a 16-bit state is rounded once per token)."""
    return state if state.dtype == _wd(state) else state.to(_wd(state))


def causal_conv1d_torch(x, weight, bias=None, activation: bool = True, mask=None):
    """``x [b, T, c]``, ``weight [c, k]`` → ``[b, T, c]`` contiguous (same dtype as x); zero history; positions
    with ``mask [b, T]`` 0 read as zero."""
    if mask is not None:
        x = x * mask[..., None].to(x.dtype)
    k = weight.shape[-1]
    out = F.conv1d(x.transpose(1, 2), weight[:, None, :].to(x.dtype), None if bias is None else bias.to(x.dtype),
                   padding=k - 1, groups=x.shape[-1])[..., : x.shape[1]]
    out = out.transpose(1, 2)
    return (F.silu(out) if activation else out).contiguous()


def conv_step_torch(state, x, weight, bias=None, activation: bool = True, out_dtype=None):
    """One decode token: ``state [b, c, k-1]`` shifted in place with ``x [b, c]`` appended; returns the (activated)
    conv output ``[b, c]``, computed in float32 (float64 for float64 inputs), in ``out_dtype`` (default x's dtype)."""
    wd = _wd(x)
    window = torch.cat([state, x[:, :, None].to(state.dtype)], dim=-1)
    state.copy_(window[:, :, 1:])
    out = (window.to(wd) * weight.to(wd)).sum(-1)
    if bias is not None:
        out = out + bias.to(wd)
    return (F.silu(out) if activation else out).to(out_dtype or x.dtype)


def conv_tail(x, k: int, mask=None):
    """The last ``k - 1`` inputs of every row as a conv state ``[b, c, k-1]`` (zeros where T < k - 1, and where
    ``mask [b, T]`` is 0)."""
    b, T, c = x.shape
    start = max(T - (k - 1), 0)
    tail = x[:, start:]
    if mask is not None:
        tail = tail * mask[:, start:, None].to(x.dtype)
    tail = tail.transpose(1, 2)
    if tail.shape[-1] < k - 1:
        tail = F.pad(tail, (k - 1 - tail.shape[-1], 0))
    return tail.contiguous()


def gated_rms_norm_torch(y, z, weight, eps: float, groups: int, out_dtype, norm_first: bool = False):
    """Gated RMSNorm over groups of channels, in float32: gate first (Mamba-2, ``norm_before_gate=False``):
    ``w ⊙ g / rms(g)`` with ``g = y ⊙ silu(z)``; ``norm_first`` (GLA): ``w ⊙ y / rms(y) ⊙ silu(z)``. ``weight``:
    ``[d]`` per channel or ``[d / groups]`` shared by the groups; ``z`` may be None (no gate)."""
    g = y.float()
    gate = F.silu(z.float()) if z is not None else None
    if gate is not None and not norm_first:
        g = g * gate
    shape = g.shape
    g = g.view(*shape[:-1], groups, shape[-1] // groups)
    g = g * torch.rsqrt(g.pow(2).mean(-1, keepdim=True) + eps)
    w = weight.float()
    g = (g.view(shape) * w) if w.numel() == shape[-1] else (g * w).view(shape)
    if gate is not None and norm_first:
        g = g * gate
    return g.to(out_dtype)


def silu_mul_torch(gu, gate_second: bool = False):
    """``silu(gu[..., :m]) * gu[..., m:]`` for ``gu [..., 2m]`` (``gate_second``: ``gu[..., :m] * silu(gu[..., m:])``),
    in float32 (float64 stays float64), rounded once to gu's dtype."""
    a, b = gu.to(_wd(gu)).chunk(2, dim=-1)
    return (b * F.silu(a) if not gate_second else a * F.silu(b)).to(gu.dtype)


def selective_scan_torch(x, dt, A, B, C, D=None, z=None, dt_bias=None, mask=None, initial_state=None, block: int = 64):
    """Mamba-1 selective scan (softplus on ``dt + dt_bias``). Returns ``(y [b, T, d] float, state [b, d, n])``."""
    wd = _wd(x)
    b, T, d = x.shape
    A = A.to(wd)
    h = (torch.zeros(b, d, A.shape[-1], dtype=wd, device=x.device) if initial_state is None
         else initial_state.to(wd).clone())
    delta = dt.to(wd) + (dt_bias.to(wd) if dt_bias is not None else 0.0)
    delta = F.softplus(delta)
    if mask is not None:
        delta = delta * mask.to(wd)[..., None]
    xf = x.to(wd)
    ys = []
    for s in range(0, T, block):
        e = min(s + block, T)
        dA = torch.exp(delta[:, s:e, :, None] * A)  # [b, L, d, n]
        dBx = (delta[:, s:e] * xf[:, s:e])[..., None] * B[:, s:e, None, :].to(wd)
        hs = torch.empty_like(dA)
        for t in range(e - s):
            h = dA[:, t] * h + dBx[:, t]
            hs[:, t] = h
        ys.append(torch.einsum("bldn,bln->bld", hs, C[:, s:e].to(wd)))
    y = torch.cat(ys, dim=1) if ys else xf.new_zeros(b, 0, d)
    if D is not None:
        y = y + D.to(wd) * xf
    if z is not None:
        y = y * F.silu(z.to(wd))
    return y, h


def _segsum_exp(cs: torch.Tensor) -> torch.Tensor:
    """``exp(cs[..., l] - cs[..., s])`` for s ≤ l, 0 above the diagonal; ``cs [..., L]`` → ``[..., L, L]``."""
    L = cs.shape[-1]
    diff = cs[..., :, None] - cs[..., None, :]
    causal = torch.ones(L, L, dtype=torch.bool, device=cs.device).tril()
    return torch.exp(diff.masked_fill(~causal, float("-inf")))


def ssd_chunked(x, dt, A, B, C, chunk_size: int = 256, D=None, dt_bias=None, dt_softplus=True,
                dt_limit=(0.0, float("inf")), mask=None, initial_state=None):
    """Mamba-2 SSD, one chunk at a time. Returns ``(y [b, T, h, p] float, state [b, h, p, n])``.

    Shapes as :func:`jrt_eval.kernels.mamba.reference.ssd_sequential_ref`.
    """
    wd = _wd(x)
    b, T, h, p = x.shape
    g, n = B.shape[-2:]
    rep = h // g
    delta = dt.to(wd) + (dt_bias.to(wd) if dt_bias is not None else 0.0)
    if dt_softplus:
        delta = F.softplus(delta)
    if tuple(dt_limit) != (0.0, float("inf")):
        delta = delta.clamp(dt_limit[0], dt_limit[1])
    if mask is not None:
        delta = delta * mask.to(wd)[..., None]
    A = A.to(wd)
    S = (torch.zeros(b, h, p, n, dtype=wd, device=x.device) if initial_state is None
         else initial_state.to(wd).clone())
    ys = []
    for s in range(0, T, chunk_size):
        e = min(s + chunk_size, T)
        L = e - s
        xc = x[:, s:e].to(wd)                                   # [b, L, h, p]
        dc = delta[:, s:e]                                      # [b, L, h]
        Bc = B[:, s:e].to(wd).permute(0, 2, 1, 3)               # [b, g, L, n]
        Cc = C[:, s:e].to(wd).permute(0, 2, 1, 3)               # [b, g, L, n]
        cs = torch.cumsum(dc * A, dim=1).transpose(1, 2)        # [b, h, L] (≤ 0, decreasing)
        xdt = (xc * dc[..., None]).permute(0, 2, 1, 3)          # [b, h, L, p]
        # intra-chunk (diagonal block): (C Bᵀ ∘ decay) (x Δ)
        CB = Cc @ Bc.transpose(-1, -2)                          # [b, g, L, L]
        M = _segsum_exp(cs).view(b, g, rep, L, L) * CB[:, :, None]
        y = (M @ xdt.view(b, g, rep, L, p)).view(b, h, L, p)
        # contribution of the state entering the chunk
        Sg = S.view(b, g, rep, p, n)
        y = y + (Cc[:, :, None] @ Sg.transpose(-1, -2)).view(b, h, L, p) * torch.exp(cs)[..., None]
        # state leaving the chunk
        to_end = torch.exp(cs[..., -1:] - cs)                   # [b, h, L]
        Xw = (xdt * to_end[..., None]).transpose(-1, -2).reshape(b, g, rep, p, L)
        S = S * torch.exp(cs[..., -1])[..., None, None] + (Xw @ Bc[:, :, None]).view(b, h, p, n)
        ys.append(y.transpose(1, 2))                            # [b, L, h, p]
    y = torch.cat(ys, dim=1) if ys else x.new_zeros(b, 0, h, p, dtype=wd)
    if D is not None:
        y = y + D.to(wd)[:, None] * x.to(wd)
    return y, S


def selective_state_update_torch(state, x, dt, A, B, C, D=None, z=None, dt_bias=None):
    """One Mamba-1 decode token: ``state [b, d, n]`` is updated in place; ``x, dt, z [b, d]``, ``B, C [b, n]``.
    Returns ``y [b, d]`` in x's dtype."""
    work = _working_state(state)
    wd = work.dtype
    delta = F.softplus(dt.to(wd) + (dt_bias.to(wd) if dt_bias is not None else 0.0))
    xf = x.to(wd)
    work.mul_(torch.exp(delta[:, :, None] * A)).add_((delta * xf)[:, :, None] * B.to(wd)[:, None, :])
    if work is not state:
        state.copy_(work)
    y = (work @ C.to(wd)[:, :, None]).squeeze(-1)
    if D is not None:
        y = y + D * xf
    if z is not None:
        y = y * F.silu(z.to(wd))
    return y.to(x.dtype)


def ssd_step_torch(state, x, dt, A, B, C, D=None, dt_bias=None, dt_softplus=True, dt_limit=(0.0, float("inf"))):
    """One Mamba-2 decode token: ``state [b, h, p, n]`` (contiguous) is updated in place; ``x [b, h, p]``,
    ``dt [b, h]``, ``B, C [b, g, n]``. Returns ``y [b, h, p]`` (incl. ``D x``) in the working dtype (float64 for a
    float64 state, else float32). The discretisation is :func:`ssd_chunked`'s, so a prefill hands over to this
    step exactly."""
    work = _working_state(state)
    wd = work.dtype
    b, h, p, n = state.shape
    g = B.shape[-2]
    delta = dt.to(wd) + (dt_bias.to(wd) if dt_bias is not None else 0.0)
    if dt_softplus:
        delta = F.softplus(delta)
    if tuple(dt_limit) != (0.0, float("inf")):
        delta = delta.clamp(dt_limit[0], dt_limit[1])
    xf = x.to(wd)
    S = work.view(b, g, h // g, p, n)
    S.mul_(torch.exp(delta * A.to(wd)).view(b, g, h // g, 1, 1))
    S.add_((delta[..., None] * xf).view(b, g, h // g, p, 1) * B.to(wd).view(b, g, 1, 1, n))
    if work is not state:
        state.copy_(work)
    y = (S @ C.to(wd).view(b, g, 1, n, 1)).view(b, h, p)
    if D is not None:
        y = y + D.to(wd)[:, None] * xf
    return y


def gla_gate_torch(x, weight, bias, normalizer: float, clamp_min=None, out_dtype=torch.float32):
    """GLA's log forget gate from the low-rank activations ``x [..., R]``: ``logsigmoid(x Wᵀ + b) / normalizer``,
    clamped below at ``clamp_min`` (fla's layer); the linear in x's dtype, the rest in float32."""
    g = F.logsigmoid(F.linear(x, weight, bias).float()) / normalizer
    if clamp_min is not None:
        g = g.clamp_min(clamp_min)
    return g.to(out_dtype)


def gla_chunked(q, k, v, gk, scale=None, mask=None, initial_state=None, chunk_size: int = 32):
    """GLA over ``[b, T, h, K|V]`` inputs with log forget gates ``gk`` (≤ 0); returns ``(o float, state [b, h, K, V])``.

    Inside a chunk: ``o_l = scale · (Σ_{s≤l} (q_l ⊙ k_s ⊙ exp(b_l − b_s))·1 v_s + (q_l ⊙ exp(b_l))ᵀ S)`` with
    ``b`` the running sum of ``gk`` in the chunk; masked positions get ``k = 0`` and ``gk = 0``.
    """
    wd = _wd(q)
    b, T, h, K = q.shape
    V = v.shape[-1]
    scale = K ** -0.5 if scale is None else scale
    q, k, v, gk = (t.to(wd).transpose(1, 2) for t in (q, k, v, gk))  # [b, h, T, *]
    if mask is not None:
        m = mask.to(wd)[:, None, :, None]
        k = k * m
        gk = gk * m
    S = (torch.zeros(b, h, K, V, dtype=wd, device=q.device) if initial_state is None
         else initial_state.to(wd).clone())
    outs = []
    for s in range(0, T, chunk_size):
        e = min(s + chunk_size, T)
        L = e - s
        qc, kc, vc = q[:, :, s:e] * scale, k[:, :, s:e], v[:, :, s:e]
        bc = torch.cumsum(gk[:, :, s:e], dim=2)                          # [b, h, L, K]
        causal = torch.ones(L, L, dtype=torch.bool, device=q.device).tril()
        diff = (bc[:, :, :, None, :] - bc[:, :, None, :, :]).masked_fill(~causal[:, :, None], float("-inf"))
        Aw = torch.einsum("bhlk,bhsk,bhlsk->bhls", qc, kc, torch.exp(diff))
        o = Aw @ vc + (qc * torch.exp(bc)) @ S
        last = bc[:, :, -1:, :]                                          # [b, h, 1, K]
        S = S * torch.exp(last).transpose(-1, -2) + (kc * torch.exp(last - bc)).transpose(-1, -2) @ vc
        outs.append(o)
    o = torch.cat(outs, dim=2) if outs else q.new_zeros(b, h, 0, V)
    return o.transpose(1, 2), S
