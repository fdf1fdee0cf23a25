"""Layers of the hazyresearch GPT backbone (Based, JRT-RNN, attention baseline).

Math and parameter names follow /work/shared/docs/reference-models.md (§1 backbone, §2 Based, §3
JRT-RNN prefix linear attention, §4 attention baseline, §8 padding). Module attribute names equal the
published state-dict names, so a checkpoint loads with a strict ``load_state_dict``.

Every mixer has ``forward(h [B, T, d], ctx) -> (y, state or None)`` (the state only when
``ctx.want_state``) and ``step(h [B, d], state, ctx) -> y [B, d]`` (updates ``state``). ``ctx`` is a
:class:`SeqContext` / :class:`StepContext` holding what all layers share: the padding mask, per-row
positions (real tokens only), cached masks and rotary tables.

Padding (left padding, ``mask`` True on real tokens): nothing computed at a pad position reaches a
real position — BaseConv zeroes ``u1`` after ``in_proj`` (its bias would leak), linear attention
zeroes φ(k) (the kernels' ``key_mask``), attention masks pad keys. Pad queries of attention may see
themselves so no row is ever all -inf (their outputs are garbage that no real position reads).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from jrt_eval.kernels.based import BasedState, based_prefill, based_step, pla_prefill
from jrt_eval.kernels.mamba import silu_mul


# --------------------------------------------------------------------------------------- contexts
class SeqContext:
    """Shared per-call data of a parallel pass over [B, T] tokens."""

    def __init__(self, mask: Optional[torch.Tensor], positions: torch.Tensor, want_state: bool,
                 encoder_limit: Optional[torch.Tensor] = None):
        self.mask = mask  # [B, T] bool (True = real) or None (all real)
        self.positions = positions  # [B, T] long, real-token index (pads: 0)
        self.want_state = want_state
        self.encoder_limit = encoder_limit  # [B] long: JRT encoder reads at most this many real tokens
        self._cache: dict = {}

    @property
    def T(self) -> int:
        return self.positions.shape[1]

    def attn_mask(self, window: Optional[int]) -> Optional[torch.Tensor]:
        """Boolean [B|1, 1, T, T] mask (True = may attend) for causal attention over the last
        ``window`` keys (None: unlimited); None when plain causal attention suffices."""
        key = ("attn", window)
        if key not in self._cache:
            if self.mask is None and window is None:
                self._cache[key] = None
            else:
                idx = torch.arange(self.T, device=self.positions.device)
                back = idx[:, None] - idx[None, :]  # t - s
                allowed = back >= 0
                if window is not None:
                    allowed = allowed & (back <= window)
                allowed = allowed[None, None]
                if self.mask is not None:
                    # pad keys masked; every query keeps its own position (no all -inf rows)
                    allowed = (allowed & self.mask[:, None, None, :]) | torch.eye(
                        self.T, dtype=torch.bool, device=idx.device)
                self._cache[key] = allowed
        return self._cache[key]

    def rope(self, rotary_dim: int, base: float):
        key = ("rope", rotary_dim, base)
        if key not in self._cache:
            self._cache[key] = rope_cos_sin(self.positions, rotary_dim, base)
        return self._cache[key]

    def encoder_mask(self, enc_length: int) -> torch.Tensor:
        """[B, T] bool: the first M' = min(M, real length[, encoder limit]) real tokens of each row (§3.2)."""
        key = ("enc", enc_length)
        if key not in self._cache:
            enc = self.positions < enc_length
            if self.encoder_limit is not None:
                enc = enc & (self.positions < self.encoder_limit[:, None])
            if self.mask is not None:
                enc = enc & self.mask
            self._cache[key] = enc
        return self._cache[key]


class StepContext:
    """Shared per-step data: ``positions [B]`` = real-token index of the new token.

    Model-level decode (HazyGPT) also passes ``column [B]``, the full-attention KV column the new token is written
    to (a device tensor, so that the step can be replayed as a CUDA graph; the KV buffers have room for it), and
    ``kv_len``, the number of filled columns after the write when the host knows it (eager decode attends over
    those only) or None (attend over the whole buffer, unfilled columns masked: the CUDA-graph step).
    Without ``column`` a full-attention layer keeps its own python-int count (``GrowKV.n``) and grows its buffers."""

    def __init__(self, positions: torch.Tensor, column: Optional[torch.Tensor] = None, kv_len: Optional[int] = None):
        self.positions = positions
        self.column = column
        self.kv_len = kv_len
        self._cache: dict = {}

    def rope(self, rotary_dim: int, base: float):
        key = (rotary_dim, base)
        if key not in self._cache:
            self._cache[key] = rope_cos_sin(self.positions, rotary_dim, base)
        return self._cache[key]


# --------------------------------------------------------------------------------------- basics
class RMSNorm(nn.Module):
    """flash-attn RMSNorm: y = w ⊙ x / sqrt(mean(x²) + eps), fp32 math, output in the weight dtype (§1.2)."""

    def __init__(self, d: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * self.weight.float()).to(self.weight.dtype)


class GatedMLP(nn.Module):
    """REF GatedMlp with activation silu: ``fc2(a1 ⊙ silu(a2))``, a = fc1(x) = [a1 | a2] —
    the gate is the SECOND half (flash-attn ``swiglu(gate, y)`` with ``y, gate = chunk(2)``, §1.2)."""

    def __init__(self, d: int, hidden: int, bias1: bool = False, bias2: bool = False):
        super().__init__()
        self.fc1 = nn.Linear(d, 2 * hidden, bias=bias1)
        self.fc2 = nn.Linear(hidden, d, bias=bias2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # as flash-attn's swiglu: float32 math, one rounding (in bf16 PyTorch's SiLU, then product, round twice);
        # one Triton pass on CUDA instead of two
        return self.fc2(silu_mul(self.fc1(x), gate_second=True))


# --------------------------------------------------------------------------------------- BaseConv
class ShortConv(nn.Module):
    """Holds the depthwise kernel under REF's name ``conv.conv.weight [d_inner, 1, k]``."""

    def __init__(self, channels: int, kernel: int, bias: bool):
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, kernel, groups=channels, bias=bias)


@dataclass
class ConvState:
    window: torch.Tensor  # [B, d_inner, k-1]: the last k-1 inputs u1 (zeros before the first token)

    def select(self, rows):
        return ConvState(self.window.index_select(0, rows))


class BaseConv(nn.Module):
    """Gated short convolution (§2.3): u = in_proj(h) = [u1 | u2]; y = out_proj(silu(conv_k(u1)) ⊙ u2)."""

    def __init__(self, d: int, d_inner: int, kernel: int, bias: bool = True, conv_bias: bool = False):
        super().__init__()
        self.d_inner = d_inner
        self.in_proj = nn.Linear(d, 2 * d_inner, bias=bias)
        self.conv = ShortConv(d_inner, kernel, conv_bias)
        self.out_proj = nn.Linear(d_inner, d, bias=bias)

    def forward(self, h: torch.Tensor, ctx: SeqContext):
        u1, u2 = self.in_proj(h).split(self.d_inner, dim=-1)
        if ctx.mask is not None:  # after in_proj: its bias would otherwise enter the window
            u1 = u1.masked_fill(~ctx.mask[..., None], 0)
        conv = self.conv.conv
        k = conv.weight.shape[-1]
        x = F.pad(u1.transpose(1, 2), (k - 1, 0))  # causal: k-1 zeros before position 0
        c = F.conv1d(x, conv.weight, conv.bias, groups=self.d_inner)  # [B, d_inner, T]
        y = self.out_proj(F.silu(c).transpose(1, 2) * u2)
        state = ConvState(x[..., x.shape[-1] - (k - 1):].contiguous()) if ctx.want_state else None
        return y, state

    def step(self, h: torch.Tensor, state: ConvState, ctx: StepContext) -> torch.Tensor:
        u1, u2 = self.in_proj(h).split(self.d_inner, dim=-1)  # [B, d_inner]
        w = self.conv.conv.weight[:, 0, :]  # [d_inner, k]; w[:, -1] multiplies the newest token
        c = (state.window * w[:, :-1]).sum(-1) + u1 * w[:, -1]
        if self.conv.conv.bias is not None:
            c = c + self.conv.conv.bias
        if state.window.shape[-1] > 0:  # in place: the decode state keeps its storage
            state.window.copy_(torch.cat([state.window[..., 1:], u1.unsqueeze(-1).to(state.window.dtype)], -1))
        return self.out_proj(F.silu(c).to(u2.dtype) * u2)


# --------------------------------------------------------------------------------------- Based
def select_based_state(state: BasedState, rows) -> BasedState:
    return BasedState(state.S.index_select(0, rows), state.z.index_select(0, rows))


class LinearAttention(nn.Module):
    """Based linear attention with the 2nd-order Taylor feature map (§2.4), via jrt_eval.kernels.based.

    ``qk_scale`` = (f / scale_dim)^¼ reproduces REF ``TaylorExp`` built with a scale dim other than
    the feature dim (φ(c·x) with the f-scaled map equals the scale_dim map); 1 for every known config.
    """

    def __init__(self, d: int, num_heads: int, feature_dim: int, head_dim: int, eps: float,
                 qk_scale: float = 1.0, double_add_kv: bool = False):
        super().__init__()
        self.H, self.f, self.dv = num_heads, feature_dim, head_dim
        self.eps, self.qk_scale = eps, qk_scale
        self.double_add_kv = double_add_kv  # REF decode defect (§2.4), reference_quirks only
        self.proj_q = nn.Linear(d, num_heads * feature_dim, bias=False)
        self.proj_k = nn.Linear(d, num_heads * feature_dim, bias=False)
        self.proj_v = nn.Linear(d, num_heads * head_dim, bias=False)
        self.out_proj = nn.Linear(num_heads * head_dim, d, bias=False)

    def _scaled(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.qk_scale == 1.0 else x * self.qk_scale

    def _qkv(self, h: torch.Tensor):
        q = self._scaled(self.proj_q(h).unflatten(-1, (self.H, self.f)))
        k = self._scaled(self.proj_k(h).unflatten(-1, (self.H, self.f)))
        v = self.proj_v(h).unflatten(-1, (self.H, self.dv))
        return q, k, v

    def forward(self, h: torch.Tensor, ctx: SeqContext):
        q, k, v = self._qkv(h)
        # ctx.mask is left padding (HazyGPT._mask checks it): one run of real tokens per row
        o, state = based_prefill(q, k, v, key_mask=ctx.mask, output_final_state=ctx.want_state, eps=self.eps,
                                 mask_is_range=True)
        return self.out_proj(o.flatten(-2).to(h.dtype)), state

    def step(self, h: torch.Tensor, state: BasedState, ctx: StepContext) -> torch.Tensor:
        q, k, v = self._qkv(h)  # [B, H, f] / [B, H, dv]
        o = based_step(q, k, v, state, eps=self.eps, double_add_kv=self.double_add_kv)
        return self.out_proj(o.flatten(-2).to(h.dtype))


class PrefixLinearAttention(LinearAttention):
    """JRT-RNN prefix linear attention (§3.2): causal Based attention over all tokens plus a
    non-causal read of the first M' = min(M, real length) tokens through separate encoder keys and
    values; decoding is the plain Based step (encoder projections unused, single kv update, §3.3)."""

    def __init__(self, d: int, num_heads: int, feature_dim: int, head_dim: int, eps: float,
                 enc_length: int, qk_scale: float = 1.0):
        super().__init__(d, num_heads, feature_dim, head_dim, eps, qk_scale, double_add_kv=False)
        self.enc_length = enc_length
        self.proj_k_enc = nn.Linear(d, num_heads * feature_dim, bias=False)
        self.proj_v_enc = nn.Linear(d, num_heads * head_dim, bias=False)

    def forward(self, h: torch.Tensor, ctx: SeqContext):
        q, k, v = self._qkv(h)
        k_enc = self._scaled(self.proj_k_enc(h).unflatten(-1, (self.H, self.f)))
        v_enc = self.proj_v_enc(h).unflatten(-1, (self.H, self.dv))
        o, state = pla_prefill(q, k, v, k_enc, v_enc, ctx.encoder_mask(self.enc_length), key_mask=ctx.mask,
                               output_final_state=ctx.want_state, eps=self.eps, masks_are_ranges=True)
        return self.out_proj(o.flatten(-2).to(h.dtype)), state


# --------------------------------------------------------------------------------------- attention
def rope_inv_freq(rotary_dim: int, base: float, device=None) -> torch.Tensor:
    """flash-attn RotaryEmbedding: base^(-2i/dim) for i < ceil(dim/2), fp32 (odd dim 35 -> 18 freqs)."""
    return 1.0 / (base ** (torch.arange(0, rotary_dim, 2, device=device, dtype=torch.float32) / rotary_dim))


def rope_cos_sin(positions: torch.Tensor, rotary_dim: int, base: float):
    """cos/sin tables [..., 1, n_freq] for positions [...]; the 1 broadcasts over heads.

    The angles are fp32 products position·inv_freq exactly as flash-attn's cache builds them (the
    rounding the checkpoints were trained with); their cos/sin are taken in fp64 (tiny tables)."""
    angles = positions.to(torch.float32)[..., None] * rope_inv_freq(rotary_dim, base, positions.device)
    angles = angles.double()
    return angles.cos().unsqueeze(-2), angles.sin().unsqueeze(-2)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Non-interleaved rotary on the first 2·n_freq channels of x [..., H, dh] (halves rotated),
    computed in fp32 (fp64 for fp64 inputs) and returned in x's dtype."""
    n = cos.shape[-1]
    dt = torch.promote_types(x.dtype, torch.float32)
    cos, sin = cos.to(dt), sin.to(dt)
    x1, x2 = x[..., :n].to(dt), x[..., n:2 * n].to(dt)
    rotated = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(x.dtype)
    return torch.cat([rotated, x[..., 2 * n:]], dim=-1)


@dataclass
class RingKV:
    """Sliding-window decode state: the last ``R = window + 1`` keys/values (after RoPE) per row, stored
    at slot ``position mod R``; attention is order-free, so slots need not be sorted."""
    k: torch.Tensor  # [B, H, R, dh]
    v: torch.Tensor
    valid: torch.Tensor  # [B, R] bool

    def select(self, rows):
        return RingKV(self.k.index_select(0, rows), self.v.index_select(0, rows), self.valid.index_select(0, rows))


@dataclass
class GrowKV:
    """Full-attention KV cache: columns [0, n) hold the (left-padded) prompt then the generated tokens; unfilled
    columns are not ``valid``. ``n`` None: the step context gives the column (model-level decode, see StepContext)."""
    k: torch.Tensor  # [B, H, capacity, dh]
    v: torch.Tensor
    valid: torch.Tensor  # [B, capacity] bool
    n: Optional[int]

    def select(self, rows):
        return GrowKV(self.k.index_select(0, rows), self.v.index_select(0, rows), self.valid.index_select(0, rows), self.n)

    def reserve(self, extra: int) -> None:
        if self.n + extra <= self.k.shape[2]:
            return
        grow = max(self.k.shape[2], 64)  # amortised doubling
        self.k = F.pad(self.k, (0, 0, 0, grow))
        self.v = F.pad(self.v, (0, 0, 0, grow))
        self.valid = F.pad(self.valid, (0, grow), value=False)


class Attention(nn.Module):
    """Causal multi-head softmax attention with partial non-interleaved RoPE (§2.5, §4).

    ``window`` = W // 2 for REF ``SlidingAttention`` (query t sees keys t-window..t; flash-attn's
    ``window_size=(W//2, 0)``) or None for the full-attention baseline (flash_attn ``MHA``).
    ``Wqkv`` rows are ordered q | k | v, each (head, head_dim).
    """

    def __init__(self, d: int, num_heads: int, head_dim: int, rotary_dim: int, rotary_base: float,
                 softmax_scale: float, window: Optional[int], qkv_bias: bool = False, out_bias: bool = False):
        super().__init__()
        self.H, self.dh = num_heads, head_dim
        self.rotary_dim, self.rotary_base = rotary_dim, rotary_base
        self.scale, self.window = softmax_scale, window
        self.Wqkv = nn.Linear(d, 3 * num_heads * head_dim, bias=qkv_bias)
        self.out_proj = nn.Linear(num_heads * head_dim, d, bias=out_bias)

    def _qkv(self, h: torch.Tensor, ctx):
        q, k, v = self.Wqkv(h).unflatten(-1, (3, self.H, self.dh)).unbind(-3)
        if self.rotary_dim > 0:
            cos, sin = ctx.rope(self.rotary_dim, self.rotary_base)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        return q, k, v

    def forward(self, h: torch.Tensor, ctx: SeqContext):
        B, T, _ = h.shape
        q, k, v = (t.transpose(1, 2) for t in self._qkv(h, ctx))  # [B, H, T, dh]
        mask = ctx.attn_mask(self.window)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None, scale=self.scale)
        y = self.out_proj(o.transpose(1, 2).reshape(B, T, self.H * self.dh))
        state = self._init_state(k, v, ctx) if ctx.want_state else None
        return y, state

    def _init_state(self, k, v, ctx: SeqContext):
        B, _, T, _ = k.shape
        valid = ctx.mask if ctx.mask is not None else torch.ones(B, T, dtype=torch.bool, device=k.device)
        if self.window is None:
            return GrowKV(k.contiguous(), v.contiguous(), valid.clone(), T)
        R = self.window + 1
        if T < R:  # left-pad the window with empty slots
            k, v = F.pad(k, (0, 0, R - T, 0)), F.pad(v, (0, 0, R - T, 0))
            valid = F.pad(valid, (R - T, 0), value=False)
        k, v, valid = k[:, :, -R:], v[:, :, -R:], valid[:, -R:]
        # column j of the last-R block holds real position len - R + j -> slot (len + j) mod R
        length = ctx.positions[:, -1] + 1 if ctx.mask is None else ctx.mask.sum(-1)
        src = (torch.arange(R, device=k.device)[None, :] - length[:, None]) % R  # slot s <- column src[b, s]
        gather = src[:, None, :, None].expand(B, self.H, R, self.dh)
        return RingKV(k.gather(2, gather), v.gather(2, gather), valid.gather(1, src))

    def step(self, h: torch.Tensor, state, ctx: StepContext) -> torch.Tensor:
        B = h.shape[0]
        q, k, v = self._qkv(h, ctx)  # [B, H, dh]
        if self.window is None:
            if ctx.column is None:  # layer-level decode: a python-int column, buffers grown as needed
                state.reserve(1)
                slot = torch.full((B,), state.n, dtype=torch.long, device=h.device)
                state.n += 1
                kv_len = state.n
            else:  # model-level decode: the column is a device tensor (CUDA-graph safe), room reserved by HazyGPT
                slot, kv_len = ctx.column, ctx.kv_len
        else:  # ring of window + 1 slots, slot = position mod (window + 1)
            slot, kv_len = ctx.positions % (self.window + 1), None
        index = slot.view(B, 1, 1, 1).expand(B, self.H, 1, self.dh)
        state.k.scatter_(2, index, k.unsqueeze(2).to(state.k.dtype))
        state.v.scatter_(2, index, v.unsqueeze(2).to(state.v.dtype))
        state.valid.scatter_(1, slot[:, None], True)
        keys, values, valid = state.k, state.v, state.valid
        if kv_len is not None:  # the host knows how many columns are filled: attend over those only
            keys, values, valid = keys[:, :, :kv_len], values[:, :, :kv_len], valid[:, :kv_len]
        o = F.scaled_dot_product_attention(q.unsqueeze(2), keys.to(q.dtype), values.to(q.dtype),
                                           attn_mask=valid[:, None, None, :], scale=self.scale)
        return self.out_proj(o.reshape(B, self.H * self.dh))
