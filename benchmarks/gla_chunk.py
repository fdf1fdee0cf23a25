"""GLA's prefill with the state kept on chip across chunks against fla's ``chunk_gla``, same run.

    python benchmarks/gla_chunk.py            # H100: GLA-1.3B heads (4 x K 256 / V 512), batch 32 x 1900, bf16
    python benchmarks/gla_chunk.py --smoke    # CPU: the model-level A/B on toy widths (fla does not run on CPU)

1. One layer's GLA: fla's ``chunk_gla`` (cumsum, chunk states written to memory, intra-chunk weights, output)
   against ``gla_chunk_fla`` (fla's cumsum and intra-chunk weights, then our decay pass and our inter-chunk kernel
   with the state in registers), over tile configs of ours; errors of both against a float32 run of our PyTorch
   chunked GLA on the same bf16 inputs, and between the two.
2. GLA-1.3B ``greedy_generate`` (batch 32, 1900-token prompts, 48 new) with ``GLALM.states_on_chip`` on and off,
   alternated, median of three: seconds per batch and the prefill alone.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def kernel_part(dev):
    from fla.ops.gla import chunk_gla

    from gla_gate import cuda_ms
    from jrt_eval.kernels.mamba.gla_chunk_triton import gla_chunk_fla
    from jrt_eval.kernels.mamba.scan import gla_chunked

    bf = torch.bfloat16
    B, T, H, K, V = 32, 1900, 4, 256, 512
    gen = torch.Generator(device=dev).manual_seed(0)
    q, k, v = (torch.randn(B, T, H, n, device=dev, generator=gen).to(bf) for n in (K, K, V))
    gk = (torch.nn.functional.logsigmoid(torch.randn(B, T, H, K, device=dev, generator=gen) + 2) / 16).to(bf)
    scale = K ** -0.5
    o_fla, s_fla = chunk_gla(q, k, v, gk, scale=scale, output_final_state=True)  # autotunes fla's kernels
    o_ours, s_ours = gla_chunk_fla(q, k, v, gk, scale)
    rows = slice(0, 4)  # the float32 reference on 4 rows (its intermediates are large)
    o_ref, s_ref = gla_chunked(*(t[rows].float() for t in (q, k, v, gk)), scale=scale)

    def rel(a, b):
        return ((a.float() - b.float()).abs().max() / b.float().abs().max()).item()

    print(f"GLA layer {B}x{T}, {H} heads, K {K}, V {V}, bf16. Errors vs float32 (rows 0-3): fla o "
          f"{rel(o_fla[rows], o_ref):.2e} state {rel(s_fla[rows], s_ref):.2e}; ours o {rel(o_ours[rows], o_ref):.2e} "
          f"state {rel(s_ours[rows], s_ref):.2e}; ours vs fla o {rel(o_ours, o_fla):.2e} "
          f"state {rel(s_ours, s_fla):.2e}",
          flush=True)
    t_fla = cuda_ms(lambda: chunk_gla(q, k, v, gk, scale=scale, output_final_state=True))
    print(f"  fla chunk_gla: {t_fla:.3f} ms", flush=True)
    for cfg in ({}, {"num_stages": 1}, {"block_v": 32, "num_stages": 1}, {"num_warps": 8, "num_stages": 1},
                {"block_v": 32, "num_warps": 8, "num_stages": 1}, {"block_v": 128, "num_warps": 8, "num_stages": 1},
                {"block_v": 32, "num_warps": 8}):
        try:
            t = cuda_ms(lambda: gla_chunk_fla(q, k, v, gk, scale, **cfg))
        except Exception as exc:  # a config over the shared-memory limit
            print(f"  states on chip {cfg}: {type(exc).__name__}: {str(exc)[:80]}", flush=True)
            continue
        print(f"  states on chip {cfg or 'default (block_v 64, 4 warps, 1 stage)'}: {t:.3f} ms ({t_fla / t:.2f}x)",
              flush=True)


def model_part(dev, smoke):
    from common import ab_generate
    from gpu_check_ssm import gla_speed_setup

    model, ids, new = gla_speed_setup(dev, smoke)
    ab_generate(model, ids, new, {"states on chip": lambda m: setattr(m, "states_on_chip", True),
                                  "fla chunk_gla": lambda m: setattr(m, "states_on_chip", False)})


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="CPU, toy widths: the code path only (CI)")
    args = ap.parse_args(argv)
    dev = torch.device("cpu" if args.smoke else "cuda")
    if dev.type == "cuda":
        kernel_part(dev)
    model_part(dev, args.smoke)


if __name__ == "__main__":
    main()
