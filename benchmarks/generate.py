"""Generation speed of every family's adapter (the model-adapter issue's benchmark), in one command.

    python benchmarks/generate.py --out $OUT             # on a GPU machine (fla wheels for GLA, see below)
    python benchmarks/generate.py --out /tmp/x --smoke   # CPU, toy sizes: the same code paths

Workload: batch 32, 950- and 1900-token prompts, 48 greedy tokens, random weights of the paper's sizes.
It runs the two family scripts one after the other, each under its own deadline, then prints prompts/s
per family from their JSON files:

* ``gpu_check_ssm.py``: Mamba-130M, Mamba-2-130M, GLA-1.3B (+ the anchors measured in the same run:
  transformers ``generate`` for Mamba / Mamba-2, fla ``generate`` for GLA; parity checks; kernels);
* ``gpu_check_hazy.py``: Based, JRT-RNN and the attention baseline at 360M widths (fused kernels vs the
  PyTorch references; parity checks).

fla (GLA's GPU kernels and anchor) is not on the device image: carry the fla-core / flash-linear-attention
0.6.0 wheels and put them on PYTHONPATH first (see the device tool's README).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(script: str, args: list, timeout: float) -> int:
    cmd = [sys.executable, str(HERE / script), *args]
    print("$", " ".join(cmd), flush=True)
    try:
        return subprocess.run(cmd, timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        print(f"{script}: stopped after {timeout:.0f} s", flush=True)
        return 124


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--ssm-seconds", type=float, default=330, help="budget of gpu_check_ssm.py")
    ap.add_argument("--hazy-seconds", type=float, default=240, help="budget of gpu_check_hazy.py")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    smoke = ["--smoke"] if args.smoke else []
    run("gpu_check_ssm.py", ["--out", str(args.out), "--only", "speed_mamba,speed_mamba2,speed_gla,anchor_gla",
                             "--deadline", str(args.ssm_seconds - 20), *smoke], args.ssm_seconds)
    run("gpu_check_hazy.py", ["--out", str(args.out), "--skip-parity", "--deadline", str(args.hazy_seconds - 60),
                              *smoke], args.hazy_seconds)
    print("\n| family | prompt tokens | s / batch of 32 | prompts / s |\n| --- | --- | --- | --- |")
    ssm = args.out / "gpu_check_ssm.json"
    if ssm.is_file():
        data = json.loads(ssm.read_text())
        results = data.get("results", data)
        for key, value in sorted(results.items()):
            parts = key.split(".")  # speed.<family>.L<len>.ours_<dtype>_s_per_batch
            if len(parts) == 4 and parts[0] == "speed" and parts[3].endswith("_s_per_batch") and "fp32" not in parts[3]:
                seconds = value["value"] if isinstance(value, dict) else value
                if isinstance(seconds, (int, float)) and seconds > 0:
                    print(f"| {parts[1]} ({parts[3][5:-12]}) | {parts[2][1:]} | {seconds:.3f} | {32 / seconds:.1f} |")
    hazy = args.out / "gpu_check_hazy.json"
    if hazy.is_file():
        for name, value in json.loads(hazy.read_text())["results"].get("speed", {}).items():
            if name.endswith("s/batch"):
                family, length = name.split()[:2]
                how = "amp_bf16, eager" if " eager " in name else "amp_bf16"
                print(f"| {family} ({how}) | {length[2:]} | {float(value):.3f} | {32 / float(value):.1f} |")


if __name__ == "__main__":
    main()
