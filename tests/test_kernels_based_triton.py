"""The Triton kernels of kernels/based against the float64 references.

On a machine without a GPU the kernels run in Triton's CPU interpreter (TRITON_INTERPRET=1, in a
child pytest process, see ``test_in_interpreter``; every dot then runs in fp32 because the
interpreter cannot multiply bf16). With CUDA the same tests run the compiled kernels (bf16 dots for 16-bit
inputs). Outputs are poisoned with NaN before each run so an unwritten element fails.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

triton = pytest.importorskip("triton")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# Triton's interpreter only works when TRITON_INTERPRET=1 was set before `triton` was first
# imported (its own library functions, tl.sum etc., are decorated at that moment). In a pytest
# process that is rarely so, and setting it globally would leak into other test modules, so on a
# CPU machine the tests below run in a child pytest started with the variable set.
INTERPRETED = type(triton.language.standard.sum).__name__ == "InterpretedFunction"
RUN_HERE = DEVICE == "cuda" or INTERPRETED
here = pytest.mark.skipif(not RUN_HERE, reason="runs in the interpreter subprocess (test_in_interpreter)")

if RUN_HERE:
    if DEVICE == "cpu":
        from jrt_eval.kernels.based import interpreter_compat

        interpreter_compat.patch()
    from jrt_eval.kernels.based import BasedState, based_prefill, based_step, pla_prefill
    from jrt_eval.kernels.based import reference as R
    from jrt_eval.kernels.based import triton_decode, triton_pla, triton_prefill


@pytest.mark.skipif(RUN_HERE, reason="already running on a GPU or inside the interpreter")
def test_in_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__],
        env=env, cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]


F64 = torch.float64


TOL = {torch.float32: 2e-5, torch.bfloat16: 1e-2, torch.float16: 1e-2}


def rel(a, b):
    a, b = a.double().cpu(), b.double().cpu()
    assert not torch.isnan(a).any(), "NaN in kernel output (unwritten element?)"
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def make(B, T, H, dv, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(B, T, H, 16, generator=g) for _ in range(2))
    v = torch.randn(B, T, H, dv, generator=g)
    return (x.to(dtype).to(DEVICE) for x in (q, k, v))


def make_mask(kind, B, T, seed):
    if kind is None:
        return None
    g = torch.Generator().manual_seed(seed)
    if kind == "left":
        m = torch.ones(B, T, dtype=torch.bool)
        for b in range(B):
            m[b, : (b * T) // (B + 1)] = False
        m[0, : T // 3] = False
    else:
        m = torch.rand(B, T, generator=g) > 0.3
    return m.to(DEVICE)


def ref64(x):
    return x.double().cpu()


@here
@pytest.mark.parametrize(
    "B,T,H,dv,dtype,mask,n_seg,init,BT,variant,bdv",
    [
        (2, 1, 2, 16, torch.float32, None, 1, False, 64, "plain", 16),
        (2, 37, 2, 16, torch.float32, "left", 1, False, 16, "plain", 16),
        (1, 130, 2, 64, torch.float32, "random", 1, True, 64, "plain", 32),
        (2, 200, 1, 32, torch.float32, "left", 3, True, 32, "kt", 32),
        (1, 100, 2, 64, torch.bfloat16, "left", 2, False, 32, "plain", 64),
        (1, 70, 1, 112, torch.float16, None, 1, True, 64, "kt16", 128),
        (2, 150, 2, 64, torch.float32, "left", 1, True, None, None, None),  # default config
        (2, 150, 2, 112, torch.bfloat16, "left", 2, True, None, None, None),
        (1, 90, 2, 64, torch.bfloat16, "random", 1, False, 64, "kt", 32),
        (1, 90, 2, 64, torch.bfloat16, "left", 2, True, 128, "kt16", 64),
        (2, 77, 2, 32, torch.float32, "random", 3, True, 16, "sel16", 32),  # fp16 selections, plain layout
    ],
)
def test_prefill_matches_reference(B, T, H, dv, dtype, mask, n_seg, init, BT, variant, bdv):
    q, k, v = make(B, T, H, dv, dtype, seed=T + dv)
    km = make_mask(mask, B, T, seed=T)
    st = None
    if init:
        g = torch.Generator().manual_seed(7)
        s0 = R.state_from_keys(torch.randn(B, 9, H, 16, generator=g, dtype=F64),
                               torch.randn(B, 9, H, dv, generator=g, dtype=F64))
        st = BasedState(s0.S.float().to(DEVICE), s0.z.float().to(DEVICE))
    cfg = {}
    if BT is not None:
        cfg["BT"] = BT
    if bdv is not None:
        cfg["BLOCK_DV"] = bdv
    if variant is not None:  # kt: key features built transposed; *16: fp16 selections/products
        cfg["kt"] = variant.startswith("kt")
        cfg["sel16"] = "force" if variant.endswith("16") else False  # "force": also in the interpreter
    out = torch.full((B, T, H, dv), float("nan"), dtype=dtype, device=DEVICE)
    o, s = triton_prefill.based_prefill_triton(
        q, k, v, key_mask=km, initial_state=st, output_final_state=True, n_seg=n_seg,
        config=cfg, out=out,
    )
    assert o.data_ptr() == out.data_ptr()
    ist = None if st is None else BasedState(ref64(st.S), ref64(st.z))
    kmc = None if km is None else km.cpu()
    oref, sref = R.based_attention_chunked(ref64(q), ref64(k), ref64(v), key_mask=kmc, initial_state=ist,
                                           output_final_state=True)
    f16 = variant is not None and variant.endswith("16")  # feature products rounded to fp16 (~5e-4)
    assert rel(o, oref) < (max(TOL[dtype], 2e-3) if f16 else TOL[dtype])
    assert s.S.dtype == torch.float32 and s.S.shape == (B, H, 153, dv) and s.z.shape == (B, H, 153)
    stol = 2e-5 if dtype == torch.float32 and not f16 else 5e-3  # 16-bit: φ(k) products rounded on GPU
    assert rel(s.S, sref.S) < stol
    assert rel(s.z, sref.z) < stol
    if st is not None:  # the caller's initial state is left alone
        assert rel(st.S, ist.S) == 0


@here
def test_state_pass_with_sparse_mask():
    """Encoder state (non-causal Σφ(k)vᵀ) over a mask that leaves whole chunks empty (skipped)."""
    B, T, H, dv = 2, 150, 2, 32
    _, k, v = make(B, T, H, dv, torch.float32, seed=11)
    m = torch.zeros(B, T, dtype=torch.bool)
    m[0, 3:20] = True
    m[1, 70:75] = True
    m = m.to(DEVICE)
    for n_seg, kt, bt in ((1, False, 32), (3, True, 32), (1, True, 128)):  # 128: longer than T's last chunk
        st = triton_prefill.state_from_keys_triton(k, v, m, n_seg=n_seg, config={"BT": bt, "kt": kt})
        want = R.state_from_keys(ref64(k), ref64(v), m.cpu())
        assert rel(st.S, want.S) < 2e-5 and rel(st.z, want.z) < 2e-5


@here
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_tma_tiles_equal_pointer_tiles(dtype):
    """TMA tiles (rows past T read as zeros, stores clipped at T) give the pointer loads' results exactly: prefill
    with segments, a mask, an initial state and a length that is no multiple of the chunk; the state pass."""
    B, T, H, dv = 2, 107, 2, 48  # dv 48 in a 64-wide block: TMA clips the columns too
    q, k, v = make(B, T, H, dv, dtype, seed=21)
    km = make_mask("left", B, T, seed=21)
    g = torch.Generator().manual_seed(3)
    s0 = R.state_from_keys(torch.randn(B, 5, H, 16, generator=g, dtype=F64), torch.randn(B, 5, H, dv, generator=g, dtype=F64))
    st = BasedState(s0.S.float().to(DEVICE), s0.z.float().to(DEVICE))
    runs = {}
    for tma in (False, True, "loads"):
        cfg = {"BT": 32, "tma": tma}
        o, fin = triton_prefill.based_prefill_triton(q, k, v, key_mask=km, initial_state=st, output_final_state=True,
                                                     n_seg=2, config=cfg)
        enc = triton_prefill.state_from_keys_triton(k, v, km, config=cfg)
        runs[tma] = (o, fin.S, fin.z, enc.S, enc.z)
    for tma in (True, "loads"):
        for a, b in zip(runs[tma], runs[False]):
            assert torch.equal(a, b)
    want = R.based_attention_chunked(ref64(q), ref64(k), ref64(v), key_mask=km.cpu(),
                                     initial_state=BasedState(s0.S, s0.z))[0]
    assert rel(runs[True][0], want) < TOL[dtype]


@here
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_range_masks_equal_read_masks(dtype):
    """``mask_is_range`` (the adapters' left padding and encoder prefixes): the kernels build the mask from each
    row's first and last key instead of reading it, with the same results; a row without keys stays empty."""
    B, T, H, dv = 3, 150, 2, 32
    q, k, v = make(B, T, H, dv, dtype, seed=31)
    km = torch.ones(B, T, dtype=torch.bool)
    km[0, :40] = False  # left padding
    km[2, :] = False
    km[2, 149] = True  # a row whose one real token is the last
    enc = km & (torch.cumsum(km.long(), 1) <= 70)  # the first 70 real tokens
    km, enc = km.to(DEVICE), enc.to(DEVICE)
    # the interpreter gives identical bits; compiled, the two variants may round differently (code layout)
    same = (lambda a, b: torch.equal(a, b)) if DEVICE == "cpu" else (lambda a, b: rel(a, b) < 1e-5)
    want_o = R.based_attention_chunked(ref64(q), ref64(k), ref64(v), key_mask=km.cpu())[0]
    for n_seg in (1, 3):
        a = triton_prefill.based_prefill_triton(q, k, v, key_mask=km, output_final_state=True, n_seg=n_seg,
                                                config={"BT": 32})
        b = triton_prefill.based_prefill_triton(q, k, v, key_mask=km, output_final_state=True, n_seg=n_seg,
                                                config={"BT": 32}, mask_is_range=True)
        assert rel(b[0], want_o) < TOL[dtype], (n_seg, rel(a[0], want_o), rel(b[0], want_o))
        assert same(a[0], b[0]) and same(a[1].S, b[1].S) and same(a[1].z, b[1].z), (n_seg, rel(a[0], b[0]))
    # the state pass over a range by TMA (16-bit inputs) sums its chunks from each row's first key (a different
    # grouping of the same terms: equal to rounding); with pointer tiles it reads the same chunks as the mask
    window = dtype != torch.float32
    same_state = (lambda a, b: rel(a, b) < 1e-6) if window else same
    a = triton_prefill.state_from_keys_triton(k, v, enc, config={"BT": 32})
    b = triton_prefill.state_from_keys_triton(k, v, enc, config={"BT": 32}, mask_is_range=True)
    assert same_state(a.S, b.S) and same_state(a.z, b.z), (rel(a.S, b.S), rel(a.z, b.z))
    o1, s1 = triton_pla.pla_prefill_triton(q, k, v, k, v, enc, key_mask=km, output_final_state=True)
    o2, s2 = triton_pla.pla_prefill_triton(q, k, v, k, v, enc, key_mask=km, output_final_state=True,
                                           masks_are_ranges=True)
    want = R.pla_attention_quadratic(*(ref64(x) for x in (q, k, v, k, v)), enc.cpu(), key_mask=km.cpu())
    assert rel(o2, want) < TOL[dtype], (rel(o1, want), rel(o2, want))
    # outputs in bf16: a state that differs in its last fp32 bits flips a few roundings (one bf16 step is 2^-8)
    same_out = (lambda a, b: rel(a, b) < 2 ** -8) if window else same
    assert same_out(o1, o2) and same_state(s1.S, s2.S), (rel(o1, o2), rel(s1.S, s2.S))


@here
@pytest.mark.parametrize("n_seg,BT", [(1, 32), (3, 32), (5, 64), (1, 128)])
def test_state_pass_window_over_key_ranges(n_seg, BT):
    """The state pass over key ranges by TMA starts each segment's chunks at its first key and ends its tiles at its
    last: ranges starting and ending mid-chunk, one key, no key, the whole row, a range reaching T (not a multiple of
    the chunk), across segment boundaries -- against the float64 sum, and against the same mask read."""
    B, T, H, dv = 6, 173, 2, 64
    _, k, v = make(B, T, H, dv, torch.bfloat16, seed=60 + n_seg)
    m = torch.zeros(B, T, dtype=torch.bool)
    m[0, 5:77] = True
    m[1, 100] = True
    m[3, :] = True
    m[4, 131:] = True
    m[5, 33:34 + BT] = True
    m = m.to(DEVICE)
    cfg = {"BT": BT, "tma": True}
    st = triton_prefill.state_from_keys_triton(k, v, m, n_seg=n_seg, config=cfg, mask_is_range=True)
    read = triton_prefill.state_from_keys_triton(k, v, m, n_seg=n_seg, config=cfg)
    want = R.state_from_keys(ref64(k), ref64(v), m.cpu())
    tol = 2e-5 if DEVICE == "cpu" else 5e-3  # the interpreter multiplies in fp32; the GPU in bf16 / fp16
    assert rel(st.S, want.S) < tol and rel(st.z, want.z) < tol, (rel(st.S, want.S), rel(st.z, want.z))
    assert torch.equal(st.z[2], torch.zeros_like(st.z[2])) and torch.equal(st.S[2], torch.zeros_like(st.S[2]))
    assert rel(st.S, read.S) < 1e-5 and rel(st.z, read.z) < 1e-5, (rel(st.S, read.S), rel(st.z, read.z))
    # the constant feature counts each row's keys exactly
    assert torch.equal(st.z[:, :, 0].cpu(), m.sum(1, keepdim=True).expand(B, H).float().cpu())


@here
@pytest.mark.parametrize("T", [1, 3, 64])
def test_tma_tiles_at_tiny_lengths(T):
    """A 1-token prompt (the adapters prefill any length): a 64-row TMA box over a 1-row sequence."""
    B, H, dv = 2, 2, 64
    q, k, v = make(B, T, H, dv, torch.bfloat16, seed=50 + T)
    o, st = triton_prefill.based_prefill_triton(q, k, v, output_final_state=True, config={"tma": True})
    want, wst = R.based_attention_chunked(ref64(q), ref64(k), ref64(v), output_final_state=True)
    assert rel(o, want) < TOL[torch.bfloat16] and rel(st.S, wst.S) < 5e-3


@here
def test_unaligned_rows_fall_back_to_pointer_tiles():
    """TMA needs 16-byte row strides: a value width of 36 bf16 (72-byte rows) takes the pointer loads, same math."""
    B, T, H, dv = 1, 70, 2, 36
    q, k, v = make(B, T, H, dv, torch.bfloat16, seed=41)
    assert triton_prefill._tma_ok(q, k) and not triton_prefill._tma_ok(v)
    o, _ = triton_prefill.based_prefill_triton(q, k, v, config={"BT": 32})
    want = R.based_attention_chunked(ref64(q), ref64(k), ref64(v))[0]
    assert rel(o, want) < TOL[torch.bfloat16]


def test_tma_scratch_allocator_is_set_only_when_missing():
    """Descriptors made in the kernel need a global scratch from Triton's process-wide allocator: ours is installed
    when none is set, and a caller's own allocator is left in place."""
    from triton.runtime import _allocation

    from jrt_eval.kernels.based import triton_prefill as tp

    token = _allocation._allocator.set(_allocation.NullAllocator())
    try:
        tp._ensure_allocator()
        assert _allocation._allocator.get() is tp._scratch

        def mine(size, alignment, stream):
            return torch.empty(size, dtype=torch.int8)

        triton.set_allocator(mine)
        tp._ensure_allocator()
        assert _allocation._allocator.get() is mine
    finally:
        _allocation._allocator.reset(token)


def test_key_range_of_masks():
    """The state pass visits [first key, last key + 1) of each row; a row without keys visits nothing."""
    from jrt_eval.kernels.based.triton_prefill import key_range

    m = torch.zeros(4, 10, dtype=torch.bool)
    m[0, 3:7] = True  # a prefix after left padding
    m[1, [1, 8]] = True  # a hole in between
    m[3] = True
    assert key_range(m.view(torch.uint8)).tolist() == [[3, 7], [1, 9], [0, 0], [0, 10]]
    assert key_range(m).dtype == torch.int32


@here
@pytest.mark.parametrize("T", [0, 1, 10, 1023, 2500])
def test_key_range_kernel_equals_torch(T):
    """On the GPU (and in the interpreter) the ranges come from one Triton launch: the same as the torch ops, for
    lengths around its 1024-wide block, rows without keys, full rows, holes and a strided mask."""
    g = torch.Generator().manual_seed(T)
    m = torch.rand(5, 2 * T + 1, generator=g) > 0.7
    m[0] = False
    m[1] = True
    if T > 3:
        m[2] = False
        m[2, T - 1] = True
        m[3] = False
        m[3, 1:3] = True
    m = m[:, ::2]  # a strided view (the kernel reads a contiguous copy)
    want = [[int(r.nonzero()[0]), int(r.nonzero()[-1]) + 1] if r.any() else [0, 0] for r in m]
    got = triton_prefill.key_range(m.to(DEVICE))
    assert got.dtype == torch.int32 and got.device.type == DEVICE and got.tolist() == want
    assert triton_prefill.key_range(m.to(DEVICE).to(torch.uint8)).tolist() == want


@here
def test_state_pass_config_from_environment(monkeypatch):
    """JRT_EVAL_BASED_STATE_CONFIG sets the state-only pass's tiles (tuning runs); the result does not change."""
    B, T, H, dv = 1, 100, 2, 32
    _, k, v = make(B, T, H, dv, torch.float32, seed=12)
    want = R.state_from_keys(ref64(k), ref64(v))
    # defaults: 128-token chunks for 16-bit inputs (H100 tune), the prefill's tiles for float32
    assert triton_prefill.state_pass_config(dv, torch.bfloat16)["BT"] == 128
    assert triton_prefill.state_pass_config(dv, torch.float32) == triton_prefill._config(dv, torch.float32, None)
    monkeypatch.setenv("JRT_EVAL_BASED_STATE_CONFIG", '{"BT": 128, "num_warps": 8}')
    assert triton_prefill.state_pass_config(dv, torch.float32)["BT"] == 128
    assert triton_prefill.state_pass_config(dv, torch.float32, {"BT": 32})["BT"] == 32  # explicit wins
    st = triton_prefill.state_from_keys_triton(k, v)
    assert rel(st.S, want.S) < 2e-5 and rel(st.z, want.z) < 2e-5


@here
@pytest.mark.parametrize("T,M,dtype", [(40, 64, torch.float32), (90, 32, torch.float32), (90, 32, torch.bfloat16)])
def test_pla_matches_quadratic(T, M, dtype):
    B, H, dv = 2, 2, 32
    q, k, v = make(B, T, H, dv, dtype, seed=T + M)
    _, ke, ve = make(B, T, H, dv, dtype, seed=T + M + 1)
    km = torch.ones(B, T, dtype=torch.bool)
    km[1, :7] = False
    pos = torch.cumsum(km.long(), 1) - 1
    enc = km & (pos < M)
    km, enc = km.to(DEVICE), enc.to(DEVICE)
    o, st = triton_pla.pla_prefill_triton(q, k, v, ke, ve, enc, key_mask=km, output_final_state=True,
                                          config={"BT": 32})
    args = [ref64(x) for x in (q, k, v, ke, ve)]
    want = R.pla_attention_quadratic(*args, enc.cpu(), key_mask=km.cpu())
    assert rel(o, want) < TOL[dtype]
    _, wst = R.pla_attention_chunked(*args, enc.cpu(), key_mask=km.cpu(), output_final_state=True)
    assert rel(st.S, wst.S) < (2e-5 if dtype == torch.float32 else 5e-3)


@here
@pytest.mark.parametrize("B,H,dv,dtype,double", [(2, 3, 64, torch.float32, False), (1, 2, 112, torch.bfloat16, True),
                                                 (3, 1, 16, torch.float16, False)])
def test_decode_step_matches_reference(B, H, dv, dtype, double):
    g = torch.Generator().manual_seed(dv)
    s0 = R.state_from_keys(torch.randn(B, 9, H, 16, generator=g, dtype=F64),
                           torch.randn(B, 9, H, dv, generator=g, dtype=F64))
    mine = BasedState(s0.S.float().to(DEVICE), s0.z.float().to(DEVICE))
    ref = BasedState(s0.S.clone(), s0.z.clone())
    for _ in range(3):
        q, k, v = (torch.randn(B, H, n, generator=g).to(dtype).to(DEVICE) for n in (16, 16, dv))
        y = triton_decode.based_step_triton(q, k, v, mine, double_add_kv=double)
        yr = R.based_decode_step(ref64(q), ref64(k), ref64(v), ref, double_add_kv=double)
        assert y.dtype == dtype and rel(y, yr) < TOL[dtype]
    assert rel(mine.S, ref.S) < 1e-6 and rel(mine.z, ref.z) < 1e-6


@here
def test_prefill_decode_handoff_through_dispatch():
    """Triton prefill -> Triton steps equal one quadratic pass over the whole sequence (§10.8)."""
    B, n, steps, H, dv = 2, 45, 4, 2, 16
    q, k, v = make(B, n + steps, H, dv, torch.float32, seed=5)
    km = torch.ones(B, n + steps, dtype=torch.bool)
    km[1, :10] = False
    km = km.to(DEVICE)
    full = R.based_attention_quadratic(ref64(q), ref64(k), ref64(v), km.cpu())
    o, st = based_prefill(q[:, :n], k[:, :n], v[:, :n], key_mask=km[:, :n], output_final_state=True, impl="triton")
    assert rel(o, full[:, :n]) < 2e-5
    for t in range(n, n + steps):
        y = based_step(q[:, t], k[:, t], v[:, t], st, impl="triton")
        assert rel(y, full[:, t]) < 2e-5
    enc = (torch.arange(n + steps, device=DEVICE) < 8).expand(B, -1) & km
    o2, _ = pla_prefill(q, k, v, k, v, enc, key_mask=km, impl="triton")
    want = R.pla_attention_quadratic(*(ref64(x) for x in (q, k, v, k, v)), enc.cpu(), key_mask=km.cpu())
    assert rel(o2, want) < 2e-5
