"""Static compile statistics of our Triton kernels for a Hopper GPU, on any machine (no GPU needed).

    python benchmarks/compile_stats.py                                 # every kernel, bf16 and fp32
    python benchmarks/compile_stats.py --kernel based_prefill --config '{"BT": 128, "num_warps": 8}'
    python benchmarks/compile_stats.py --kernel ssd_prefill --config '{"BT": 64, "num_warps": 4}' --dtype bfloat16

Each kernel's host launcher runs on CPU tensors at the published models' widths with its launches
recorded, and every launch is compiled for ``sm_<arch>`` with the ptxas Triton ships
(``jrt_eval.kernels.aot``). Printed per launch: registers per thread, spill stack (bytes per thread),
shared memory, and counts of SASS instructions: HGMMA (wgmma), HMMA (mma.sync), LDS/STS (shared
memory), LDL/STL (spill traffic), BAR (barriers), and the LDL / STL inside the main loop (``loop_ldl``,
``loop_stl``: they run once per chunk). ``--config`` overrides the tile config of the Based
kernels (as ``JRT_EVAL_BASED_CONFIG``) or of the SSD prefill (as ``JRT_EVAL_SSD_CONFIG``).

Register pressure is what limits these kernels (benchmarks/README.md), so this ranks configs before
device time is spent; it does not replace timing on a GPU. On an H100 the compiled Based prefill
reported the same figures (255 registers, 31 wgmma + 24 mma.sync for the default bf16 config).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from jrt_eval.kernels import aot  # noqa: E402

ENV = {"based_prefill": "JRT_EVAL_BASED_CONFIG", "based_prefill_segmented_masked": "JRT_EVAL_BASED_CONFIG",
       "pla_prefill": "JRT_EVAL_BASED_CONFIG", "pla_prefill_ranges": "JRT_EVAL_BASED_CONFIG",
       "ssd_prefill": "JRT_EVAL_SSD_CONFIG"}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kernel", nargs="+", default=list(aot.CASES), choices=list(aot.CASES))
    ap.add_argument("--dtype", nargs="+", default=["bfloat16", "float32"], choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--config", default=None, help="JSON tile-config overrides (Based and SSD prefill kernels)")
    ap.add_argument("--arch", type=int, default=90, help="compute capability x10 (90 = H100/H200)")
    args = ap.parse_args(argv)
    for case in args.kernel:
        if args.config is not None and case in ENV:
            os.environ[ENV[case]] = args.config
        for name in args.dtype:
            for launch in aot.launches_of(case, getattr(torch, name), args.arch):
                print(json.dumps({"case": case, "dtype": name, "sm": args.arch, **aot.compile_launch(launch, args.arch)}))


if __name__ == "__main__":
    main()
