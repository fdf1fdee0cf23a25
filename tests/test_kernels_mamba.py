"""kernels/mamba: the production PyTorch paths and the Triton kernels against the step-by-step references.

PyTorch paths run always (float64, odd lengths, lengths not multiple of any chunk, masks, initial states). The
Triton kernels run on CPU under ``TRITON_INTERPRET=1`` in a subprocess (skipped when triton is not installed);
on GPU they are checked by benchmarks/gpu_check_ssm.py.
"""
import textwrap

import pytest
import torch
import torch.nn.functional as F

from jrt_eval.kernels.mamba import causal_conv1d, conv_tail, gla_step, selective_state_update, ssd_step
from jrt_eval.kernels.mamba import reference as R
from jrt_eval.kernels.mamba import scan as S

from interpreted import run_interpreted, ulps_limit  # tests/interpreted.py


def gen(seed):
    return torch.Generator().manual_seed(seed)


def mask_for(b, T, pads):
    m = torch.ones(b, T, dtype=torch.long)
    for i, p in enumerate(pads):
        m[i, :p] = 0
    return m


@pytest.mark.parametrize("T", [1, 2, 3, 7, 65])
def test_selective_scan_torch_matches_reference(T):
    g = gen(T)
    b, d, n = 2, 10, 5
    x, dt, z = (torch.randn(b, T, d, generator=g, dtype=torch.float64) for _ in range(3))
    A = -torch.rand(d, n, generator=g, dtype=torch.float64) * 3
    B, C = (torch.randn(b, T, n, generator=g, dtype=torch.float64) for _ in range(2))
    D, db = torch.randn(d, generator=g, dtype=torch.float64), torch.randn(d, generator=g, dtype=torch.float64)
    h0 = torch.randn(b, d, n, generator=g, dtype=torch.float64)
    m = mask_for(b, T, [T // 2, 0])
    y_r, h_r = R.selective_scan_ref(x, dt, A, B, C, D, z, db, mask=m, initial_state=h0)
    y, h = S.selective_scan_torch(x, dt, A, B, C, D, z, db, mask=m, initial_state=h0, block=4)
    torch.testing.assert_close(y, y_r, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h, h_r, rtol=1e-12, atol=1e-12)


def test_masked_steps_are_neutral():
    """A masked (padded) step leaves the state exactly unchanged: left padding = no padding."""
    g = gen(1)
    b, T, d, n = 1, 9, 4, 3
    x, dt = torch.randn(b, T, d, generator=g, dtype=torch.float64), torch.randn(b, T, d, generator=g, dtype=torch.float64)
    A = -torch.rand(d, n, generator=g, dtype=torch.float64)
    B, C = torch.randn(b, T, n, generator=g, dtype=torch.float64), torch.randn(b, T, n, generator=g, dtype=torch.float64)
    y_pad, h_pad = R.selective_scan_ref(x, dt, A, B, C, mask=mask_for(1, T, [4]))
    y, h = R.selective_scan_ref(x[:, 4:], dt[:, 4:], A, B[:, 4:], C[:, 4:])
    torch.testing.assert_close(y_pad[:, 4:], y, rtol=0, atol=0)
    torch.testing.assert_close(h_pad, h, rtol=0, atol=0)


def test_selective_scan_reference_equals_transformers_fallback():
    """Our reference and transformers' own PyTorch selective scan agree (same mamba_ssm semantics)."""
    from transformers.models.mamba import modeling_mamba as hf

    fn = getattr(hf.mamba_selective_scan, "__wrapped__", hf.mamba_selective_scan)
    g = gen(2)
    b, T, d, n = 2, 11, 6, 4
    x, dt, z = (torch.randn(b, T, d, generator=g) for _ in range(3))
    A = -torch.rand(d, n, generator=g)
    B, C = torch.randn(b, T, n, generator=g), torch.randn(b, T, n, generator=g)
    D, db = torch.randn(d, generator=g), torch.randn(d, generator=g)
    y_hf, h_hf = fn(x.transpose(1, 2), dt.transpose(1, 2), A, B.transpose(1, 2), C.transpose(1, 2), D=D,
                    z=z.transpose(1, 2), delta_bias=db, delta_softplus=True, return_last_state=True)
    y, h = R.selective_scan_ref(x, dt, A, B, C, D, z, db)
    torch.testing.assert_close(y_hf.transpose(1, 2), y.float(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(h_hf, h.float(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("T, chunk", [(1, 4), (2, 4), (3, 1), (7, 4), (65, 16), (65, 256), (33, 7)])
@pytest.mark.parametrize("groups", [1, 2])
def test_ssd_chunked_matches_sequential(T, chunk, groups):
    g = gen(T * 10 + chunk)
    b, H, P, N = 2, 4, 3, 5
    f64 = dict(generator=g, dtype=torch.float64)
    x, dt = torch.randn(b, T, H, P, **f64), torch.randn(b, T, H, **f64) - 1
    A = -torch.rand(H, **f64) * 4
    B, C = torch.randn(b, T, groups, N, **f64), torch.randn(b, T, groups, N, **f64)
    D, db, S0 = torch.randn(H, **f64), torch.randn(H, **f64), torch.randn(b, H, P, N, **f64)
    m = mask_for(b, T, [0, T - 1])
    for limit in [(0.0, float("inf")), (0.05, 0.5)]:
        y_r, s_r = R.ssd_sequential_ref(x, dt, A, B, C, D, db, dt_limit=limit, mask=m, initial_state=S0)
        y, s = S.ssd_chunked(x, dt, A, B, C, chunk, D=D, dt_bias=db, dt_limit=limit, mask=m, initial_state=S0)
        torch.testing.assert_close(y, y_r, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(s, s_r, rtol=1e-10, atol=1e-10)


def test_ssd_chunked_peak_memory_is_per_chunk():
    """The chunked SSD never materialises a [b, chunks, L, L, h, p] product: at 8 chunks its peak intermediate is
    a few [b, h, L, L] tensors (the transformers fallback would need ~h·p times more)."""
    b, T, H, P, N, L = 1, 8 * 128, 4, 64, 16, 128
    x, dt = torch.randn(b, T, H, P), torch.randn(b, T, H)
    A, B, C = -torch.rand(H), torch.randn(b, T, 1, N), torch.randn(b, T, 1, N)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        S.ssd_chunked(x, dt, A, B, C, L)
    biggest = max(e.cpu_memory_usage for e in prof.events())  # largest single allocation of one op call
    per_chunk, output = b * H * L * L * 4, b * T * H * P * 4
    assert 0 < biggest <= 2 * max(per_chunk, output), biggest
    assert biggest < b * (T // L) * L * L * H * P * 4 / 50  # the broadcast product: 128x the largest here


@pytest.mark.parametrize("T, chunk", [(1, 32), (2, 1), (45, 8), (70, 32)])
def test_gla_chunked_matches_recurrence(T, chunk):
    g = gen(T + chunk)
    b, H, K, V = 2, 3, 6, 5
    f64 = dict(generator=g, dtype=torch.float64)
    q, k, v = torch.randn(b, T, H, K, **f64), torch.randn(b, T, H, K, **f64), torch.randn(b, T, H, V, **f64)
    gk = F.logsigmoid(torch.randn(b, T, H, K, **f64) * 4)  # strong decays: no overflow with pairwise exps
    S0 = torch.randn(b, H, K, V, **f64)
    m = mask_for(b, T, [T // 3, 0])
    o_r, s_r = R.gla_recurrent_ref(q, k, v, gk, mask=m, initial_state=S0)
    o, s = S.gla_chunked(q, k, v, gk, mask=m, initial_state=S0, chunk_size=chunk)
    torch.testing.assert_close(o, o_r, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(s, s_r, rtol=1e-10, atol=1e-10)


def test_gla_gate_extremes_stay_finite():
    b, T, H, K, V = 1, 64, 1, 4, 4
    q, k, v = torch.randn(b, T, H, K), torch.randn(b, T, H, K), torch.randn(b, T, H, V)
    gk = torch.full((b, T, H, K), -30.0)  # exp(+30·32) would overflow a naive q·exp(b), k·exp(-b) split
    o, s = S.gla_chunked(q, k, v, gk, chunk_size=32)
    o_r, _ = R.gla_recurrent_ref(q.double(), k.double(), v.double(), gk.double())
    assert torch.isfinite(o).all()
    torch.testing.assert_close(o.double(), o_r, rtol=1e-5, atol=1e-5)


def test_causal_conv_and_tail():
    g = gen(3)
    x = torch.randn(2, 5, 6, generator=g, dtype=torch.float64)
    w, b = torch.randn(6, 4, generator=g, dtype=torch.float64), torch.randn(6, generator=g, dtype=torch.float64)
    torch.testing.assert_close(causal_conv1d(x, w, b), R.causal_conv1d_ref(x, w, b), rtol=1e-12, atol=1e-12)
    tail = conv_tail(x[:, :2], 4)  # shorter than the window: zeros in front
    assert tail.shape == (2, 6, 3) and torch.all(tail[..., 0] == 0) and torch.equal(tail[..., 1:], x[:, :2].transpose(1, 2))
    # continuing from the tail equals the convolution over the whole sequence
    cont = R.causal_conv1d_ref(x[:, 2:], w, b, initial=conv_tail(x[:, :2], 4))
    torch.testing.assert_close(cont, R.causal_conv1d_ref(x, w, b)[:, 2:], rtol=1e-12, atol=1e-12)


def test_step_dispatchers_torch_path():
    g = gen(4)
    b, d, n = 3, 7, 4
    st = torch.randn(b, d, n, generator=g)
    x, dt, z = (torch.randn(b, d, generator=g) for _ in range(3))
    A, B, C = -torch.rand(d, n, generator=g), torch.randn(b, n, generator=g), torch.randn(b, n, generator=g)
    D, db = torch.randn(d, generator=g), torch.randn(d, generator=g)
    ref_state = st.double().clone()
    y_r = R.selective_state_update_ref(ref_state, x, dt, A, B, C, D, z, db)
    y = selective_state_update(st, x, dt, A, B, C, D, z, db, backend="torch")
    torch.testing.assert_close(y.double(), y_r, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(st.double(), ref_state, rtol=1e-5, atol=1e-5)
    S0 = torch.randn(b, 2, 4, 5, generator=g)
    q, k, gk = torch.randn(b, 2, 4, generator=g), torch.randn(b, 2, 4, generator=g), -torch.rand(b, 2, 4, generator=g)
    v = torch.randn(b, 2, 5, generator=g)
    o_r, s_r = R.gla_recurrent_ref(q[:, None], k[:, None], v[:, None], gk[:, None], initial_state=S0)
    S1 = S0.clone()
    torch.testing.assert_close(gla_step(S1, q, k, v, gk, 0.5, backend="torch"), o_r[:, 0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(S1, s_r, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_states_step_in_float32_and_round_once(dtype):
    """A 16-bit decode state (the adapters' ``state_dtype="model"``, mamba_ssm's cache) is stepped in float32 and
    rounded once on store; the output is the float32 step's on the same (upcast) state."""
    g = gen(5)
    b, d, n = 3, 7, 4
    st = torch.randn(b, d, n, generator=g).to(dtype)
    x, dt, z = (torch.randn(b, d, generator=g) for _ in range(3))
    A, B, C = -torch.rand(d, n, generator=g), torch.randn(b, n, generator=g), torch.randn(b, n, generator=g)
    D, db = torch.randn(d, generator=g), torch.randn(d, generator=g)
    st32 = st.float()
    y32 = selective_state_update(st32, x, dt, A, B, C, D, z, db, backend="torch")
    y = selective_state_update(st, x, dt, A, B, C, D, z, db, backend="torch")
    assert st.dtype == dtype and torch.equal(st, st32.to(dtype)) and torch.equal(y, y32)
    H, P, N, G = 4, 3, 5, 2
    S = torch.randn(b, H, P, N, generator=g).to(dtype)
    xs, dts = torch.randn(b, H, P, generator=g), torch.randn(b, H, generator=g)
    Bs, Cs, As = torch.randn(b, G, N, generator=g), torch.randn(b, G, N, generator=g), -torch.rand(H, generator=g)
    S32 = S.float()
    y32 = ssd_step(S32, xs, dts, As, Bs, Cs, D=D[:H], dt_bias=db[:H], backend="torch", out_dtype=torch.float32)
    y = ssd_step(S, xs, dts, As, Bs, Cs, D=D[:H], dt_bias=db[:H], backend="torch", out_dtype=torch.float32)
    assert S.dtype == dtype and torch.equal(S, S32.to(dtype)) and torch.equal(y, y32)


# ----------------------------------------------------------------------------------- Triton, interpreted
_INTERPRETED = textwrap.dedent('''
    import json, math, sys, torch
    from jrt_eval.kernels.based import interpreter_compat
    interpreter_compat.patch()  # NumPy 2 vs the interpreter's runtime loop bounds (kernels unchanged)
    from interpreted import greedy_decode_errors, rounding_ulps

    from jrt_eval.kernels.mamba import reference as R
    from jrt_eval.kernels.mamba.selective_scan import selective_scan_triton, selective_state_update_triton
    from jrt_eval.kernels.mamba.gla_chunk_triton import gla_chunk_inter
    from jrt_eval.kernels.mamba.gla_triton import gla_gate_triton, gla_step_triton
    from jrt_eval.kernels.mamba.scan import gla_gate_torch
    from jrt_eval.model_adapters import gla, mamba
    from jrt_eval.model_adapters.base import left_pad

    out = {}
    def err(a, b):
        return float((a.double() - b.double()).abs().max() / (1 + b.double().abs().max()))
    g = torch.Generator().manual_seed(0)
    b, T, d, n, rank = 2, 13, 40, 16, 3
    xz = torch.randn(b, T, 2 * d, generator=g)            # x and z as slices of one projection, like the model
    x, z = xz[..., :d], xz[..., d:]
    dt = torch.randn(b, T, d, generator=g) - 1
    dbc = torch.randn(b, T, rank + 2 * n, generator=g)     # B and C as strided slices of x_proj's output
    B, C = dbc[..., rank:rank + n], dbc[..., rank + n:]
    A = -torch.rand(d, n, generator=g) * 3
    D, db = torch.randn(d, generator=g), torch.randn(d, generator=g) * 0.1
    mask = torch.ones(b, T, dtype=torch.long); mask[0, :5] = 0
    h0 = torch.randn(b, d, n, generator=g)
    y_r, h_r = R.selective_scan_ref(*(t.double() for t in (x, dt, A, B, C, D, z, db)), mask=mask, initial_state=h0.double())
    y, h = selective_scan_triton(x, dt, A, B, C, D, z, db, mask=mask, initial_state=h0, block_d=16)
    out["scan"] = err(y, y_r); out["scan_state"] = err(h, h_r)
    y_r, h_r = R.selective_scan_ref(*(t.double() for t in (x, dt, A, B, C)))
    y, h = selective_scan_triton(x, dt, A, B, C)
    out["scan_plain"] = err(y, y_r); out["scan_plain_state"] = err(h, h_r)
    ext = torch.tensor([-40., -15., -5., -1e-4, 0., 1e-4, 3., 19.99, 20.01, 35.]).repeat(b, T, 4)[..., :d]
    y_r, _ = R.selective_scan_ref(*(t.double() for t in (x, ext, A, B, C, D, z)))
    out["scan_softplus_extremes"] = err(selective_scan_triton(x, ext, A, B, C, D, z)[0], y_r)
    st, st_r = h0.clone(), h0.double().clone()
    y = selective_state_update_triton(st, x[:, 0], dt[:, 0], A, B[:, 0], C[:, 0], D, z[:, 0], db, block_d=16)
    y_r = R.selective_state_update_ref(st_r, x[:, 0], dt[:, 0], A, B[:, 0], C[:, 0], D, z[:, 0], db)
    out["step"] = err(y, y_r); out["step_state"] = err(st, st_r)
    for name, dt16 in (("bf16", torch.bfloat16), ("fp16", torch.float16)):  # a 16-bit state: float32 math, one rounding
        st16 = h0.to(dt16)
        st_r = st16.double()
        y = selective_state_update_triton(st16, x[:, 0], dt[:, 0], A, B[:, 0], C[:, 0], D, z[:, 0], db, block_d=16)
        y_r = R.selective_state_update_ref(st_r, x[:, 0], dt[:, 0], A, B[:, 0], C[:, 0], D, z[:, 0], db)
        assert st16.dtype == dt16
        out[f"step_{name}_state"] = err(y, y_r)
        out[f"step_{name}_state.ulps"] = rounding_ulps(st16, st_r)
    bh, K, V = (2, 3), 40, 24
    S0 = torch.randn(*bh, K, V, generator=g)
    q, k = torch.randn(*bh, K, generator=g), torch.randn(*bh, K, generator=g)
    v, gk = torch.randn(*bh, V, generator=g), torch.nn.functional.logsigmoid(torch.randn(*bh, K, generator=g))
    o_r, s_r = R.gla_recurrent_ref(q[:, None].double(), k[:, None].double(), v[:, None].double(), gk[:, None].double(),
                                   initial_state=S0.double())
    S1 = S0.clone()
    out["gla_step"] = err(gla_step_triton(S1, q, k, v, gk, K ** -0.5, block_k=16, block_v=16), o_r[:, 0])
    out["gla_step_state"] = err(S1, s_r)
    # the packed-projection layout of the adapter: q, k, v strided views of one [b, 2K + h V + ...] row
    row = torch.randn(bh[0], 2 * bh[1] * K + bh[1] * V + 5, generator=g)
    qs = row[:, :bh[1] * K].unflatten(-1, (bh[1], K))
    ks = row[:, bh[1] * K:2 * bh[1] * K].unflatten(-1, (bh[1], K))
    vs = row[:, 2 * bh[1] * K:2 * bh[1] * K + bh[1] * V].unflatten(-1, (bh[1], V))
    assert not qs.is_contiguous()
    o_r, s_r = R.gla_recurrent_ref(qs[:, None].double(), ks[:, None].double(), vs[:, None].double(),
                                   gk[:, None].double(), initial_state=S0.double())
    S1 = S0.clone()
    out["gla_step_strided"] = err(gla_step_triton(S1, qs, ks, vs, gk, K ** -0.5, block_k=16, block_v=16), o_r[:, 0])
    out["gla_step_strided_state"] = err(S1, s_r)
    # the forget gate: logsigmoid(x W^T + b) / 16 against float64, over its range (saturated both ways, 0, tiny);
    # ranks 16 and 5 (padded to tl.dot's 16), rows strided like the packed projection, a clamp, 40 = 2.5 blocks
    grid_x = torch.tensor([-100., -40., -17., -9.3, -1., -1e-3, 0., 1e-3, 1., 9.3, 17., 40., 100.])
    for r in (16, 5):
        w = torch.randn(40, r, generator=g) / r ** 0.5
        bias = torch.randn(40, generator=g)
        x = (torch.randn(70, r + 9, generator=g) * 8)[:, 3:3 + r]
        x[:13, 0] = grid_x  # with w's first column alone these rows sweep the grid
        w_sweep = w.clone(); w_sweep[:, 1:] = 0; w_sweep[:, 0] = 1
        for name, ww, bb, clamp in (("", w, bias, None), ("_sweep", w_sweep, bias * 0, None),
                                    ("_clamp", w, bias, -0.3)):
            ref = gla_gate_torch(x.double(), ww.double(), bb.double(), 16, clamp)
            out[f"gla_gate_r{r}{name}"] = err(gla_gate_triton(x, ww, bb, 16, clamp, block_m=16, block_n=16), ref)
            out[f"gla_gate_r{r}{name}.torch"] = err(gla_gate_torch(x, ww, bb, 16, clamp), ref)
        ref = gla_gate_torch(x[:13].double(), w_sweep.double(), bias.double() * 0, 16)[:, 0]
        got = gla_gate_triton(x[:13], w_sweep, bias * 0, 16, block_m=16, block_n=16)[:, 0].double()
        keep = ref.abs() > 1e-30  # exp(-100) / 16 is below float32's normal range
        out[f"gla_gate_r{r}_sweep_rel"] = float(((got - ref).abs() / ref.abs())[keep].max())
    # the decode step computing its own gate: 4 query heads on 2 key heads (GQA), clamped, strided x
    h, hkv, K, V, r = 4, 2, 40, 24, 16
    S0 = torch.randn(2, h, K, V, generator=g)
    q, k = torch.randn(2, h, K, generator=g), torch.randn(2, h, K, generator=g)
    v = torch.randn(2, h, V, generator=g)
    xg = torch.randn(2, r + 3, generator=g)[:, 2:2 + r] * 4
    wg, bg = torch.randn(hkv * K, r, generator=g) / 4, torch.randn(hkv * K, generator=g)
    for name, clamp in (("", None), ("_clamp", -0.05)):
        gk = gla_gate_torch(xg.double(), wg.double(), bg.double(), 16, clamp).view(2, hkv, K).repeat_interleave(2, 1)
        o_r, s_r = R.gla_recurrent_ref(q[:, None].double(), k[:, None].double(), v[:, None].double(), gk[:, None],
                                        initial_state=S0.double())
        S1 = S0.clone()
        o = gla_step_triton(S1, q, k, v, None, K ** -0.5, block_k=16, block_v=16, gate=(xg, wg, bg, 16, clamp))
        out[f"gla_step_fused_gate{name}"] = err(o, o_r[:, 0])
        out[f"gla_step_fused_gate{name}_state"] = err(S1, s_r)
    # the chunked prefill with the state on chip, from the cumulative log2 gate and the intra-chunk weights that
    # fla computes (here from PyTorch, A's unwritten upper triangle as NaN): 150 tokens = two chunks and 22 rows,
    # V = 24 in blocks of 16 (a partial block), strong decays on one head
    B_, T_, H_, K_, V_, C = 2, 150, 2, 16, 24, 64
    qc, kc, vc = (torch.randn(B_, T_, H_, n, generator=g) for n in (K_, K_, V_))
    gkc = torch.nn.functional.logsigmoid(torch.randn(B_, T_, H_, K_, generator=g) * 2) / 4
    gkc[:, :, 1] *= 8
    scale = K_ ** -0.5
    g2 = gkc.double() / math.log(2)
    gc = torch.cat([g2[:, s:s + C].cumsum(1) for s in range(0, T_, C)], 1)
    A = torch.full((B_, T_, H_, C), float("nan"), dtype=torch.float64)
    for s in range(0, T_, C):
        e = min(s + C, T_)
        diff = gc[:, s:e, None] - gc[:, None, s:e]                        # [b, i, j, h, K]
        w = torch.einsum("bihk,bjhk,bijhk->bihj", qc[:, s:e].double(), kc[:, s:e].double(), torch.exp2(diff)) * scale
        causal = torch.ones(e - s, e - s, dtype=torch.bool).tril()
        A[:, s:e, :, :e - s] = torch.where(causal[None, :, None, :], w, float("nan"))
    o, ht = gla_chunk_inter(qc, kc, vc, gc.float(), A.float(), scale, block_v=16, num_warps=4)
    o_r, s_r = R.gla_recurrent_ref(qc.double(), kc.double(), vc.double(), gkc.double(), scale=scale)
    out["gla_chunk_inter"] = err(o, o_r)
    out["gla_chunk_inter_state"] = err(ht, s_r)
    # the kernels inside the models (strides of the real call sites), vs the PyTorch paths
    folder = sys.argv[1]
    mamba.write_tiny_checkpoint(folder + "/m", seed=1, n_layer=2)
    a, t = mamba.load_model(folder + "/m", kernels="torch"), mamba.load_model(folder + "/m", kernels="triton")
    ids, m = left_pad([list(range(100, 112)), list(range(7, 10))], 0)
    keep = m.bool()
    out["mamba_model_forward"] = err(t(ids, m)[keep], a(ids, m)[keep])
    out["mamba_model_decode"] = max(greedy_decode_errors(a, t, ids, m, 2, err))
    gla.write_tiny_checkpoint(folder + "/g", seed=1, num_hidden_layers=2)
    a, t = gla.load_model(folder + "/g", kernels="torch"), gla.load_model(folder + "/g", kernels="triton")
    out["gla_model_decode"] = greedy_decode_errors(a, t, ids, m, 2, err)[1]
    print("RESULT " + json.dumps(out))
''')


def test_triton_kernels_under_interpreter(tmp_path):
    pytest.importorskip("triton")
    errs = run_interpreted(_INTERPRETED, tmp_path, "interp.py")
    assert set(errs) >= {"scan", "scan_state", "step", "gla_step", "gla_step_strided", "mamba_model_forward",
                         "mamba_model_decode", "gla_model_decode", "step_bf16_state.ulps", "step_fp16_state.ulps",
                         "gla_gate_r16", "gla_gate_r5_sweep", "gla_gate_r16_clamp", "gla_step_fused_gate",
                         "gla_step_fused_gate_clamp_state", "gla_chunk_inter", "gla_chunk_inter_state"}
    bad = {k: v for k, v in errs.items() if not (v <= ulps_limit(k) if k.endswith(".ulps") else v < 2e-6)}
    assert not bad, errs


def test_dispatchers_are_not_shadowed_by_kernel_modules():
    """Importing a Triton submodule sets a package attribute of its name: no dispatcher may share one."""
    import importlib

    pkg = importlib.import_module("jrt_eval.kernels.mamba")
    for name in pkg.__all__:
        assert callable(getattr(pkg, name)), name
        spec = importlib.util.find_spec(f"jrt_eval.kernels.mamba.{name}")
        assert spec is None, f"kernels/mamba/{name}.py would shadow the function {name}"
