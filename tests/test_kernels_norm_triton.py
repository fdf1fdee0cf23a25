"""The gated RMSNorm of Mamba-2 (gate, then norm) and GLA (norm, then gate): the PyTorch path against the
references, and the Triton kernel (kernels/mamba/norm_triton.py, under ``TRITON_INTERPRET=1`` in a subprocess)
against the PyTorch path, on strided gates, several groups, per-channel and shared weights; and the residual add
fused with the block norm."""
import textwrap

import pytest
import torch

from jrt_eval.kernels.mamba import gated_rms_norm
from jrt_eval.kernels.mamba import reference as R

from interpreted import run_interpreted  # tests/interpreted.py


def test_norm_first_matches_fla_reference_per_head():
    """GLA: a [V] weight shared by the heads, normalised per head, then silu(gate)."""
    g = torch.Generator().manual_seed(0)
    b, T, H, V = 2, 5, 3, 8
    o, gate = torch.randn(b, T, H, V, generator=g), torch.randn(b, T, H * V, generator=g)
    w = torch.randn(V, generator=g)
    got = gated_rms_norm(o.reshape(b, T, H * V), gate, w, 1e-6, H, torch.float32, norm_first=True, backend="torch")
    want = R.gated_rms_norm_ref(o.double(), gate.view(b, T, H, V).double(), w.double(), 1e-6).reshape(b, T, H * V)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)


def test_gate_first_matches_transformers_gated_norm():
    """Mamba-2: transformers' MambaRMSNormGated (gate, then norm per group) with a per-channel weight."""
    from transformers.models.mamba2 import modeling_mamba2

    # transformers 5.25 renamed it (MambaRMSNormGated -> Mamba2RMSNormGated)
    MambaRMSNormGated = getattr(modeling_mamba2, "Mamba2RMSNormGated", None) or modeling_mamba2.MambaRMSNormGated

    g = torch.Generator().manual_seed(1)
    d = 12
    y, z = torch.randn(3, 4, d, generator=g), torch.randn(3, 4, d, generator=g)
    for groups in (1, 2):
        ref = MambaRMSNormGated(d, group_size=d // groups, eps=1e-5)
        with torch.no_grad():
            ref.weight.copy_(torch.randn(d, generator=g))
        got = gated_rms_norm(y, z, ref.weight, 1e-5, groups, torch.float32, backend="torch")
        torch.testing.assert_close(got, ref(y, z), rtol=1e-5, atol=1e-6)


_INTERPRETED = textwrap.dedent('''
    import json, torch
    from jrt_eval.kernels.based import interpreter_compat
    interpreter_compat.patch()
    from jrt_eval.kernels.mamba.scan import gated_rms_norm_torch
    from jrt_eval.kernels.mamba.norm_triton import gated_rms_norm_triton

    out = {}
    g = torch.Generator().manual_seed(0)

    from interpreted import rel_max_err as err

    for name, (lead, d, groups, per_channel, norm_first, has_z, out_dtype) in {
        "mamba2_g1": ((2, 7), 96, 1, True, False, True, torch.float32),
        "mamba2_g2_odd": ((3,), 2 * 37, 2, True, False, True, torch.bfloat16),   # group size not a power of 2
        "gla_heads": ((2, 5), 4 * 24, 4, False, True, True, torch.float32),
        "gla_no_gate": ((4,), 3 * 16, 3, False, True, False, torch.float32),
        "rms_norm": ((2, 3), 80, 1, True, True, False, torch.float32),  # ssm_common.rms_norm on CUDA
        "mamba2_z_rows_align8": ((2, 3), 48, 1, True, False, True, torch.bfloat16),
    }.items():
        y = torch.randn(*lead, d, generator=g)
        extra = 16 if name.endswith("align8") else 11  # row stride d + 16: a multiple of 8 (row_align), else odd
        proj = torch.randn(*lead, d + extra, generator=g)
        z = proj[..., 5:5 + d] if has_z else None  # a strided slice of a projection
        w = torch.randn(d if per_channel else d // groups, generator=g)
        want = gated_rms_norm_torch(y.double(), None if z is None else z.double(), w.double(), 1e-5, groups,
                                    torch.float64, norm_first)
        got = gated_rms_norm_triton(y, z, w, 1e-5, groups, out_dtype, norm_first)
        assert got.shape == y.shape and got.dtype == out_dtype
        out[name] = err(got, want)
    # the fused residual add + block norm: fp32 residual + bf16 block output, and a bf16 residual
    # (residual_in_fp32 off: the add rounds to bf16 before the norm, as the PyTorch add does)
    from jrt_eval.kernels.mamba.norm_triton import add_rms_norm_triton
    for name, (rdt, d) in {"add_norm_fp32_resid": (torch.float32, 96),
                           "add_norm_bf16_resid": (torch.bfloat16, 75)}.items():
        resid = torch.randn(3, 5, d, generator=g).to(rdt)
        delta = torch.randn(3, 5, d + 4, generator=g).bfloat16()[..., 2:2 + d]  # strided
        w = torch.randn(d, generator=g)
        want_r = resid + delta
        want_h = gated_rms_norm_torch(want_r.double(), None, w.double(), 1e-5, 1, torch.float64, True)
        r, h = add_rms_norm_triton(resid, delta, w, 1e-5, torch.float32)
        assert r.dtype == rdt and h.dtype == torch.float32 and r.shape == resid.shape
        out[name + ".resid"] = err(r, want_r)
        out[name + ".norm"] = err(h, want_h)
    # the gated MLP's activation from a fused gate / up output (rows strided: a slice of a wider projection)
    from jrt_eval.kernels.mamba.act_triton import silu_mul_triton
    from jrt_eval.kernels.mamba.scan import silu_mul_torch
    for name, (dt, m, second) in {"silu_mul_fp32": (torch.float32, 300, False), "silu_mul_bf16": (torch.bfloat16, 37, False),
                                  "silu_mul_gate_second": (torch.float32, 45, True)}.items():
        gu = torch.randn(2, 9, 2 * m + 6, generator=g).to(dt)[..., 3:3 + 2 * m]
        got = silu_mul_triton(gu, gate_second=second)
        assert got.shape == (2, 9, m) and got.dtype == dt and got.is_contiguous()
        out[name] = err(got, silu_mul_torch(gu.double(), gate_second=second))
    a, b = torch.randn(4, 6, generator=g, dtype=torch.float64).chunk(2, -1)  # the halves' roles, spelled out
    assert torch.equal(silu_mul_torch(torch.cat([a, b], -1)), torch.nn.functional.silu(a) * b)
    assert torch.equal(silu_mul_torch(torch.cat([a, b], -1), gate_second=True), a * torch.nn.functional.silu(b))
    print("RESULT " + json.dumps(out))
''')


def test_gated_norm_triton_under_interpreter(tmp_path):
    pytest.importorskip("triton")
    errs = run_interpreted(_INTERPRETED, tmp_path, "interp_norm.py")
    assert set(errs) == {"mamba2_g1", "mamba2_g2_odd", "gla_heads", "gla_no_gate", "rms_norm",
                         "mamba2_z_rows_align8"} | {
        f"add_norm_{r}_resid.{part}" for r in ("fp32", "bf16") for part in ("resid", "norm")} | {
        "silu_mul_fp32", "silu_mul_bf16", "silu_mul_gate_second"}
    # bf16 outputs: one rounding step (the interpreter's float32 -> bf16 cast need not round as PyTorch's does)
    limits = {"mamba2_g2_odd": 8e-3, "mamba2_z_rows_align8": 8e-3, "add_norm_bf16_resid.resid": 8e-3,
              "add_norm_bf16_resid.norm": 8e-3,
              "silu_mul_bf16": 8e-3}
    bad = {k: v for k, v in errs.items() if not v < limits.get(k, 1e-5)}
    assert not bad, bad
