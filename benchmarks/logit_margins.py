"""How close to ties the random weights of the speed runs are (CPU or GPU, fp32): the top-1 / top-2 logit gap
after the prompt. bf16 runs flip a greedy token wherever the gap is below their logit error (gpu_check_ssm.py's
``parity.*bf16*`` rows), so on random weights "same greedy text as fp32" measures the weights as much as the code.

    python benchmarks/logit_margins.py --family gla            # GLA-1.3B widths, 4 prompts of 200 tokens (~30 s)
    python benchmarks/logit_margins.py --family mamba2 --batch 16 --length 256
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_check_ssm as G  # noqa: E402  (the speed runs' configs and random weights)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--family", choices=["gla", "mamba", "mamba2"], default="gla")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--length", type=int, default=200)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    dev = torch.device(args.device)
    cfg, vocab = G.family_config(args.family, smoke=False)
    model = (G._gla_model(cfg, dev, torch.float32, kernels="torch") if args.family == "gla"
             else G._mamba_model(args.family, cfg, dev, torch.float32))
    ids, _ = G.speed_prompts(vocab, args.batch, args.length, dev)  # the speed runs' prompt rule
    with torch.inference_mode():
        logits = model.prefill(ids)[0].float()
    top2 = logits.topk(2, dim=-1).values
    gaps = (top2[:, 0] - top2[:, 1]).sort().values
    print(json.dumps({"family": args.family, "batch": args.batch, "length": args.length,
                      "top1_top2_gap": [round(g, 4) for g in gaps.tolist()], "median_gap": round(gaps.median().item(), 4),
                      "logit_std": round(logits.std(-1).mean().item(), 3), "max_abs_logit": round(logits.abs().max().item(), 3)}))


if __name__ == "__main__":
    main()
