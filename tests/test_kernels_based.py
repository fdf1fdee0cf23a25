"""CPU tests of the Based / JRT-RNN PyTorch references (kernels/based/reference.py) against naive
quadratic forms written out here, in float64 (reference-models.md §10 items 1, 2, 4, 8, 12)."""
import math

import pytest
import torch

from jrt_eval.kernels.based import (
    BasedState,
    based_prefill,
    based_step,
    pla_prefill,
)
from jrt_eval.kernels.based import reference as R

F64 = torch.float64


def naive_based(q, k, v, key_mask=None, eps=R.DEFAULT_EPS, init_kv=None):
    """Position-by-position loop: y_t = Σ_{s≤t, mask} κ v / (Σ κ + ε), κ = 1 + s + s²/2, s = q·k/√f.
    ``init_kv`` = (k0 [B, M, H, f], v0, mask0 [B, M]) keys/values every position also sees."""
    B, T, H, f = q.shape
    out = torch.zeros(B, T, H, v.shape[-1], dtype=F64)
    for b in range(B):
        for h in range(H):
            for t in range(T):
                num = torch.zeros(v.shape[-1], dtype=F64)
                den = 0.0
                keys = [(k[b, s, h], v[b, s, h]) for s in range(t + 1)
                        if key_mask is None or key_mask[b, s]]
                if init_kv is not None:
                    k0, v0, m0 = init_kv
                    keys += [(k0[b, s, h], v0[b, s, h]) for s in range(k0.shape[1]) if m0[b, s]]
                for kk, vv in keys:
                    sc = float(q[b, t, h] @ kk) / math.sqrt(f)
                    kap = 1 + sc + sc * sc / 2
                    num += kap * vv
                    den += kap
                out[b, t, h] = num / (den + eps)
    return out


def rand(*shape):
    return torch.randn(*shape, dtype=F64)


def left_pad_mask(B, T, pads):
    m = torch.ones(B, T, dtype=torch.bool)
    for b, p in enumerate(pads):
        m[b, :p] = False
    return m


# ------------------------------------------------------------------------------- feature map
@pytest.mark.parametrize("f", [16, 5])
def test_feature_maps_give_taylor_kernel(f):
    x, y = rand(7, f), rand(9, f)
    s = x @ y.T / math.sqrt(f)
    want = 1 + s + s * s / 2
    for compact in (True, False):
        phx, phy = R.taylor_features(x, compact), R.taylor_features(y, compact)
        assert phx.shape[-1] == R.feature_dim(f, compact)
        torch.testing.assert_close(phx @ phy.T, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(R.taylor_kernel(x, y), want, rtol=1e-12, atol=1e-12)
    assert R.feature_dim(16) == 153 and R.feature_dim(16, compact=False) == 273


# ------------------------------------------------------------------------------- Based
def test_quadratic_matches_naive_loop():
    B, T, H, f, dv = 2, 9, 2, 16, 5
    q, k, v = rand(B, T, H, f), rand(B, T, H, f), rand(B, T, H, dv)
    mask = left_pad_mask(B, T, [0, 3])
    mask[0, 4] = False
    torch.testing.assert_close(R.based_attention_quadratic(q, k, v, mask), naive_based(q, k, v, mask),
                               rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("T", [1, 2, 3, 7, 65, 257])
@pytest.mark.parametrize("chunk", [16, 64])
@pytest.mark.parametrize("mask_kind", [None, "left", "random"])
def test_chunked_matches_quadratic(T, chunk, mask_kind):
    torch.manual_seed(T * 7 + chunk)
    B, H, f, dv = 3, 2, 16, 8
    q, k, v = rand(B, T, H, f), rand(B, T, H, f), rand(B, T, H, dv)
    mask = None
    if mask_kind == "left":
        mask = left_pad_mask(B, T, [0, T // 2, T - 1])
    elif mask_kind == "random":
        mask = torch.rand(B, T) > 0.3
    o, st = R.based_attention_chunked(q, k, v, key_mask=mask, output_final_state=True, chunk_size=chunk)
    torch.testing.assert_close(o, R.based_attention_quadratic(q, k, v, mask), rtol=1e-10, atol=1e-12)
    want = R.state_from_keys(k, v, mask)
    torch.testing.assert_close(st.S, want.S, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(st.z, want.z, rtol=1e-10, atol=1e-10)
    assert st.S.shape == (B, H, 153, dv) and st.z.shape == (B, H, 153)


def test_initial_state_acts_as_preceding_keys():
    torch.manual_seed(1)
    B, M, T, H, f, dv = 2, 11, 23, 2, 16, 4
    k0, v0 = rand(B, M, H, f), rand(B, M, H, dv)
    q, k, v = rand(B, T, H, f), rand(B, T, H, f), rand(B, T, H, dv)
    init = R.state_from_keys(k0, v0)
    o, _ = R.based_attention_chunked(q, k, v, initial_state=init, chunk_size=8)
    # the same thing as a causal run over [prefix; sequence], read on the sequence part
    qq = torch.cat([rand(B, M, H, f), q], 1)
    full = R.based_attention_quadratic(qq, torch.cat([k0, k], 1), torch.cat([v0, v], 1))
    torch.testing.assert_close(o, full[:, M:], rtol=1e-10, atol=1e-12)
    # the caller's state is not modified
    torch.testing.assert_close(init.S, R.state_from_keys(k0, v0).S)


def test_left_padding_is_invisible():
    """Real-token outputs of a left-padded row equal those of the row alone (§8, §10.12)."""
    torch.manual_seed(2)
    T, H, f, dv, pad = 19, 2, 16, 6, 5
    q, k, v = rand(1, T, H, f), rand(1, T, H, f), rand(1, T, H, dv)
    alone = R.based_attention_chunked(q, k, v, chunk_size=4)[0]
    qp, kp, vp = (torch.cat([rand(1, pad, H, x.shape[-1]) * 9, x], 1) for x in (q, k, v))
    mask = left_pad_mask(1, T + pad, [pad])
    padded, st = R.based_attention_chunked(qp, kp, vp, key_mask=mask, output_final_state=True, chunk_size=4)
    torch.testing.assert_close(padded[:, pad:], alone, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(st.S, R.state_from_keys(k, v).S, rtol=1e-10, atol=1e-10)


# ------------------------------------------------------------------------------- PLA
def pla_case(B, T, H, f, dv, M, pads):
    q, k, v = rand(B, T, H, f), rand(B, T, H, f), rand(B, T, H, dv)
    ke, ve = rand(B, T, H, f), rand(B, T, H, dv)
    key_mask = left_pad_mask(B, T, pads)
    pos = torch.cumsum(key_mask.long(), 1) - 1  # real-token index
    enc_mask = key_mask & (pos < M)
    return q, k, v, ke, ve, enc_mask, key_mask


@pytest.mark.parametrize("T,M", [(9, 16), (16, 16), (37, 16), (20, 0)])
def test_pla_chunked_matches_quadratic_and_naive(T, M):
    torch.manual_seed(T + M)
    B, H, f, dv = 2, 2, 16, 5
    q, k, v, ke, ve, enc, km = pla_case(B, T, H, f, dv, M, [0, 4])
    quad = R.pla_attention_quadratic(q, k, v, ke, ve, enc, key_mask=km)
    o, st = R.pla_attention_chunked(q, k, v, ke, ve, enc, key_mask=km, output_final_state=True, chunk_size=8)
    torch.testing.assert_close(o, quad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(quad, naive_based(q, k, v, km, init_kv=(ke, ve, enc)), rtol=1e-10, atol=1e-12)
    # final state = encoder state + decoder keys
    se, sd = R.state_from_keys(ke, ve, enc), R.state_from_keys(k, v, km)
    torch.testing.assert_close(st.S, se.S + sd.S, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(st.z, se.z + sd.z, rtol=1e-10, atol=1e-10)
    if M == 0:  # reduces to Based
        torch.testing.assert_close(o, R.based_attention_quadratic(q, k, v, km), rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------------------- decode
@pytest.mark.parametrize("n", [1, 2, 7])
def test_prefill_then_steps_equal_parallel(n):
    torch.manual_seed(n)
    B, H, f, dv, steps = 2, 3, 16, 4, 5
    T = n + steps
    q, k, v = rand(B, T, H, f), rand(B, T, H, f), rand(B, T, H, dv)
    full = R.based_attention_quadratic(q, k, v)
    o, st = R.based_attention_chunked(q[:, :n], k[:, :n], v[:, :n], output_final_state=True, chunk_size=4)
    torch.testing.assert_close(o, full[:, :n], rtol=1e-10, atol=1e-12)
    for t in range(n, T):
        y = R.based_decode_step(q[:, t], k[:, t], v[:, t], st)
        torch.testing.assert_close(y, full[:, t], rtol=1e-10, atol=1e-12)


def test_double_add_quirk():
    torch.manual_seed(3)
    B, H, f, dv = 1, 2, 16, 3
    st = R.state_from_keys(rand(B, 4, H, f), rand(B, 4, H, dv))
    S0, z0 = st.S.clone(), st.z.clone()
    q, k, v = rand(B, H, f), rand(B, H, f), rand(B, H, dv)
    R.based_decode_step(q, k, v, st, double_add_kv=True)
    phk = R.taylor_features(k)
    torch.testing.assert_close(st.S, S0 + 2 * phk[..., None] * v[..., None, :])
    torch.testing.assert_close(st.z, z0 + phk)


# ------------------------------------------------------------------------------- dispatch
def test_dispatch_on_cpu_uses_reference(monkeypatch):
    torch.manual_seed(4)
    B, T, H, f, dv = 1, 10, 2, 16, 4
    q, k, v = rand(B, T, H, f).float(), rand(B, T, H, f).float(), rand(B, T, H, dv).float()
    o, st = based_prefill(q, k, v, output_final_state=True)
    want, wst = R.based_attention_chunked(q, k, v, output_final_state=True)
    assert torch.equal(o, want) and torch.equal(st.S, wst.S)
    monkeypatch.setenv("JRT_EVAL_KERNELS", "reference")
    o2, _ = based_prefill(q, k, v, impl=None)
    assert torch.equal(o2, want)
    enc = torch.zeros(B, T, dtype=torch.bool)
    enc[:, :4] = True
    o3, _ = pla_prefill(q, k, v, k, v, enc)
    assert torch.equal(o3, R.pla_attention_chunked(q, k, v, k, v, enc)[0])
    s = BasedState(st.S.clone(), st.z.clone())
    y = based_step(q[:, 0], k[:, 0], v[:, 0], s)
    assert torch.equal(y, R.based_decode_step(q[:, 0], k[:, 0], v[:, 0], BasedState(st.S.clone(), st.z.clone())))
