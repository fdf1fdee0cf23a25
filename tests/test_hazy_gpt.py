"""hazyresearch GPT backbone (Based, JRT-RNN, attention baseline): layer math, decoding, loading, padding.

reference-models.md §10 items 1-9, 12, 13. The references below are written out independently
(REF's 273-wide feature map, loops over cos/sin, explicit softmax), not with the code under test.
"""
import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F

from jrt_eval.kernels.based import taylor_features
from jrt_eval.model_adapters import hazy_gpt
from jrt_eval.model_adapters.base import greedy_generate, left_pad, positions_from_mask
from jrt_eval.model_adapters.hazy_gpt import detect_family, load_model, write_tiny_checkpoint
from jrt_eval.model_adapters.hazy_layers import (
    Attention, BaseConv, GatedMLP, LinearAttention, PrefixLinearAttention, SeqContext, StepContext,
    apply_rope, rope_cos_sin,
)
from jrt_eval.model_adapters.hub import CheckpointError

D64 = torch.float64


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors gain nothing from intra-op threads, and on a shared 2-core box OpenMP spinning
    makes this file 5x slower under load; restored for the other modules."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ----------------------------------------------------------------------------------- references
def ref_taylor(x, scale_dim=None):
    """REF TaylorExp: [1, x / s^¼, vec(x xᵀ) / (√2 √s)], s = scale_dim (default: feature dim)."""
    s = x.shape[-1] if scale_dim is None else scale_dim
    x2 = (x.unsqueeze(-1) * x.unsqueeze(-2)).flatten(-2) / math.sqrt(2)
    return torch.cat([torch.ones_like(x[..., :1]), x / s ** 0.25, x2 / math.sqrt(s)], -1)


def heads(x, H):  # [B, T, H*e] -> [B, H, T, e]
    return x.unflatten(-1, (H, -1)).transpose(1, 2)


def merge(y):  # [B, H, T, e] -> [B, T, H*e]
    return y.transpose(1, 2).flatten(-2)


def ref_based_layer(sd, h, H, eps=1e-12, scale_dim=None):
    """REF LinearAttention 'quadratic': tril(φ(q)φ(k)ᵀ) v / rowsum, then out_proj."""
    q, k, v = (heads(h @ sd[f"proj_{n}.weight"].T, H) for n in "qkv")
    A = (ref_taylor(q, scale_dim) @ ref_taylor(k, scale_dim).transpose(-1, -2)).tril()
    return merge(A @ v / (A.sum(-1, keepdim=True) + eps)) @ sd["out_proj.weight"].T


def ref_pla_layer(sd, h, H, M, eps=1e-12):
    """§3.2: y_t = [Σ_{s≤t} κ(q_t,k_s)v_s + Σ_{s<M'} κ(q_t,kᵉ_s)vᵉ_s] / [Σ κ + Σ κᵉ + ε], M' = min(M, T)."""
    T = h.shape[1]
    Mp = min(M, T)
    q, k, v = (heads(h @ sd[f"proj_{n}.weight"].T, H) for n in "qkv")
    ke, ve = heads(h[:, :Mp] @ sd["proj_k_enc.weight"].T, H), heads(h[:, :Mp] @ sd["proj_v_enc.weight"].T, H)
    fq = ref_taylor(q)
    causal = (fq @ ref_taylor(k).transpose(-1, -2)).tril()
    enc = fq @ ref_taylor(ke).transpose(-1, -2)
    num = causal @ v + enc @ ve
    den = causal.sum(-1, keepdim=True) + enc.sum(-1, keepdim=True) + eps
    return merge(num / den) @ sd["out_proj.weight"].T


def ref_rope(x, positions, rotary_dim, base=10000.0):
    """Straightforward loops: channel pairs (i, i + n), n = ceil(dim/2), rotated by pos·inv_freq_i.
    inv_freq and the angle are fp32 as in flash-attn's RotaryEmbedding (what the checkpoints saw)."""
    n = (rotary_dim + 1) // 2
    inv_freq = 1.0 / (base ** (torch.arange(0, rotary_dim, 2, dtype=torch.float32) / rotary_dim))
    assert len(inv_freq) == n
    out = x.clone()
    B, T = positions.shape
    for b in range(B):
        for t in range(T):
            p = torch.tensor(float(positions[b, t]), dtype=torch.float32)
            for i in range(n):
                a = float(p * inv_freq[i])  # fp32 product
                c, s = math.cos(a), math.sin(a)
                x1, x2 = x[b, t, ..., i], x[b, t, ..., i + n]
                out[b, t, ..., i] = x1 * c - x2 * s
                out[b, t, ..., i + n] = x2 * c + x1 * s
    return out


def ref_attention(layer, h, window, rotary_dim, key_mask=None):
    """Explicit softmax attention per query over keys s with t - window <= s <= t (real keys only)."""
    B, T, _ = h.shape
    H, dh = layer.H, layer.dh
    qkv = (h @ layer.Wqkv.weight.T).unflatten(-1, (3, H, dh))
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    mask = torch.ones(B, T, dtype=torch.bool) if key_mask is None else key_mask
    pos = positions_from_mask(None if key_mask is None else key_mask.long(), B, T, "cpu")
    if rotary_dim:
        q, k = ref_rope(q, pos, rotary_dim), ref_rope(k, pos, rotary_dim)
    out = torch.zeros(B, T, H, dh, dtype=h.dtype)
    for b in range(B):
        for t in range(T):
            keys = [s for s in range(T) if s <= t and (window is None or t - s <= window) and mask[b, s]]
            if not keys:
                continue
            scores = torch.einsum("hd,shd->hs", q[b, t], k[b, keys]) * dh ** -0.5
            out[b, t] = torch.einsum("hs,shd->hd", scores.softmax(-1), v[b, keys])
    return out.flatten(-2) @ layer.out_proj.weight.T


def rand_sd(shapes, seed=0, dtype=D64):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=g, dtype=dtype) / math.sqrt(s[-1] if len(s) > 1 else 1) for k, s in shapes.items()}


def ctx_for(B, T, mask=None, want_state=False, encoder_limit=None):
    return SeqContext(mask, positions_from_mask(mask, B, T, "cpu"), want_state, encoder_limit)


def left_padded(h, pad, seed=5):
    """Prepend ``pad`` random (garbage) rows; returns (padded h, mask)."""
    g = torch.Generator().manual_seed(seed)
    junk = 3 * torch.randn(h.shape[0], pad, h.shape[2], generator=g, dtype=h.dtype)
    mask = torch.cat([torch.zeros(h.shape[0], pad, dtype=torch.bool), torch.ones(h.shape[:2], dtype=torch.bool)], 1)
    return torch.cat([junk, h], 1), mask


# ----------------------------------------------------------------------------------- 1. feature map
def test_feature_map_identity_and_scale_dim():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 9, 16, generator=g, dtype=D64), torch.randn(2, 9, 16, generator=g, dtype=D64)
    s = (q * k).sum(-1) / 4.0
    want = 1 + s + s * s / 2
    assert ref_taylor(q).shape[-1] == 273 and taylor_features(q).shape[-1] == 153
    torch.testing.assert_close((ref_taylor(q) * ref_taylor(k)).sum(-1), want, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close((taylor_features(q) * taylor_features(k)).sum(-1), want, rtol=1e-13, atol=1e-13)
    # TaylorExp(input_dim=16, scale_dim=32) == compact map of q·(16/32)^¼: the layers' qk_scale
    c = (16 / 32) ** 0.25
    torch.testing.assert_close((taylor_features(c * q) * taylor_features(c * k)).sum(-1),
                               (ref_taylor(q, 32) * ref_taylor(k, 32)).sum(-1), rtol=1e-13, atol=1e-13)


# ----------------------------------------------------------------------------------- 2-3. Based layer
def la_shapes(d, H, f, dv):
    return {"proj_q.weight": (H * f, d), "proj_k.weight": (H * f, d), "proj_v.weight": (H * dv, d),
            "out_proj.weight": (d, H * dv)}


@pytest.mark.parametrize("scale_dim", [None, 32])
def test_based_layer_from_ref_state_dict_matches_quadratic_form(scale_dim):
    d, H, f, dv, T = 24, 2, 16, 12, 70  # T crosses the 64-token chunk of the kernels' reference
    sd = rand_sd(la_shapes(d, H, f, dv))
    layer = LinearAttention(d, H, f, dv, eps=1e-12, qk_scale=(f / (scale_dim or f)) ** 0.25).double()
    layer.load_state_dict(sd, strict=True)
    h = torch.randn(2, T, d, dtype=D64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y, state = layer(h, ctx_for(2, T, want_state=True))
        want = ref_based_layer(sd, h, H, scale_dim=scale_dim)
        torch.testing.assert_close(y, want, rtol=1e-10, atol=1e-10)
        # the final state reads out Σ κ(x, k_s) v_s and Σ κ(x, k_s) for any query x
        x = torch.randn(2, H, f, dtype=D64)
        c = layer.qk_scale
        k = heads(h @ sd["proj_k.weight"].T, H)
        v = heads(h @ sd["proj_v.weight"].T, H)
        kappa = (ref_taylor(x, scale_dim).unsqueeze(2) * ref_taylor(k, scale_dim)).sum(-1)  # [B, H, T]
        phi = taylor_features(c * x)
        torch.testing.assert_close(torch.einsum("bhD,bhDe->bhe", phi, state.S), torch.einsum("bht,bhte->bhe", kappa, v))
        torch.testing.assert_close(torch.einsum("bhD,bhD->bh", phi, state.z), kappa.sum(-1))
        # left padding: garbage rows before the prompt change nothing
        hp, mask = left_padded(h, 9)
        yp, _ = layer(hp, ctx_for(2, T + 9, mask))
        torch.testing.assert_close(yp[:, 9:], want, rtol=1e-10, atol=1e-10)


def test_based_step_and_reference_quirk_double_add():
    d, H, f, dv, T, n = 16, 2, 8, 8, 9, 5
    sd = rand_sd(la_shapes(d, H, f, dv), seed=3)
    h = torch.randn(1, T, d, dtype=D64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        full = ref_based_layer(sd, h, H)
        for quirk in (False, True):
            layer = LinearAttention(d, H, f, dv, eps=1e-12, double_add_kv=quirk).double()
            layer.load_state_dict(sd)
            _, state = layer(h[:, :n], ctx_for(1, n, want_state=True))
            steps = torch.stack([layer.step(h[:, t], state, None) for t in range(n, T)], 1)
            if not quirk:
                torch.testing.assert_close(steps, full[:, n:], rtol=1e-10, atol=1e-10)
                continue
            # REF recurrent_forward: S += 2 φ(k)vᵀ, z += φ(k) for every decoded token
            q, k, v = (heads(h @ sd[f"proj_{c}.weight"].T, H) for c in "qkv")
            fq, fk = ref_taylor(q), ref_taylor(k)
            S = fk[:, :, :n].transpose(-1, -2) @ v[:, :, :n]
            z = fk[:, :, :n].sum(2)
            for j, t in enumerate(range(n, T)):
                S = S + 2 * fk[:, :, t, :, None] * v[:, :, t, None, :]
                z = z + fk[:, :, t]
                y = (fq[:, :, t, :, None] * S).sum(-2) / ((fq[:, :, t] * z).sum(-1, keepdim=True) + 1e-12)
                torch.testing.assert_close(steps[:, j], y.flatten(-2) @ sd["out_proj.weight"].T, rtol=1e-10, atol=1e-10)
            assert (steps - full[:, n:]).abs().max() > 1e-3  # the quirk really changes the outputs


# ----------------------------------------------------------------------------------- 4. PLA
def pla_layer(d, H, f, dv, M, seed=0):
    sd = rand_sd({**la_shapes(d, H, f, dv), "proj_k_enc.weight": (H * f, d), "proj_v_enc.weight": (H * dv, d)}, seed)
    layer = PrefixLinearAttention(d, H, f, dv, eps=1e-12, enc_length=M).double()
    layer.load_state_dict(sd, strict=True)
    return layer, sd


@pytest.mark.parametrize("T", [9, 16, 23])  # T < M, T = M, T > M
def test_pla_matches_quadratic_formula(T):
    d, H, f, dv, M = 16, 2, 8, 8, 16
    layer, sd = pla_layer(d, H, f, dv, M)
    h = torch.randn(2, T, d, dtype=D64, generator=torch.Generator().manual_seed(T))
    with torch.no_grad():
        y, _ = layer(h, ctx_for(2, T))
        want = ref_pla_layer(sd, h, H, M)
        torch.testing.assert_close(y, want, rtol=1e-10, atol=1e-10)
        # padding: M' counts real tokens, so a padded row reads the same prefix
        hp, mask = left_padded(h, 7)
        yp, _ = layer(hp, ctx_for(2, T + 7, mask))
        torch.testing.assert_close(yp[:, 7:], want, rtol=1e-10, atol=1e-10)
        # an encoder limit (loglikelihood: context only) equals a shorter enc_length
        limited, _ = layer(h, ctx_for(2, T, encoder_limit=torch.tensor([5, 5])))
        torch.testing.assert_close(limited, ref_pla_layer(sd, h, H, 5), rtol=1e-10, atol=1e-10)
        # decode: prefill n tokens, step the rest == parallel with the encoder fixed to min(M, n)
        n = 5
        _, state = layer(h[:, :n], ctx_for(2, n, want_state=True))
        steps = torch.stack([layer.step(h[:, t], state, None) for t in range(n, T)], 1)
        fixed, _ = layer(h, ctx_for(2, T, encoder_limit=torch.tensor([n, n])))
        torch.testing.assert_close(steps, fixed[:, n:], rtol=1e-10, atol=1e-10)
        assert (steps - y[:, n:]).abs().max() > 1e-4  # re-running the parallel form would differ


def test_pla_with_zero_encoder_is_based():
    d, H, f, dv, T = 16, 2, 8, 8, 11
    layer, sd = pla_layer(d, H, f, dv, M=0)
    based = LinearAttention(d, H, f, dv, eps=1e-12).double()
    based.load_state_dict({k: v for k, v in sd.items() if "enc" not in k})
    h = torch.randn(1, T, d, dtype=D64)
    with torch.no_grad():
        torch.testing.assert_close(layer(h, ctx_for(1, T))[0], based(h, ctx_for(1, T))[0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(layer(h, ctx_for(1, T))[0], ref_based_layer(sd, h, H), rtol=1e-10, atol=1e-10)


# ----------------------------------------------------------------------------------- 5. BaseConv
@pytest.mark.parametrize("k", [3, 4])
def test_baseconv_vs_conv1d_decode_and_bias_trap(k):
    d, di, T = 8, 12, 7
    g = torch.Generator().manual_seed(k)
    layer = BaseConv(d, di, k, bias=True).double()
    sd = {n: torch.randn(p.shape, generator=g, dtype=D64) for n, p in layer.state_dict().items()}
    layer.load_state_dict(sd, strict=True)
    assert set(sd) == {"in_proj.weight", "in_proj.bias", "conv.conv.weight", "out_proj.weight", "out_proj.bias"}
    h = torch.randn(2, T, d, generator=g, dtype=D64)
    u = h @ sd["in_proj.weight"].T + sd["in_proj.bias"]
    u1, u2 = u[..., :di], u[..., di:]
    conv = F.conv1d(u1.transpose(1, 2), sd["conv.conv.weight"], padding=k - 1, groups=di)[..., :T].transpose(1, 2)
    w = sd["conv.conv.weight"][:, 0]  # explicit taps: w[:, k-1] multiplies the current token
    loops = torch.stack([sum(w[:, j] * u1[:, t - (k - 1) + j] for j in range(k) if t - (k - 1) + j >= 0)
                         for t in range(T)], 1)
    torch.testing.assert_close(conv, loops)
    want = (F.silu(conv) * u2) @ sd["out_proj.weight"].T + sd["out_proj.bias"]
    with torch.no_grad():
        y, _ = layer(h, ctx_for(2, T))
        torch.testing.assert_close(y, want, rtol=1e-12, atol=1e-12)
        for n in range(1, T):  # every prefix length, including n < k - 1
            _, state = layer(h[:, :n], ctx_for(2, n, want_state=True))
            steps = torch.stack([layer.step(h[:, t], state, None) for t in range(n, T)], 1)
            torch.testing.assert_close(steps, want[:, n:], rtol=1e-12, atol=1e-12)
        # padding trap: masking u1 after in_proj is exact; zeroing only the input h lets the bias in
        hp, mask = left_padded(h, 4)
        yp, state = layer(hp, ctx_for(2, T + 4, mask, want_state=True))
        torch.testing.assert_close(yp[:, 4:], want, rtol=1e-12, atol=1e-12)
        naive, _ = layer(hp * mask[..., None], ctx_for(2, T + 4))
        assert (naive[:, 4:] - want).abs().max() > 1e-3


# ----------------------------------------------------------------------------------- 6. RoPE, SWA, MHA
@pytest.mark.parametrize("head_dim,rotary_dim", [(16, 16), (16, 8), (70, 35)])
def test_rope_matches_cos_sin_loops(head_dim, rotary_dim):
    x = torch.randn(2, 5, 3, head_dim, dtype=D64)
    pos = torch.tensor([[0, 1, 2, 3, 4], [0, 0, 7, 100, 2047]])
    cos, sin = rope_cos_sin(pos, rotary_dim, 10000.0)
    got = apply_rope(x, cos, sin)
    torch.testing.assert_close(got, ref_rope(x, pos, rotary_dim), rtol=1e-12, atol=1e-12)
    rotated = 2 * ((rotary_dim + 1) // 2)  # odd 35 -> 18 frequencies -> 36 channels
    assert rotated == {16: 16, 8: 8, 35: 36}[rotary_dim]
    assert torch.equal(got[..., rotated:], x[..., rotated:])
    assert (got[:, 1:, :, rotated - 1] - x[:, 1:, :, rotated - 1]).abs().max() > 1e-3


def attn_layer(d, H, rotary_dim, window, seed=0):
    layer = Attention(d, H, d // H, rotary_dim, 10000.0, (d // H) ** -0.5, window).double()
    g = torch.Generator().manual_seed(seed)
    layer.load_state_dict({n: torch.randn(p.shape, generator=g, dtype=D64) / math.sqrt(p.shape[1])
                           for n, p in layer.state_dict().items()}, strict=True)
    return layer


@pytest.mark.parametrize("window", [1, 4, 128, None])
@pytest.mark.parametrize("T", [3, 9, 140])
def test_attention_matches_explicit_softmax(window, T):
    if T == 140 and window in (1, 4):
        T = 20  # keep the python reference fast; 140 > window + 1 is exercised with window 128
    layer = attn_layer(16, 2, 8, window, seed=T)
    h = torch.randn(2, T, 16, dtype=D64, generator=torch.Generator().manual_seed(T))
    with torch.no_grad():
        y, _ = layer(h, ctx_for(2, T))
        want = ref_attention(layer, h, window, 8)
        torch.testing.assert_close(y, want, rtol=1e-9, atol=1e-9)
        if T == 9:  # left padding: the window counts real tokens, positions start at 0
            hp, mask = left_padded(h, 5)
            yp, _ = layer(hp, ctx_for(2, T + 5, mask))
            torch.testing.assert_close(yp[:, 5:], want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("window", [1, 4, None])
def test_attention_decode_matches_forward(window):
    layer = attn_layer(16, 2, 8, window, seed=1)
    lens, T = [1, 3, 10], 12
    g = torch.Generator().manual_seed(2)
    hs = [torch.randn(1, T, 16, generator=g, dtype=D64) for _ in lens]
    with torch.no_grad():
        for n, h in zip(lens, hs):  # each row alone
            full, _ = layer(h, ctx_for(1, T))
            _, state = layer(h[:, :n], ctx_for(1, n, want_state=True))
            for t in range(n, T):
                y = layer.step(h[:, t], state, StepContext(torch.tensor([t])))
                torch.testing.assert_close(y, full[:, t], rtol=1e-10, atol=1e-10)
        # a left-padded batch of the three prompts, decoded together
        width = max(lens)
        prompt = torch.cat([F.pad(h[:, :n], (0, 0, width - n, 0)) for n, h in zip(lens, hs)])
        mask = torch.stack([torch.arange(width) >= width - n for n in lens])
        _, state = layer(prompt, ctx_for(3, width, mask, want_state=True))
        pos = torch.tensor(lens)
        for j in range(T - width):
            x = torch.cat([h[:, n + j] for n, h in zip(lens, hs)])
            y = layer.step(x, state, StepContext(pos + j))
            want = torch.cat([layer(h[:, :n + j + 1], ctx_for(1, n + j + 1))[0][:, -1] for n, h in zip(lens, hs)])
            torch.testing.assert_close(y, want, rtol=1e-10, atol=1e-10)


def test_full_attention_cache_grows_past_its_capacity():
    layer = attn_layer(16, 2, 8, None, seed=3)
    h = torch.randn(1, 140, 16, dtype=D64)
    with torch.no_grad():
        full, _ = layer(h, ctx_for(1, 140))
        _, state = layer(h[:, :3], ctx_for(1, 3, want_state=True))
        for t in range(3, 140):
            y = layer.step(h[:, t], state, StepContext(torch.tensor([t])))
        assert state.k.shape[2] >= 140 and state.n == 140
        torch.testing.assert_close(y, full[:, -1], rtol=1e-10, atol=1e-10)


# ----------------------------------------------------------------------------------- 7. MLP
def test_swapped_swiglu_gate_is_second_half():
    d, m = 8, 24
    g = torch.Generator().manual_seed(0)
    sd = {"fc1.weight": torch.randn(2 * m, d, generator=g, dtype=D64), "fc2.weight": torch.randn(d, m, generator=g, dtype=D64)}
    mlp = GatedMLP(d, m).double()
    mlp.load_state_dict(sd, strict=True)
    x = torch.randn(3, d, generator=g, dtype=D64)
    a = x @ sd["fc1.weight"].T
    a1, a2 = a[:, :m], a[:, m:]
    with torch.no_grad():
        torch.testing.assert_close(mlp(x), (a1 * F.silu(a2)) @ sd["fc2.weight"].T)
        assert (mlp(x) - (F.silu(a1) * a2) @ sd["fc2.weight"].T).abs().max() > 1e-2


# ----------------------------------------------------------------------------------- tiny checkpoints
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("hazy")
    return {fam: write_tiny_checkpoint(root / fam, fam, seed=0) for fam in ("based", "jrt_rnn", "attn")}


@pytest.fixture(scope="module")
def models(tiny):
    return {fam: load_model(str(path)) for fam, path in tiny.items()}


# ----------------------------------------------------------------------------------- 8. whole model decode
@pytest.mark.parametrize("family", ["based", "jrt_rnn", "attn"])
def test_recurrent_decode_matches_parallel_forward(models, family):
    model = models[family]
    T = 26
    ids = torch.randint(0, 50257, (2, T), generator=torch.Generator().manual_seed(7))
    worst = 0.0
    with torch.no_grad():
        for n in (1, 2, 5, 16, 20):  # n < conv kernel, n < M = 16, n = M, n > M
            enc = torch.tensor([n, n]) if family == "jrt_rnn" else None
            full = model(ids, encoder_lengths=enc)
            last, cache = model.prefill(ids[:, :n])
            got = [last] + [model.step(ids[:, t], cache) for t in range(n, T - 1)]
            diff = (torch.stack(got, 1) - full[:, n - 1:T - 1]).abs().max().item()
            worst = max(worst, diff)
            if family == "jrt_rnn" and n < 16:
                # without fixing the encoder, the parallel pass reads the later tokens too: different
                assert (torch.stack(got, 1) - model(ids)[:, n - 1:T - 1]).abs().max() > 1e-3
    assert worst < 1e-4, worst


# ----------------------------------------------------------------------------------- 9. loading
def test_roundtrip_and_config_values_reach_the_model(tiny, models):
    pattern = ["conv", "la", "swa", "conv", "la", "swa"]
    for fam, kinds, rows in (("based", pattern, 50264), ("jrt_rnn", [k.replace("la", "pla") for k in pattern], 50264),
                             ("attn", ["mha"] * 4, 50272)):
        model = models[fam]
        assert model.family == fam and model.vocab_rows == rows and model.max_length == 2048
        assert model.spec.kinds() == kinds and model.config["vocab_size"] == 50257
        assert detect_family(json.loads((tiny[fam] / "config.json").read_text())) == fam
        sd = torch.load(tiny[fam] / "pytorch_model.bin", weights_only=True)
        assert sd["model.train_metrics.num-tokens.count"].dtype == torch.int64
        assert sd["model.lm_head.weight"].data_ptr() == sd["model.transformer.embeddings.word_embeddings.weight"].data_ptr()
        mine = model.state_dict()
        assert set(mine) == {k[len("model."):] for k in sd if "metrics" not in k and "lm_head" not in k}
        assert all(torch.equal(v, sd["model." + k]) for k, v in mine.items())
        for block in model.transformer.layers:
            assert block.mlp.fc2.in_features == 256 and block.norm1.eps == 1e-5
    based, jrt, attn = (models[f].transformer.layers for f in ("based", "jrt_rnn", "attn"))
    assert based[0].mixer.conv.conv.weight.shape == (128, 1, 3)  # expand_proj 4 -> d_inner 2d, kernel 3
    assert (based[1].mixer.H, based[1].mixer.f, based[1].mixer.dv, based[1].mixer.eps) == (2, 8, 32, 1e-12)
    assert (based[2].mixer.window, based[2].mixer.rotary_dim, based[2].mixer.H) == (4, 16, 4)  # window_size 8 -> 4
    assert jrt[1].mixer.enc_length == 16 and (attn[0].mixer.window, attn[0].mixer.rotary_dim) == (None, 8)


def test_overridden_config_values_reach_the_model(tmp_path):
    path = write_tiny_checkpoint(
        tmp_path / "j", "jrt_rnn", seed=1, enc_length=5, layer_norm_epsilon=1e-6, rotary_emb_fraction=0.5,
        alt_mixer={"enc_length": 5, "feature_dim": 4, "eps": 1e-9}, alt_mixer_2={"window_size": 6},
        alt_mixer_layers=[0, 3], alt_mixer_2_layers=[3, 5])  # layer 3 in both lists: alt_mixer_2 wins
    model = load_model(str(path))
    assert model.spec.kinds() == ["pla", "conv", "conv", "swa", "conv", "swa"]
    pla, swa = model.transformer.layers[0].mixer, model.transformer.layers[3].mixer
    assert (pla.enc_length, pla.f, pla.eps, pla.proj_q.weight.shape) == (5, 4, 1e-9, (8, 64))
    assert (swa.window, swa.rotary_dim) == (3, 8) and model.transformer.ln_f.eps == 1e-6


def _rewrite(src, dst, config=None, weights=None):
    dst.mkdir()
    cfg = json.loads((src / "config.json").read_text())
    sd = torch.load(src / "pytorch_model.bin", weights_only=True)
    if config:
        config(cfg)
    if weights:
        weights(sd)
    (dst / "config.json").write_text(json.dumps(cfg))
    torch.save(sd, dst / "pytorch_model.bin")
    return str(dst)


ERRORS = {
    "missing key": (None, lambda sd: sd.pop("model.transformer.layers.3.mlp.fc1.weight"),
                    ["missing 1", "transformer.layers.3.mlp.fc1.weight"]),
    "unexpected key": (None, lambda sd: sd.__setitem__("model.transformer.layers.0.mixer.extra.weight", torch.zeros(2)),
                       ["unexpected 1", "transformer.layers.0.mixer.extra.weight"]),
    "shape mismatch": (None, lambda sd: sd.__setitem__("model.transformer.layers.1.mixer.proj_q.weight", torch.zeros(12, 64)),
                       ["transformer.layers.1.mixer.proj_q.weight (12, 64) (expected (16, 64))"]),
    "feature_dim vs weights": (lambda c: c["alt_mixer"].update(feature_dim=4), None, ["proj_q.weight (16, 64) (expected (8, 64))"]),
    "window kind": (lambda c: c.update(alt_mixer_2_layers=[1, 5]), None, ["unexpected", "mixer.Wqkv.weight"]),
    "mlp width": (lambda c: c.update(n_inner=300), None, ["MLP width 256", "512"]),
    "conv kernel": (lambda c: c["mixer"].update(kernel_size=4), None, ["kernel size 3", "config.json gives 4"]),
    "swa heads": (lambda c: c["alt_mixer_2"].update(num_heads=2), None, ["num_heads 2 contradicts n_head 4"]),
    "enc_length": (lambda c: c.update(enc_length=32), None, ["enc_length 16 contradicts the top-level enc_length 32"]),
    "no enc_length": (lambda c: (c.pop("enc_length"), c["alt_mixer"].pop("enc_length")), None, ["needs enc_length"]),
    "decay variant": (lambda c: c["alt_mixer"].update(use_decay_proj=True), None, ["unsupported Based variant"]),
    "unknown mixer": (lambda c: c["mixer"].update(_target_="zoology.mixers.hyena.Hyena"), None, ["unsupported mixer class"]),
    "missing n_layer": (lambda c: c.pop("n_layer"), None, ["n_layer"]),
    "n_layer type": (lambda c: c.update(n_layer="six"), None, ["n_layer must be an integer"]),
    "layer index": (lambda c: c.update(alt_mixer_layers=[1, 9]), None, ["outside 0..5"]),
    "activation": (lambda c: c.update(activation_function="gelu_new"), None, ["activation_function='gelu_new'"]),
    "untied head": (None, lambda sd: sd.__setitem__("model.lm_head.weight", sd["model.lm_head.weight"] + 1),
                    ["lm_head.weight differs"]),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_loader_names_what_is_wrong(tiny, tmp_path, case):
    config, weights, needles = ERRORS[case]
    path = _rewrite(tiny["jrt_rnn"], tmp_path / "bad", config, weights)
    with pytest.raises(CheckpointError) as err:
        load_model(path)
    for needle in needles:
        assert needle in str(err.value), (needle, str(err.value))


def test_loader_rejects_malformed_json_and_non_hazy_configs(tiny, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("{ not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_model(str(bad))
    (bad / "config.json").write_text(json.dumps({"d_model": 64, "n_layer": 2, "ssm_cfg": {}, "n_embd": 64}))
    with pytest.raises(CheckpointError, match="not a hazyresearch GPT config"):
        load_model(str(bad))
    (bad / "config.json").write_text((tiny["based"] / "config.json").read_text())
    with pytest.raises(CheckpointError, match="no weights"):
        load_model(str(bad))


def test_detect_family_on_other_configs():
    from transformers import GPT2Config

    assert detect_family(GPT2Config().to_dict()) is None  # stock GPT-2: no rms_norm, no mixers
    assert detect_family({"d_model": 768, "n_layer": 24, "ssm_cfg": {}, "n_embd": 768, "n_head": 12, "rms_norm": True}) is None
    assert detect_family({"model_type": "gla", "hidden_size": 2048, "num_hidden_layers": 24}) is None
    assert detect_family("not a dict") is None
    legacy = hazy_gpt.tiny_config("based", mixer={"_target_": "src.models.mixers.base_conv.BaseConvWithSiLU4"},
                                  alt_mixer_2={"_target_": "src.models.mixers.slide_fa2.SlidingsMHA"})
    assert detect_family(legacy) == "based"


def test_loader_accepts_the_format_variants(tiny, models, tmp_path):
    """No ``model.`` prefix / no metrics / legacy ``conv1`` names / head only under lm_head / RoPE inv_freq
    buffers / safetensors: all load to the same weights."""
    def variant(sd):
        for key in list(sd):
            value = sd.pop(key)
            if "metrics" in key:
                continue
            key = key[len("model."):].replace("mixer.conv.conv", "mixer.conv1.conv")
            if key != "transformer.embeddings.word_embeddings.weight":
                sd[key] = value
        sd["transformer.layers.2.mixer.rotary_emb.inv_freq"] = 1.0 / 10000 ** (torch.arange(0, 16, 2).float() / 16)

    path = _rewrite(tiny["based"], tmp_path / "v", None, variant)
    model = load_model(path)
    ref = models["based"].state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in model.state_dict().items())

    def wrong_freq(sd):
        sd["model.transformer.layers.2.mixer.rotary_emb.inv_freq"] = 1.0 / 500 ** (torch.arange(0, 16, 2).float() / 16)
    with pytest.raises(CheckpointError, match="rotary_emb.inv_freq does not match"):
        load_model(_rewrite(tiny["based"], tmp_path / "w", None, wrong_freq))

    from safetensors.torch import save_file

    st = tmp_path / "st"
    st.mkdir()
    (st / "config.json").write_text((tiny["attn"] / "config.json").read_text())
    save_file({k: v.contiguous() for k, v in models["attn"].state_dict().items()}, str(st / "model.safetensors"))
    ids = torch.randint(0, 50257, (1, 9))
    with torch.no_grad():
        assert torch.equal(load_model(str(st))(ids), models["attn"](ids))


def test_learned_position_embeddings_and_bf16(tmp_path):
    path = write_tiny_checkpoint(tmp_path / "pos", "based", seed=2, n_positions=40)
    model = load_model(str(path))
    ids = torch.randint(0, 50257, (2, 12), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        full = model(ids)
        last, cache = model.prefill(ids[:, :4])
        steps = torch.stack([last] + [model.step(ids[:, t], cache) for t in range(4, 11)], 1)
        torch.testing.assert_close(steps, full[:, 3:11], rtol=0, atol=1e-4)
        padded, mask = left_pad([ids[0, :7].tolist(), ids[1].tolist()], 0)
        torch.testing.assert_close(model(padded, mask)[0, -7:], full[0, :7], rtol=1e-6, atol=1e-5)
        # bf16 weights: same model up to bf16 rounding; decode runs
        half = load_model(str(path), dtype=torch.bfloat16)
        assert half.head_weight.dtype == torch.bfloat16
        rel = (half(ids) - full).abs().max() / full.abs().max()
        assert rel < 0.1, rel
        assert torch.isfinite(half.step(ids[:, 4], half.prefill(ids[:, :4])[1])).all()


# ----------------------------------------------------------------------------------- 12. padding / batches
@pytest.mark.parametrize("family", ["based", "jrt_rnn", "attn"])
def test_left_padded_batch_equals_each_row_alone(models, family):
    model = models[family]
    g = torch.Generator().manual_seed(11)
    seqs = [torch.randint(0, 50257, (n,), generator=g).tolist() for n in (5, 16, 23, 2, 17)]  # around M = 16
    ids, mask = left_pad(seqs, 50256)
    worst = 0.0
    with torch.no_grad():
        full = model(ids, mask)
        last, _ = model.prefill(ids, mask)
        for i, s in enumerate(seqs):
            alone = model(torch.tensor([s]))[0]
            torch.testing.assert_close(full[i, -len(s):], alone, rtol=1e-6, atol=1e-5)
            torch.testing.assert_close(last[i], alone[-1], rtol=1e-6, atol=1e-5)
            worst = max(worst, (full[i, -len(s):] - alone).abs().max().item(), (last[i] - alone[-1]).abs().max().item())
        batch = greedy_generate(model, ids, mask, 10, vocab_limit=50257).tokens
        single = [greedy_generate(model, torch.tensor([s]), None, 10, vocab_limit=50257).tokens[0] for s in seqs]
    assert batch == single
    assert worst <= 1e-5, worst
    # in fp64 the padded batch is the unpadded computation up to rounding: the fp32 gap is rounding only
    m64 = copy.deepcopy(model).double()
    with torch.no_grad():
        full = m64(ids, mask)
        for i, s in enumerate(seqs):
            torch.testing.assert_close(full[i, -len(s):], m64(torch.tensor([s]))[0], rtol=0, atol=1e-12)


def test_real_gpt2_tokenizer_drives_a_tiny_checkpoint(models, gpt2_tokenizer):
    model = models["jrt_rnn"]
    prompts = ["The capital of France is", "Just read twice: the quick brown fox jumps over the lazy dog. Again:"]
    seqs = [gpt2_tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    ids, mask = left_pad(seqs, gpt2_tokenizer.eos_token_id)
    with torch.no_grad():
        out = greedy_generate(model, ids, mask, 8, vocab_limit=len(gpt2_tokenizer)).tokens
        alone = [greedy_generate(model, torch.tensor([s]), None, 8, vocab_limit=len(gpt2_tokenizer)).tokens[0] for s in seqs]
    assert out == alone and all(0 <= t < len(gpt2_tokenizer) for row in out for t in row)
    assert all(isinstance(gpt2_tokenizer.decode(row), str) for row in out)


# ----------------------------------------------------------------------------------- 13. REF quirk
def test_reference_quirks_double_add_only_changes_based_decode(tiny, models):
    ids = torch.randint(0, 50257, (2, 12), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        for fam in ("based", "jrt_rnn"):
            plain, quirky = models[fam], load_model(str(tiny[fam]), reference_quirks=True)
            assert plain.reference_quirks is False
            a_last, a_cache = plain.prefill(ids[:, :6])
            b_last, b_cache = quirky.prefill(ids[:, :6])
            assert torch.equal(a_last, b_last)  # the first generated token comes from the prefill
            a = torch.stack([plain.step(ids[:, t], a_cache) for t in range(6, 12)], 1)
            b = torch.stack([quirky.step(ids[:, t], b_cache) for t in range(6, 12)], 1)
            if fam == "based":
                assert (a - b).abs().max() > 1e-3
            else:  # REF's PrefixLinearAttention adds once: nothing to reproduce
                assert torch.equal(a, b)
            assert greedy_generate(plain, ids, None, 1).tokens == greedy_generate(quirky, ids, None, 1).tokens
