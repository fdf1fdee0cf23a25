"""Mamba-2 (SSD) kernels: the Triton prefill and decode step (kernels/mamba/ssd_triton.py) against the step-by-step
reference in float64, the dispatchers' PyTorch paths, and the Mamba-2 adapter on either backend.

The Triton kernels run on CPU under ``TRITON_INTERPRET=1`` in a subprocess (skipped when triton is not installed;
every dot then runs in fp32, see ssd_triton._dot_config); on GPU they are checked by benchmarks/gpu_check_ssm.py.
Shapes are small (head dim 8 or 24, d_state 16 or 12, chunks of 16 tokens) so that lengths cross chunk borders,
stop mid-chunk, stay under one chunk, and the head / state widths need padding to the kernel's blocks.
"""
import importlib.util
import inspect
import textwrap

import pytest
import torch

from jrt_eval.kernels.mamba import reference as R
from jrt_eval.kernels.mamba import scan as S
from jrt_eval.kernels.mamba import ssd_prefill, ssd_step
from jrt_eval.model_adapters import mamba2

from interpreted import run_interpreted, ulps_limit  # tests/interpreted.py

INF = float("inf")


def inputs(seed, b, T, H, P, N, G, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    f = dict(generator=g, dtype=dtype)
    return dict(x=torch.randn(b, T, H, P, **f), dt=torch.randn(b, T, H, **f) - 1, A=-torch.rand(H, **f) * 4,
                B=torch.randn(b, T, G, N, **f), C=torch.randn(b, T, G, N, **f), D=torch.randn(H, **f),
                dt_bias=torch.randn(H, **f) * 0.5, S0=torch.randn(b, H, P, N, **f))


# ----------------------------------------------------------------------------------- PyTorch paths
@pytest.mark.parametrize("limit", [(0.0, INF), (0.05, 0.5)])
def test_ssd_dispatchers_torch_path(limit):
    """ssd_prefill(backend="torch") is ssd_chunked; ssd_step(backend="torch") continues its state exactly as the
    sequential reference does; the y dtype follows out_dtype (default x.dtype), the state is float32."""
    b, T, H, P, N, G, k = 2, 21, 4, 3, 5, 2, 4
    t = inputs(1, b, T + k, H, P, N, G)
    mask = torch.ones(b, T + k, dtype=torch.long)
    mask[0, :6] = 0
    y_r, s_r = R.ssd_sequential_ref(t["x"], t["dt"], t["A"], t["B"], t["C"], t["D"], t["dt_bias"], dt_limit=limit,
                                    mask=mask, initial_state=t["S0"])
    pre = {name: v[:, :T] for name, v in t.items() if name in ("x", "dt", "B", "C")}
    y, st = ssd_prefill(pre["x"], pre["dt"], t["A"], pre["B"], pre["C"], 8, D=t["D"], dt_bias=t["dt_bias"],
                        dt_limit=limit, mask=mask[:, :T], initial_state=t["S0"], backend="torch")
    y_c, s_c = S.ssd_chunked(pre["x"], pre["dt"], t["A"], pre["B"], pre["C"], 8, D=t["D"], dt_bias=t["dt_bias"],
                             dt_limit=limit, mask=mask[:, :T], initial_state=t["S0"])
    assert y.dtype == torch.float64 and torch.equal(y, y_c) and torch.equal(st, s_c)
    torch.testing.assert_close(y, y_r[:, :T], rtol=1e-10, atol=1e-10)
    for j in range(T, T + k):  # the decode step from the prefill state (float64 state: same contract)
        yj = ssd_step(st, t["x"][:, j], t["dt"][:, j], t["A"], t["B"][:, j], t["C"][:, j], D=t["D"],
                      dt_bias=t["dt_bias"], dt_limit=limit, backend="torch")
        torch.testing.assert_close(yj, y_r[:, j], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(st, s_r, rtol=1e-10, atol=1e-10)
    x32 = pre["x"].float()
    y16, s32 = ssd_prefill(x32.bfloat16(), pre["dt"].float(), t["A"].float(), pre["B"].float(), pre["C"].float(),
                           backend="torch")
    assert y16.dtype == torch.bfloat16 and s32.dtype == torch.float32
    y32, _ = ssd_prefill(x32, pre["dt"].float(), t["A"].float(), pre["B"].float(), pre["C"].float(),
                         backend="torch", out_dtype=torch.float32)
    assert y32.dtype == torch.float32
    st32 = s32.clone()
    ys = ssd_step(st32, x32[:, 0].bfloat16(), pre["dt"][:, 0].float(), t["A"].float(), pre["B"][:, 0].float(),
                  pre["C"][:, 0].float(), backend="torch")
    assert ys.dtype == torch.bfloat16 and ys.shape == (b, H, P) and st32.dtype == torch.float32


def test_ssd_step_torch_in_place_on_strided_inputs():
    """The step reads x / B / C as views of one projection row (the model's call site) and updates the state in
    place (it is the tensor captured by a CUDA graph)."""
    b, H, P, N, G = 3, 4, 6, 5, 2
    g = torch.Generator().manual_seed(2)
    row = torch.randn(b, H * P + 2 * G * N + 3, generator=g)
    x, B, C = (row[:, :H * P].view(b, H, P), row[:, H * P:H * P + G * N].view(b, G, N),
               row[:, H * P + G * N:H * P + 2 * G * N].view(b, G, N))
    dt, A, D = torch.randn(b, H, generator=g), -torch.rand(H, generator=g), torch.randn(H, generator=g)
    st = torch.randn(b, H, P, N, generator=g)
    ref_state = st.double().clone()
    ptr = st.data_ptr()
    y = ssd_step(st, x, dt, A, B, C, D=D, backend="torch")
    y_r, s_r = R.ssd_sequential_ref(x[:, None].double(), dt[:, None].double(), A.double(), B[:, None].double(),
                                    C[:, None].double(), D.double(), initial_state=ref_state)
    assert st.data_ptr() == ptr
    torch.testing.assert_close(y.double(), y_r[:, 0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(st.double(), s_r, rtol=1e-5, atol=1e-5)


def test_backend_option_is_plumbed():
    assert "kernels" in inspect.signature(mamba2.load_model).parameters
    assert "kernels" in inspect.signature(mamba2.Mamba2LM).parameters
    spec = mamba2.parse_config(mamba2.tiny_config())
    with torch.device("meta"):
        # "auto": the Triton kernels on CUDA tensors, PyTorch elsewhere (the dispatchers decide per call)
        assert mamba2.Mamba2LM(spec).kernels == "auto"
        assert mamba2.Mamba2LM(spec, kernels="triton").kernels == "triton"
        with pytest.raises(ValueError, match="unknown kernels"):
            mamba2.Mamba2LM(spec, kernels="cuda")
    x = torch.zeros(1, 2, 1, 4)
    if importlib.util.find_spec("triton") is not None:  # Triton kernels asked for on CPU tensors: a clear error
        with pytest.raises(ValueError, match="needs CUDA tensors"):
            ssd_step(torch.zeros(1, 1, 4, 4), x[:, 0], torch.zeros(1, 1), -torch.ones(1), torch.zeros(1, 1, 4),
                     torch.zeros(1, 1, 4), backend="triton")
    with pytest.raises(ValueError, match="unknown kernel backend"):
        ssd_prefill(x, torch.zeros(1, 2, 1), -torch.ones(1), torch.zeros(1, 2, 1, 4), torch.zeros(1, 2, 1, 4),
                    backend="cuda")


def test_prefill_register_cap_rule():
    """The cap applies to the 16-bit one-warpgroup kernel only when the programs outnumber two per SM (measured:
    it helps at batch 8-32, costs at batch 1); a config's own ``maxnreg`` wins, 0 meaning none."""
    pytest.importorskip("triton")
    from jrt_eval.kernels.mamba.ssd_triton import _default_config, register_cap

    bf16 = _default_config(64, torch.bfloat16)
    assert register_cap(bf16, torch.bfloat16, 32 * 24 * 2, 132) == 168  # batch 32, Mamba-2-130M: 1536 programs
    assert register_cap(bf16, torch.bfloat16, 4 * 24 * 2, 132) is None  # 192 programs: all fit at two per SM
    assert register_cap(bf16, torch.bfloat16, 1 * 24 * 2, 132) is None
    assert register_cap(_default_config(64, torch.float32), torch.float32, 10_000, 132) is None
    assert register_cap(dict(bf16, maxnreg=0), torch.bfloat16, 10_000, 132) is None
    assert register_cap(dict(bf16, maxnreg=200), torch.bfloat16, 8, 132) == 200
    assert register_cap(dict(bf16, num_warps=8), torch.bfloat16, 10_000, 132) is None


# ----------------------------------------------------------------------------------- Triton, interpreted
_INTERPRETED = textwrap.dedent('''
    import json, sys, torch
    from jrt_eval.kernels.based import interpreter_compat
    interpreter_compat.patch()  # NumPy 2 vs the interpreter's runtime loop bounds (kernels unchanged)

    from jrt_eval.kernels.mamba import reference as R
    from jrt_eval.kernels.mamba import scan as S
    from jrt_eval.kernels.mamba.ssd_triton import interpreting, ssd_prefill_triton, ssd_step_triton
    from jrt_eval.model_adapters import mamba2
    from jrt_eval.model_adapters.base import left_pad

    assert interpreting()
    out = {}
    INF = float("inf")

    from interpreted import greedy_decode_errors, rel_max_err as err, rounding_ulps

    def strided(seed, b, T, H, P, N, G, dtype=torch.float32):
        """x, B, C as views of one conv-output-like tensor and dt a view of a projection (last dim contiguous)."""
        g = torch.Generator().manual_seed(seed)
        xbc = torch.randn(b, T, H * P + 2 * G * N + 5, generator=g).to(dtype)
        proj = (torch.randn(b, T, H + 7, generator=g) - 1).to(dtype)
        x = xbc[..., :H * P].reshape(b, T, H, P)
        B = xbc[..., H * P:H * P + G * N].reshape(b, T, G, N)
        C = xbc[..., H * P + G * N:H * P + 2 * G * N].reshape(b, T, G, N)
        dt = proj[..., 3:3 + H]
        A = -torch.rand(H, generator=g) * 4
        D, db = torch.randn(H, generator=g), torch.randn(H, generator=g) * 0.5
        S0 = torch.randn(b, H, P, N, generator=g)
        return x, dt, A, B, C, D, db, S0

    def d64(*ts):
        return [t.double() if t is not None else None for t in ts]

    # prefill: lengths under one chunk, exactly one, odd multi-chunk, the default chunk (64); 1 and 2 groups;
    # head dim 24 / d_state 12 (padded blocks, two p-blocks per head)
    cases = [  # name, T, H, P, N, G, BT, BLOCK_P, dt_limit
        ("T1", 1, 4, 8, 16, 1, 16, None, (0.0, INF)),
        ("T5_lt_chunk_g2", 5, 4, 8, 16, 2, 16, None, (0.05, 0.5)),
        ("T16_one_chunk", 16, 4, 8, 16, 1, 16, None, (0.0, INF)),
        ("T37_g2", 37, 4, 8, 16, 2, 16, None, (0.05, 0.5)),
        ("T37_g1_limit", 37, 4, 8, 16, 1, 16, None, (0.0, 2.0)),
        ("T70_default_cfg", 70, 2, 8, 16, 1, None, None, (0.0, INF)),
        ("T29_p24_n12_g2", 29, 4, 24, 12, 2, 16, 16, (0.0, INF)),
    ]
    b = 3
    for i, (name, T, H, P, N, G, BT, BP, limit) in enumerate(cases):
        x, dt, A, B, C, D, db, S0 = strided(i, b, T, H, P, N, G)
        mask = torch.ones(b, T, dtype=torch.long)
        mask[1, : T // 3] = 0
        mask[2, : T - 1] = 0  # only the last token is real
        cfg = {k: v for k, v in (("BT", BT), ("BLOCK_P", BP)) if v is not None}
        y_r, s_r = R.ssd_sequential_ref(*d64(x, dt, A, B, C, D, db), dt_limit=limit, mask=mask,
                                        initial_state=S0.double())
        y, s = ssd_prefill_triton(x, dt, A, B, C, D=D, dt_bias=db, dt_limit=limit, mask=mask, initial_state=S0,
                                  config=cfg)
        assert y.dtype == torch.float32 and s.dtype == torch.float32 and s.shape == (b, H, P, N)
        keep = mask.bool()
        out[f"prefill.{name}"] = err(y[keep], y_r[keep])
        out[f"prefill.{name}.state"] = err(s, s_r)
        # left padding is invisible: each padded row equals that row alone (no mask, no padding)
        worst = 0.0
        for r in range(b):
            n_real = int(mask[r].sum())
            sl = slice(T - n_real, T)
            ya, sa = ssd_prefill_triton(x[r:r + 1, sl], dt[r:r + 1, sl], A, B[r:r + 1, sl], C[r:r + 1, sl], D=D,
                                        dt_bias=db, dt_limit=limit, initial_state=S0[r:r + 1], config=cfg)
            worst = max(worst, err(y[r:r + 1, sl], ya), err(s[r:r + 1], sa))
        out[f"prefill.{name}.padded_vs_alone"] = worst

    # no optional inputs at all; softplus off (positive dt); bf16 inputs (loads and casts: the interpreter's dots
    # are fp32); the default y dtype; T = 0
    x, dt, A, B, C, D, db, S0 = strided(20, 2, 23, 4, 8, 16, 2)
    y_r, s_r = R.ssd_sequential_ref(*d64(x, dt, A, B, C))
    y, s = ssd_prefill_triton(x, dt, A, B, C, config={"BT": 16})
    out["prefill.plain"] = err(y, y_r); out["prefill.plain.state"] = err(s, s_r)
    dtp = dt.sigmoid()
    y_r, s_r = R.ssd_sequential_ref(*d64(x, dtp, A, B, C, D), dt_softplus=False, initial_state=S0.double())
    y, s = ssd_prefill_triton(x, dtp, A, B, C, D=D, dt_softplus=False, initial_state=S0, config={"BT": 16})
    out["prefill.no_softplus"] = err(y, y_r); out["prefill.no_softplus.state"] = err(s, s_r)
    xb, dtb, Bb, Cb = (t.bfloat16() for t in (x, dt, B, C))
    y_r, s_r = R.ssd_sequential_ref(*d64(xb, dtb, A, Bb, Cb, D, db), initial_state=S0.double())
    y, s = ssd_prefill_triton(xb, dtb, A, Bb, Cb, D=D, dt_bias=db, initial_state=S0, out_dtype=torch.float32,
                              config={"BT": 16})
    out["prefill.bf16_inputs"] = err(y, y_r); out["prefill.bf16_inputs.state"] = err(s, s_r)
    y16, _ = ssd_prefill_triton(xb, dtb, A, Bb, Cb, D=D, dt_bias=db, config={"BT": 16})
    assert y16.dtype == torch.bfloat16
    y0, s0 = ssd_prefill_triton(x[:, :0], dt[:, :0], A, B[:, :0], C[:, :0], initial_state=S0)
    assert y0.shape == (2, 0, 4, 8) and torch.equal(s0, S0)

    # decode: prefill then several steps, vs the sequential reference over the whole sequence and vs the PyTorch
    # step on the same float32 state; step inputs are strided views, as in the model
    for name, (H, P, N, G, limit, opt) in {"g2_limit": (4, 8, 16, 2, (0.05, 0.5), True),
                                            "g1_plain": (4, 8, 16, 1, (0.0, INF), False),
                                            "p24_n12": (4, 24, 12, 2, (0.0, INF), True)}.items():
        T, k = 19, 5
        x, dt, A, B, C, D, db, S0 = strided(30 + P, 2, T + k, H, P, N, G)
        if not opt:
            D = db = None
        mask = torch.ones(2, T + k, dtype=torch.long)
        mask[0, :7] = 0
        y_r, s_r = R.ssd_sequential_ref(*d64(x, dt, A, B, C, D, db), dt_limit=limit, mask=mask)
        _, st = ssd_prefill_triton(x[:, :T], dt[:, :T], A, B[:, :T], C[:, :T], D=D, dt_bias=db, dt_limit=limit,
                                   mask=mask[:, :T], config={"BT": 16})
        st_t = st.clone()
        worst, worst_t = 0.0, 0.0
        for j in range(T, T + k):
            ptr = st.data_ptr()
            yj = ssd_step_triton(st, x[:, j], dt[:, j], A, B[:, j], C[:, j], D=D, dt_bias=db, dt_limit=limit,
                                 block_p=16)
            assert st.data_ptr() == ptr and yj.dtype == torch.float32
            yt = S.ssd_step_torch(st_t, x[:, j], dt[:, j], A, B[:, j], C[:, j], D=D, dt_bias=db, dt_limit=limit)
            worst = max(worst, err(yj, y_r[:, j]))
            worst_t = max(worst_t, err(yj, yt))
        out[f"step.{name}"] = worst
        out[f"step.{name}.state"] = err(st, s_r)
        out[f"step.{name}.vs_torch_step"] = max(worst_t, err(st, st_t))
        # a 16-bit state (state_dtype="model"): float32 math on the upcast state, the new state rounded once
        for tag, dt16 in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
            st16 = st.to(dt16)
            st32 = st16.float()
            yj = ssd_step_triton(st16, x[:, T], dt[:, T], A, B[:, T], C[:, T], D=D, dt_bias=db, dt_limit=limit,
                                 block_p=16)
            yt = S.ssd_step_torch(st32, x[:, T], dt[:, T], A, B[:, T], C[:, T], D=D, dt_bias=db, dt_limit=limit)
            assert st16.dtype == dt16
            out[f"step.{name}.{tag}_state"] = err(yj, yt)
            out[f"step.{name}.{tag}_state.ulps"] = rounding_ulps(st16, st32)

    # the kernels inside the Mamba-2 adapter (the strides of the real call sites), vs its PyTorch path
    folder = sys.argv[1]
    for tag, over in (("g1", {}), ("g2_limit", {"ngroups": 2, "dt_limit": [0.01, 0.3]})):
        ssm = {"layer": "Mamba2", "d_state": 16, "headdim": 16, "chunk_size": 16, **over}
        mamba2.write_tiny_checkpoint(folder + "/" + tag, seed=1, n_layer=2, ssm_cfg=ssm)
        a = mamba2.load_model(folder + "/" + tag, kernels="torch")
        t = mamba2.load_model(folder + "/" + tag, kernels="triton")
        ids, m = left_pad([list(range(100, 171)), list(range(7, 10)), list(range(300, 340))], 0)
        keep = m.bool()
        out[f"model.{tag}.forward"] = err(t(ids, m)[keep], a(ids, m)[keep])
        out[f"model.{tag}.decode"] = max(greedy_decode_errors(a, t, ids, m, 3))
    print("RESULT " + json.dumps(out))
''')


def test_ssd_triton_kernels_under_interpreter(tmp_path):
    pytest.importorskip("triton")
    errs = run_interpreted(_INTERPRETED, tmp_path, "interp_ssd.py")
    expected = {"prefill.T1", "prefill.T5_lt_chunk_g2", "prefill.T37_g2", "prefill.T70_default_cfg",
                "prefill.T29_p24_n12_g2.padded_vs_alone", "prefill.plain", "prefill.no_softplus",
                "prefill.bf16_inputs", "step.g2_limit", "step.p24_n12.vs_torch_step", "model.g1.forward",
                "model.g2_limit.decode", "step.g2_limit.bf16_state.ulps", "step.p24_n12.fp16_state"}
    assert set(errs) >= expected, sorted(expected - set(errs))
    bad = {k: v for k, v in errs.items() if not (v <= ulps_limit(k) if k.endswith(".ulps") else v < 1e-5)}
    assert not bad, bad
