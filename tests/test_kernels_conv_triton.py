"""The causal conv of Mamba / Mamba-2: the PyTorch paths (kernels/mamba/scan.py) and the Triton kernels
(kernels/mamba/conv_triton.py, run under ``TRITON_INTERPRET=1`` in a subprocess) against the float64 reference
``reference.causal_conv1d_ref``: prefill with masks and strided inputs, and the decode step continuing from
``conv_tail`` exactly as the whole sequence would."""
import textwrap

import pytest
import torch

from jrt_eval.kernels.mamba import causal_conv1d, conv_step, conv_tail
from jrt_eval.kernels.mamba import reference as R

from interpreted import run_interpreted  # tests/interpreted.py


def _case(seed, b, T, c, k, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, T, c, generator=g, dtype=dtype)
    w = torch.randn(c, k, generator=g, dtype=dtype)
    bias = torch.randn(c, generator=g, dtype=dtype)
    mask = torch.ones(b, T, dtype=torch.long)
    mask[0, : T // 3] = 0  # left padding
    return x, w, bias, mask


@pytest.mark.parametrize("k", [4, 2])
def test_conv_torch_paths_match_reference(k):
    """Prefill (mask, bias, SiLU or not), then decode steps from conv_tail: the same outputs as the reference over
    the whole masked sequence, and the step updates the state in place."""
    b, T, c, n = 3, 11, 5, 4
    x, w, bias, mask = _case(k, b, T + n, c, k)
    want = R.causal_conv1d_ref(x, w, bias, mask=mask)
    got = causal_conv1d(x[:, :T], w, bias, mask=mask[:, :T], backend="torch")
    torch.testing.assert_close(got, want[:, :T], rtol=1e-12, atol=1e-12)
    plain = causal_conv1d(x[:, :T], w, None, activation=False, backend="torch")
    torch.testing.assert_close(plain, R.causal_conv1d_ref(x[:, :T], w, None, activation=False), rtol=1e-12, atol=1e-12)
    state = conv_tail(x[:, :T], k, mask[:, :T])
    ptr = state.data_ptr()
    for j in range(T, T + n):
        yj = conv_step(state, x[:, j], w, bias, backend="torch")
        torch.testing.assert_close(yj, want[:, j], rtol=1e-12, atol=1e-12)
    assert state.data_ptr() == ptr


def test_conv_tail_masks_pads_of_short_rows():
    """A row shorter than the window: pads inside the tail are zeros in the state (they never enter a window)."""
    x = torch.randn(2, 2, 3, dtype=torch.float64) + 5
    mask = torch.tensor([[0, 1], [1, 1]])
    tail = conv_tail(x, 4, mask)
    assert tail.shape == (2, 3, 3)
    assert torch.equal(tail[0, :, :2], torch.zeros(3, 2)) and torch.equal(tail[0, :, 2], x[0, 1])
    assert torch.equal(tail[1, :, 1:], x[1].T)


_INTERPRETED = textwrap.dedent('''
    import json, torch
    from jrt_eval.kernels.based import interpreter_compat
    interpreter_compat.patch()
    from jrt_eval.kernels.mamba import reference as R
    from jrt_eval.kernels.mamba import conv_tail
    from jrt_eval.kernels.mamba.conv_triton import causal_conv1d_triton, conv_step_triton

    out = {}

    from interpreted import rel_max_err as err

    g = torch.Generator().manual_seed(0)
    for name, (b, T, c, k, bt, bc, masked, bias_on, act) in {
        "T70_c200_k4": (2, 70, 200, 4, 64, 128, True, True, True),     # two time tiles, a partial channel tile
        "T3_c5_k4": (3, 3, 5, 4, 64, 128, True, True, True),           # shorter than the window
        "T33_c40_k2_nobias_noact": (2, 33, 40, 2, 16, 32, False, False, False),
        "T20_c64_k3": (1, 20, 64, 3, 8, 16, False, True, True),
    }.items():
        wide = torch.randn(b, T, c + 7, generator=g)  # x: a strided slice of a wider projection
        x = wide[..., 3:3 + c]
        w, bias = torch.randn(c, k, generator=g), torch.randn(c, generator=g)
        mask = torch.ones(b, T, dtype=torch.long)
        if masked:
            mask[0, : (T + 1) // 2] = 0
        m = mask if masked else None
        bb = bias if bias_on else None
        want = R.causal_conv1d_ref(x.double(), w.double(), None if bb is None else bb.double(), act,
                                   None if m is None else m)
        got = causal_conv1d_triton(x, w, bb, act, m, config={"BT": bt, "BC": bc})
        assert got.is_contiguous() and got.dtype == x.dtype
        out[f"prefill.{name}"] = err(got, want)
        # decode: from the tail of the first T-3 tokens, step the last 3 (a float32 state, as the models keep
        # it in their dtype), against the whole-sequence reference
        T0 = T - 3 if T > 3 else 0
        st = conv_tail(x[:, :T0], k, None if m is None else m[:, :T0]).clone()
        worst = 0.0
        for j in range(T0, T):
            xj = x[:, j] if m is None else x[:, j] * m[:, j, None]
            yj = conv_step_triton(st, xj, w, bb, act)
            worst = max(worst, err(yj, want[:, j]))
        out[f"step.{name}"] = worst
        out[f"step.{name}.state"] = err(st, conv_tail(x, k, m))
    # row strides divisible by 8 and by 2 only (kernels.mamba.selective_scan.row_align: the strides are passed
    # divided by their alignment), as Mamba-2's 3352-wide in_proj output
    for name, extra in (("align8", 16), ("align2", 2)):
        wide = torch.randn(2, 19, 40 + extra, generator=g)
        x = wide[..., extra // 2:extra // 2 + 40]
        w, bias = torch.randn(40, 4, generator=g), torch.randn(40, generator=g)
        mask = torch.ones(2, 19, dtype=torch.long)
        mask[1, :6] = 0
        want = R.causal_conv1d_ref(x.double(), w.double(), bias.double(), True, mask)
        out[f"prefill.{name}"] = err(causal_conv1d_triton(x, w, bias, True, mask, config={"BT": 8, "BC": 32}), want)
        st = conv_tail(x[:, :16], 4, mask[:, :16]).clone()
        out[f"step.{name}"] = max(err(conv_step_triton(st, x[:, j], w, bias, True), want[:, j]) for j in range(16, 19))
    # bf16 inputs / state, float32 math: one rounding of the output
    x = torch.randn(2, 40, 48, generator=g).bfloat16()
    w, bias = torch.randn(48, 4, generator=g).bfloat16(), torch.randn(48, generator=g).bfloat16()
    want = R.causal_conv1d_ref(x.double(), w.double(), bias.double())
    out["prefill.bf16"] = err(causal_conv1d_triton(x, w, bias), want)
    st = conv_tail(x[:, :39], 4)
    out["step.bf16"] = err(conv_step_triton(st, x[:, 39], w, bias, out_dtype=torch.float32), want[:, 39])
    print("RESULT " + json.dumps(out))
''')


def test_conv_triton_kernels_under_interpreter(tmp_path):
    pytest.importorskip("triton")
    errs = run_interpreted(_INTERPRETED, tmp_path, "interp_conv.py")
    names = ("T70_c200_k4", "T3_c5_k4", "T33_c40_k2_nobias_noact", "T20_c64_k3")
    expected = {f"{kind}.{n}" for n in names for kind in ("prefill", "step")} | {"prefill.bf16", "step.bf16"}
    assert set(errs) >= expected, sorted(expected - set(errs))
    bf16 = {"prefill.bf16": 8e-3, "step.bf16": 1e-6}  # bf16 output rounding; the step's output is float32
    bad = {k: v for k, v in errs.items() if not v < bf16.get(k, 1e-6)}
    assert not bad, bad
