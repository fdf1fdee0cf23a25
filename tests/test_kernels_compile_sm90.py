"""Every Triton kernel compiles for Hopper (sm_90), on a machine without a GPU.

The interpreter tests (test_kernels_*_triton.py) check the kernels' math, but the interpreter never
runs Triton's GPU compiler: layouts, tensor-core lowering and ptxas. Here each host launcher runs on
CPU tensors at the published models' widths with its launches recorded (jrt_eval.kernels.aot), and
each launch is compiled for sm_90 with the ptxas that Triton ships. The no-spill assertions guard the
configs that were chosen for having no register spills (benchmarks/compile_stats.py reports them).
"""
import pytest
import torch

triton = pytest.importorskip("triton")
if type(triton.language.standard.sum).__name__ == "InterpretedFunction":  # TRITON_INTERPRET=1: no compiler
    pytest.skip("Triton's interpreter is on: nothing is compiled", allow_module_level=True)

from jrt_eval.kernels import aot  # noqa: E402

CASES = [(name, torch.bfloat16) for name in aot.CASES] + [
    ("based_prefill", torch.float32), ("ssd_prefill", torch.float32), ("ssd_step", torch.float32)]
NO_SPILL = {("based_step", torch.bfloat16), ("mamba_scan", torch.bfloat16), ("mamba_step", torch.bfloat16),
            ("gla_step", torch.bfloat16), ("gla_gate", torch.bfloat16), ("ssd_step", torch.bfloat16),
            ("ssd_prefill", torch.bfloat16),
            ("conv_prefill", torch.bfloat16), ("conv_step", torch.bfloat16), ("gated_norm", torch.bfloat16),
            ("silu_mul", torch.bfloat16)}


@pytest.mark.parametrize("case,dtype", CASES, ids=[f"{c}-{str(d)[6:]}" for c, d in CASES])
def test_compiles_for_sm90(case, dtype):
    launches = aot.launches_of(case, dtype)
    assert launches, f"{case}: no kernel launch recorded"
    for launch in launches:
        stats = aot.compile_launch(launch, arch=90, sass=False)
        assert 0 < stats["reg"] <= 255, stats
        if (case, dtype) in NO_SPILL:
            assert stats["stack"] == 0, f"{case} {dtype}: {stats['stack']} bytes of register spill: {stats}"


def test_capture_records_without_running():
    """The recorder returns before any launch: outputs stay as allocated, nothing runs on the CPU."""
    launches = aot.launches_of("mamba_step", torch.bfloat16)
    assert [l.name for l in launches] == ["_state_update_kernel"]
    src, options = aot.source_of(launches[0])
    assert options["num_warps"] == 4
    assert src.signature["state_ptr"] == "*fp32" and src.signature["x_ptr"] == "*bf16"


def test_strided_rows_load_16_bytes_at_a_time():
    """Mamba-2-130M's conv and gated norm read rows of the 3352-wide in_proj output (a stride Triton does not
    specialise: 3352 = 8 x 419). With the strides passed divided by their alignment (selective_scan.row_align)
    those rows load as 16-byte vectors; before, the conv issued one 16-bit load per element and ran at 1.3 TB/s."""
    conv = aot.compile_launch(aot.launches_of("conv_prefill", torch.bfloat16)[0], arch=90)
    assert conv["ldg_128"] >= 4, conv  # x: one vector per tap and row (weights / bias stay scalar, from L1)
    norm = aot.compile_launch(aot.launches_of("gated_norm", torch.bfloat16)[0], arch=90)  # the Mamba-2 launch
    assert norm["ldg_u16"] == 0 and norm["ldg_128"] >= 2, norm


def test_based_prefill_moves_tiles_by_tma_on_hopper():
    """On sm_90 the 16-bit Based prefill and its state pass (JRT-RNN's encoder) take their tiles by TMA, three
    stages deep: the pointer loads' address registers spilled (256 bytes a thread) and each chunk waited at the
    top of the loop for loads issued at the end of the last one (Nsight Compute, benchmarks/README.md); with TMA
    the prefill ran 4.3 instead of 5.6 ms at N = 32768, B = 16. fp32 inputs keep the pointer loads (not timed)."""
    for case in ("based_prefill", "pla_prefill"):
        for launch in aot.launches_of(case, torch.bfloat16):
            assert launch.kwargs["TMA"] and launch.kwargs["num_stages"] == 3, (case, launch.kwargs)
            stats = aot.compile_launch(launch, arch=90)
            assert stats["utmaldg"] >= 2 and stats["stack"] <= 256, stats
    (fp32,) = aot.launches_of("based_prefill", torch.float32)
    assert not fp32.kwargs["TMA"]


def test_state_pass_over_a_key_range_keeps_its_loop_free_of_spills():
    """JRT-RNN's encoder state pass with range masks (as the adapters call it) reads exactly each row's key range by
    TMA, masks no key, and builds its output row map after the loop: its main loop spilled 44 loads / stores per chunk
    before (0.875 ms at N = 32768, B = 16 on an H100) and 3 now (0.75 ms). The causal pass from its state follows."""
    state_pass, causal = aot.launches_of("pla_prefill_ranges", torch.bfloat16)
    assert not state_pass.kwargs["COMPUTE_OUT"] and state_pass.kwargs["MASK_RANGE"] and state_pass.kwargs["TMA"]
    assert causal.kwargs["COMPUTE_OUT"] and causal.kwargs["HAS_INIT"]
    stats = aot.compile_launch(state_pass, arch=90)
    assert stats["utmaldg"] >= 2 and stats["loop_instructions"] > 500, stats
    assert stats["loop_ldl"] + stats["loop_stl"] <= 8, stats


def test_gla_chunk_holds_its_state_in_registers():
    """The GLA prefill's inter-chunk kernel keeps a [256 x 64] float32 block of the state in registers across the
    chunks, its matmuls on the tensor cores (wgmma) and its loop free of spills; a draft that applied the decays
    inside the loop (a 64 x 256 float32 gate tile live beside the state) spilled 53-540 loads / stores per chunk.
    Default: 4 warps, one stage (64 KB of shared memory, two programs per SM; 2.04 vs 2.77 ms per layer for fla's
    chunk_gla on an H100)."""
    prep, inter = aot.launches_of("gla_chunk", torch.bfloat16)
    assert inter.kwargs["num_warps"] == 4 and inter.kwargs["num_stages"] == 1 and inter.kwargs["BV"] == 64
    stats = aot.compile_launch(inter, arch=90)
    assert stats["hgmma"] >= 3 and stats["loop_ldl"] + stats["loop_stl"] == 0, stats
    assert stats["dynamic_smem"] <= 96 * 1024, stats
    assert aot.compile_launch(prep, arch=90)["stack"] == 0
