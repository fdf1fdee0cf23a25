"""Lower bounds ("floors") for the adapters' speed workload, from the models' shapes alone (no GPU needed).

    python benchmarks/floors.py                       # batch 32, 48 new tokens, 950 / 1900-token prompts
    python benchmarks/floors.py --gemm-tflops 750 --hbm-tbps 3.35

Per family (Mamba-130M, Mamba-2-130M, GLA-1.3B at the published widths) and prompt length:

* prefill: the matmul FLOPs of every linear layer over every prompt token (the LM head on the last token
  only), at a sustained bf16 GEMM rate -- the recurrent mixers' own FLOPs and all memory traffic are left out,
  so this undercounts;
* decode: per generated token after the first, one read of every bf16 weight (LM head included) plus one
  read and one write of every recurrent state (GLA's in float32, as fla keeps it; Mamba's and Mamba-2's in the
  weights' dtype, the adapters' default ``state_dtype="model"`` -- ``--fp32-ssm-state`` counts them in float32),
  at an HBM rate.

The defaults are the ceilings measured on the H100 (benchmarks/README.md: cuBLAS sustained 675-757 TFLOP/s
on the adapters' prefill matmuls, copy 3.0 TB/s). Printed with the issue's anchors: the time a 20x speed-up
would need, and whether that is above the floor. This is the arithmetic behind the README's statements that
GLA-1.3B at 20x a warm fla ``generate`` is below the floor.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# the issue's anchors (H100, bf16, batch 32, 48 tokens): s per batch at (950, 1900) tokens; None = not given
ISSUE_ANCHORS = {"mamba": (4.2, 7.4), "mamba2": (None, None), "gla": (None, 7.0)}


@dataclass
class Shapes:
    body_linear: int  # weights of every linear layer but the LM head (FLOPs per token: 2 per weight)
    head: int  # LM head weights
    state_bytes_per_row: int  # recurrent states + conv windows, per sequence, all layers


def shapes(family: str, ssm_state_bytes: int = 2) -> Shapes:
    """Linear-layer and state sizes at the published widths (``gpu_check_ssm``'s configs); ``ssm_state_bytes``: per
    value of a Mamba / Mamba-2 SSM state (2: bf16, the adapters' default; 4: ``state_dtype="float32"``)."""
    import gpu_check_ssm as G
    from jrt_eval.model_adapters import gla, mamba, mamba2

    if family == "gla":
        spec = gla.parse_config(G.GLA_13B)
        with torch.device("meta"):
            sd = {k: tuple(v.shape) for k, v in gla.GLALM(spec).state_dict().items()}
        state = spec.n_layer * spec.num_heads * spec.head_k * spec.head_v * 4
    else:
        mod = mamba if family == "mamba" else mamba2
        spec = mod.parse_config(G.MAMBA_130M if family == "mamba" else G.MAMBA2_130M)
        sd = mod._expected_shapes(spec)
        if family == "mamba":
            ssm, conv_ch = spec.d_inner * spec.d_state, spec.d_inner
        else:
            ssm, conv_ch = spec.nheads * spec.headdim * spec.d_state, spec.conv_dim
        state = spec.n_layer * (ssm * ssm_state_bytes + conv_ch * (spec.d_conv - 1) * 2)
    body = sum(s[0] * s[1] for k, s in sd.items() if len(s) == 2 and k.endswith(".weight") and "layers." in k
               and "norm" not in k)
    head = sd["lm_head.weight"][0] * sd["lm_head.weight"][1]
    return Shapes(body, head, state)


def floor_seconds(sh: Shapes, batch: int, prompt: int, new_tokens: int, gemm_tflops: float, hbm_tbps: float):
    """(prefill s, decode s) lower bounds for one batch."""
    prefill_flops = 2 * batch * prompt * sh.body_linear + 2 * batch * sh.head
    step_bytes = 2 * (sh.body_linear + sh.head) + 2 * batch * sh.state_bytes_per_row  # states: read + write
    return prefill_flops / (gemm_tflops * 1e12), (new_tokens - 1) * step_bytes / (hbm_tbps * 1e12)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=48)
    ap.add_argument("--lengths", type=int, nargs="+", default=[950, 1900])
    ap.add_argument("--gemm-tflops", type=float, default=700.0)
    ap.add_argument("--hbm-tbps", type=float, default=3.0)
    ap.add_argument("--fp32-ssm-state", action="store_true", help="Mamba / Mamba-2 decode states in float32")
    args = ap.parse_args(argv)
    rows = []
    for family in ("mamba", "mamba2", "gla"):
        sh = shapes(family, 4 if args.fp32_ssm_state else 2)
        for i, L in enumerate(args.lengths):
            pre, dec = floor_seconds(sh, args.batch, L, args.new_tokens, args.gemm_tflops, args.hbm_tbps)
            anchors = ISSUE_ANCHORS[family]
            anchor = anchors[i] if i < len(anchors) and len(args.lengths) == 2 else None
            need = anchor / 20 if anchor else None
            verdict = "" if need is None else (f"20x the issue's {anchor:.1f} s needs {need * 1e3:.0f} ms: "
                                               + ("above the floor" if need > pre + dec else "BELOW the floor"))
            print(f"{family:7s} L={L:5d}: prefill >= {pre * 1e3:6.1f} ms, decode >= {dec * 1e3:5.1f} ms, "
                  f"floor {(pre + dec) * 1e3:6.1f} ms  {verdict}")
            rows.append((family, L, pre, dec))
    return rows


if __name__ == "__main__":
    main()
