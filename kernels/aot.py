"""Compile our Triton kernels for a GPU target on a machine without a GPU (ahead of time).

Triton can compile for a named target (``GPUTarget("cuda", 90, 64)`` = H100/H200) with the ptxas it
ships, no driver needed. ``capture_launches()`` runs our host functions on CPU tensors and records
each kernel launch (arguments, constexprs, num_warps / num_stages) instead of running it; then
``compile_launch`` builds the kernel exactly as that launch would, for the target, and reads its
resource usage (registers, spill stack, shared memory) and instruction mix from the cubin.

Uses: CI proves on CPU that every kernel still compiles for Hopper (the interpreter tests check the
math, not the compiled code path), and ``benchmarks/compile_stats.py`` ranks tile configs by
registers and spills before device time is spent. Arguments are specialised as Triton's launcher does
(aligned pointers and integers divisible by 16 carry ``tt.divisibility``, an integer equal to 1 becomes a
constant), so the code is the one a launch of the same shapes compiles.
"""
from __future__ import annotations

import inspect
import os
import re
import subprocess
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

_PTR = {torch.float32: "*fp32", torch.bfloat16: "*bf16", torch.float16: "*fp16", torch.float64: "*fp64",
        torch.uint8: "*u8", torch.int8: "*i8", torch.int32: "*i32", torch.int64: "*i64", torch.bool: "*i1"}
SASS_OPS = ("HGMMA", "HMMA", "LDS", "STS", "LDSM", "STSM", "BAR", "LDL", "STL", "F2FP", "SHFL")


@dataclass
class Launch:
    kernel: object  # triton JITFunction
    args: tuple
    kwargs: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.kernel.fn.__name__


_CAPTURE_ARCH = None  # the target of the launches being captured (host code asks: see capture_arch)


def capture_arch():
    """While :func:`capture_launches` runs, the compute capability x10 it captures for (host code that picks a
    code path by GPU generation, e.g. TMA from sm_90, picks the target's instead of the CPU tensors'); else None."""
    return _CAPTURE_ARCH


@contextmanager
def capture_launches(arch: int = 90):
    """Within the block, ``kernel[grid](...)`` records a :class:`Launch` and returns None (nothing runs)."""
    from triton.runtime.jit import JITFunction

    global _CAPTURE_ARCH
    calls: list = []
    orig = JITFunction.run

    def record(self, *args, grid=None, warmup=False, **kwargs):
        calls.append(Launch(self, args, kwargs))
        return None

    JITFunction.run = record
    _CAPTURE_ARCH = arch
    try:
        yield calls
    finally:
        JITFunction.run = orig
        _CAPTURE_ARCH = None


def _arg_type(value) -> str:
    if isinstance(value, torch.Tensor):
        return _PTR[value.dtype]
    if isinstance(value, bool):
        return "i1"
    if isinstance(value, int):
        return "i32" if -2 ** 31 <= value < 2 ** 31 else "i64"
    if isinstance(value, float):
        return "fp32"
    raise TypeError(f"cannot type kernel argument {value!r}")


def source_of(launch: Launch):
    """(ASTSource, compile options) of a recorded launch."""
    from triton.compiler import ASTSource

    jit = launch.kernel
    params = inspect.signature(jit.fn).parameters
    names = list(params)
    options = {k: v for k, v in launch.kwargs.items() if k not in params}
    bound = dict(zip(names, launch.args))
    bound.update({k: v for k, v in launch.kwargs.items() if k in params})
    for name, p in params.items():  # defaults of unpassed constexprs
        if name not in bound and p.default is not inspect.Parameter.empty:
            bound[name] = p.default
    kparams = {p.name: p for p in jit.params}
    signature, constexprs, attrs = {}, {}, {}
    for i, name in enumerate(names):
        value = bound[name]
        if kparams[name].is_constexpr or value is None:
            signature[name] = "constexpr"
            constexprs[name] = value
            continue
        signature[name] = _arg_type(value)
        spec = _specialization(value, kparams[name])
        if spec == "one":  # a real launch compiles an int argument equal to 1 as a constant
            signature[name] = "constexpr"
            constexprs[name] = 1
        elif spec == "D":  # pointer 16-byte aligned / int divisible by 16: vectorised loads, as launched
            attrs[(i,)] = [["tt.divisibility", 16]]
    return ASTSource(fn=jit, signature=signature, constexprs=constexprs, attrs=attrs), options


def _specialization(value, param) -> str:
    """What Triton's launcher would specialise ``value`` to: "one", "D" (divisible by 16) or ""."""
    if isinstance(value, bool) or isinstance(value, float) or param.do_not_specialize:
        return ""
    if isinstance(value, int):
        if value == 1:
            return "one"
        return "D" if value % 16 == 0 and not param.do_not_specialize_on_alignment else ""
    if isinstance(value, torch.Tensor):
        return "D" if value.data_ptr() % 16 == 0 and not param.do_not_specialize_on_alignment else ""
    return ""


def _tool(name: str) -> str:
    import triton.backends.nvidia as nv

    return os.path.join(os.path.dirname(nv.__file__), "bin", name)


def compile_launch(launch: Launch, arch: int = 90, sass: bool = True) -> dict:
    """Compile a recorded launch for ``sm_<arch>``; returns registers, spill stack (bytes), shared memory and,
    with ``sass``, counts of a few SASS instructions (tensor-core, shared-memory, local-memory spill ops)."""
    import triton
    from triton.backends.compiler import GPUTarget

    src, options = source_of(launch)
    kernel = triton.compile(src, target=GPUTarget("cuda", arch, 64), options=options)
    out: dict = {"kernel": launch.name, "num_warps": options.get("num_warps", 4),
                 "num_stages": options.get("num_stages", 3), "dynamic_smem": kernel.metadata.shared}
    with tempfile.TemporaryDirectory() as tmp:
        cubin = Path(tmp) / "k.cubin"
        cubin.write_bytes(kernel.asm["cubin"])
        usage = subprocess.run([_tool("cuobjdump"), "-res-usage", str(cubin)], capture_output=True, text=True,
                               check=True).stdout
        for key in ("REG", "STACK", "SHARED", "LOCAL"):
            m = re.search(rf"\b{key}:(\d+)", usage)
            out[key.lower()] = int(m.group(1)) if m else None
        if sass:
            text = subprocess.run([_tool("nvdisasm"), "-c", str(cubin)], capture_output=True, text=True,
                                  check=True).stdout
            counts: dict = {}
            for line in text.splitlines():
                m = re.search(r"\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)", line)
                if m:
                    counts[m.group(1)] = counts.get(m.group(1), 0) + 1
            out["sass_instructions"] = sum(counts.values())
            out.update({op.lower(): counts.get(op, 0) for op in SASS_OPS})
            # global-load widths: 16-byte vector loads vs one 16-bit element per instruction
            out["ldg_128"] = len(re.findall(r"\bLDG\.E(?:\.[A-Z_]+)*\.128\b", text))
            out["ldg_u16"] = len(re.findall(r"\bLDG\.E(?:\.[A-Z_]+)*\.U16\b", text))
            # tensor-memory-accelerator copies (Hopper): tile loads / stores issued by one thread
            out["utmaldg"] = len(re.findall(r"\bUTMALDG\b", text))
            out["utmastg"] = len(re.findall(r"\bUTMASTG\b", text))
            out.update(main_loop_counts(text))
    return out


def main_loop_counts(sass: str) -> dict:
    """Spill loads / stores (LDL / STL) and instructions inside the kernel's main loop: the body of the longest
    predicated backward branch (a loop's back edge; the unconditional ones are barrier-wait retries). Spills in the
    loop run once per chunk, those outside once per program, so this ranks variants better than the stack size."""
    lines = sass.splitlines()
    label_at: dict = {}
    ins: list = []
    pending: list = []
    for line in lines:
        lab = re.match(r"\s*\.(L_x_\d+):", line)
        if lab:
            pending.append(lab.group(1))
            continue
        m = re.search(r"/\*([0-9a-f]{4,})\*/\s+(.*?);", line)
        if m:
            addr = int(m.group(1), 16)
            for name in pending:
                label_at[name] = addr
            pending = []
            ins.append((addr, m.group(2).strip()))
    best = None
    for addr, text in ins:
        m = re.match(r"@!?P\w+\s+BRA\b.*\(\.(L_x_\d+)\)", text)
        if m and m.group(1) in label_at:
            target = label_at[m.group(1)]
            if target < addr - 0x10 and (best is None or addr - target > best[1] - best[0]):
                best = (target, addr)
    if best is None:
        return {"loop_instructions": 0, "loop_ldl": 0, "loop_stl": 0}
    body = [text for addr, text in ins if best[0] <= addr <= best[1]]

    def count(op):
        return sum(1 for text in body if re.match(rf"(@!?U?P\w+\s+)?{op}\b", text))

    return {"loop_instructions": len(body), "loop_ldl": count("LDL"), "loop_stl": count("STL")}


# ------------------------------------------------------------------------------------------ cases
def _cases() -> dict:
    """name -> fn(dtype) running one host launcher on CPU tensors at the published models' widths (the
    constexpr tile shapes follow the widths, so these compile the kernels the models run)."""

    def rn(*shape, dtype=torch.float32):
        return torch.randn(*shape).to(dtype)

    def based_prefill(dtype, n_seg=1, masked=False):
        from .based import triton_prefill

        B, T, H = 2, 256, 2
        mask = None
        if masked:
            mask = torch.ones(B, T, dtype=torch.bool)
            mask[0, :9] = False
        triton_prefill.based_prefill_triton(rn(B, T, H, 16, dtype=dtype), rn(B, T, H, 16, dtype=dtype),
                                            rn(B, T, H, 64, dtype=dtype), key_mask=mask, output_final_state=True,
                                            n_seg=n_seg)

    def pla_prefill(dtype):
        from .based import triton_pla

        B, T, H = 2, 256, 2
        enc = torch.zeros(B, T, dtype=torch.bool)
        enc[:, :100] = True
        q, k, ke = (rn(B, T, H, 16, dtype=dtype) for _ in range(3))
        v, ve = (rn(B, T, H, 64, dtype=dtype) for _ in range(2))
        triton_pla.pla_prefill_triton(q, k, v, ke, ve, enc, output_final_state=True)

    def pla_prefill_ranges(dtype):  # as the adapters call it: left padding, an encoder prefix, both as ranges
        from .based import triton_pla

        B, T, H = 2, 256, 2
        km = torch.ones(B, T, dtype=torch.bool)
        km[1, :40] = False
        enc = km & (torch.cumsum(km.long(), 1) <= 100)
        q, k, ke = (rn(B, T, H, 16, dtype=dtype) for _ in range(3))
        v, ve = (rn(B, T, H, 64, dtype=dtype) for _ in range(2))
        triton_pla.pla_prefill_triton(q, k, v, ke, ve, enc, key_mask=km, output_final_state=True,
                                      masks_are_ranges=True)

    def based_step(dtype):
        from .based import triton_decode
        from .based.reference import BasedState

        B, H = 4, 16
        state = BasedState(torch.zeros(B, H, 153, 64), torch.zeros(B, H, 153))
        triton_decode.based_step_triton(rn(B, H, 16, dtype=dtype), rn(B, H, 16, dtype=dtype),
                                        rn(B, H, 64, dtype=dtype), state)

    def mamba_scan(dtype):  # Mamba-130M: d_inner 1536, d_state 16
        from .mamba import selective_scan

        b, T, d, n = 2, 64, 1536, 16
        selective_scan.selective_scan_triton(rn(b, T, d, dtype=dtype), rn(b, T, d, dtype=dtype), -torch.rand(d, n),
                                             rn(b, T, n, dtype=dtype), rn(b, T, n, dtype=dtype), D=rn(d),
                                             z=rn(b, T, d, dtype=dtype), dt_bias=rn(d),
                                             mask=torch.ones(b, T, dtype=torch.long))

    def mamba_step(dtype):
        from .mamba import selective_scan

        b, d, n = 4, 1536, 16
        selective_scan.selective_state_update_triton(torch.zeros(b, d, n), rn(b, d, dtype=dtype),
                                                     rn(b, d, dtype=dtype), -torch.rand(d, n), rn(b, n, dtype=dtype),
                                                     rn(b, n, dtype=dtype), D=rn(d), z=rn(b, d, dtype=dtype),
                                                     dt_bias=rn(d))

    def gla_step(dtype):  # GLA-1.3B heads: K 256, V 512; q, k, v and the gate's x strided views of the packed
        from .mamba import gla_triton  # projection; the gate computed in the step (the adapter's call), or given

        b, h, K, V = 2, 4, 256, 512
        proj = rn(b, 2 * h * K + h * V + h * V + 16, dtype=dtype)
        q, k, v = (proj[:, a:a + h * w].unflatten(-1, (h, w)) for a, w in ((0, K), (h * K, K), (2 * h * K, V)))
        gate = (proj[:, -16:], rn(h * K, 16, dtype=dtype), rn(h * K, dtype=dtype), 16.0, None)
        gla_triton.gla_step_triton(torch.zeros(b, h, K, V), q, k, v, None, K ** -0.5, out_dtype=dtype, gate=gate)
        gla_triton.gla_step_triton(torch.zeros(b, h, K, V), q, k, v, -torch.rand(b, h, K), K ** -0.5)

    def gla_chunk(dtype):  # GLA-1.3B heads (K 256, V 512) over two chunks: the decay pass, the inter-chunk pass
        from .mamba import gla_chunk_triton

        b, T, h, K, V = 2, 128, 4, 256, 512
        gla_chunk_triton.gla_chunk_inter(rn(b, T, h, K, dtype=dtype), rn(b, T, h, K, dtype=dtype),
                                         rn(b, T, h, V, dtype=dtype), -torch.rand(b, T, h, K), rn(b, T, h, 64), 0.0625)

    def gla_gate(dtype):  # GLA-1.3B's forget gate over a prompt: rank 16 -> 4 heads x 256
        from .mamba import gla_triton

        gla_triton.gla_gate_triton(rn(2, 64, 16, dtype=dtype), rn(1024, 16, dtype=dtype), rn(1024, dtype=dtype), 16.0,
                                   out_dtype=dtype)

    def silu_mul(dtype):  # GLA-1.3B's MLP (m = 5632), the hazyresearch GatedMlp's (gate second, m = 2816)
        from .mamba import act_triton

        act_triton.silu_mul_triton(rn(2, 64, 2 * 5632, dtype=dtype))
        act_triton.silu_mul_triton(rn(2, 64, 2 * 2816, dtype=dtype), gate_second=True)

    def ssd_prefill(dtype):  # Mamba-2-130M: 24 heads of 64, d_state 128, one group
        from .mamba import ssd_triton

        b, T, h, p, n = 2, 128, 24, 64, 128
        ssd_triton.ssd_prefill_triton(rn(b, T, h, p, dtype=dtype), rn(b, T, h, dtype=dtype), -torch.rand(h),
                                      rn(b, T, 1, n, dtype=dtype), rn(b, T, 1, n, dtype=dtype), D=rn(h),
                                      dt_bias=rn(h), mask=torch.ones(b, T, dtype=torch.long))

    def ssd_step(dtype):
        from .mamba import ssd_triton

        b, h, p, n = 4, 24, 64, 128
        ssd_triton.ssd_step_triton(torch.zeros(b, h, p, n), rn(b, h, p, dtype=dtype), rn(b, h, dtype=dtype),
                                   -torch.rand(h), rn(b, 1, n, dtype=dtype), rn(b, 1, n, dtype=dtype), D=rn(h),
                                   dt_bias=rn(h))

    def conv_prefill(dtype):  # Mamba-2-130M's conv channels (x, B, C: 1536 + 2 x 128), a slice of in_proj's output
        from .mamba import conv_triton

        b, T, c, k = 2, 128, 1792, 4
        conv_triton.causal_conv1d_triton(rn(b, T, c + 1560, dtype=dtype)[..., 1536:1536 + c], rn(c, k, dtype=dtype),
                                         rn(c, dtype=dtype), mask=torch.ones(b, T, dtype=torch.long))

    def conv_step(dtype):
        from .mamba import conv_triton

        b, c, k = 4, 1792, 4
        conv_triton.conv_step_triton(torch.zeros(b, c, k - 1, dtype=dtype), rn(b, c, dtype=dtype),
                                     rn(c, k, dtype=dtype), rn(c, dtype=dtype))

    def gated_norm(dtype):  # Mamba-2-130M (gate first, 1536 channels, one group), GLA-1.3B (4 heads of 512)
        from .mamba import norm_triton

        norm_triton.gated_rms_norm_triton(rn(2, 64, 1536), rn(2, 64, 3352, dtype=dtype)[..., :1536],
                                          rn(1536, dtype=dtype), 1e-5, 1, dtype)
        norm_triton.gated_rms_norm_triton(rn(2, 64, 2048, dtype=dtype), rn(2, 64, 2048, dtype=dtype),
                                          rn(512, dtype=dtype), 1e-6, 4, dtype, norm_first=True)
        norm_triton.add_rms_norm_triton(rn(2, 64, 768), rn(2, 64, 768, dtype=dtype), rn(768, dtype=dtype), 1e-5, dtype)

    return {
        "based_prefill": based_prefill,
        "based_prefill_segmented_masked": lambda dt: based_prefill(dt, n_seg=2, masked=True),
        "pla_prefill": pla_prefill, "pla_prefill_ranges": pla_prefill_ranges, "based_step": based_step,
        "mamba_scan": mamba_scan, "mamba_step": mamba_step, "gla_step": gla_step, "gla_gate": gla_gate,
        "gla_chunk": gla_chunk,
        "ssd_prefill": ssd_prefill,
        "ssd_step": ssd_step, "conv_prefill": conv_prefill, "conv_step": conv_step, "gated_norm": gated_norm,
        "silu_mul": silu_mul,
    }


CASES = _cases()


def launches_of(case: str, dtype: torch.dtype = torch.bfloat16, arch: int = 90) -> list:
    """The kernel launches one case makes for ``sm_<arch>`` (nothing runs)."""
    with capture_launches(arch) as calls:
        CASES[case](dtype)
    return calls
