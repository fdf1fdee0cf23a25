"""End to end on a GPU through the installed package and lm-eval's stock command line, as a user runs it.

1. ``small``: the CI regression set (a tiny checkpoint of every family, plus lm-eval's own ``hf`` model) swept on
   the GPU in float32 and in each family's default dtype, then ``jrt-eval regress --two-sided --tolerance 0
   --check-outputs`` against the committed CPU baseline (results/baselines/small.csv): float32 on the GPU path
   should give the CPU's scores and the same prompts and generations (digests); the default dtype is reported.
2. ``paper``: random checkpoints of the paper's sizes written in the published formats (Based, JRT-RNN and the
   attention baseline at 360M, Mamba and Mamba-2 at 130M, GLA at 1.3B with GPT-2's vocabulary: Llama-2's
   tokenizer is not available offline), each evaluated by ``lm_eval --model <family>`` on jrt_swde and
   jrt_swde_twice (bundled samples, defaults: the family's dtype, batch 32), GLA once more through ``jrt_auto``;
   wall time per command (process start, loading and warm-up included).
3. ``sweep``: those checkpoints × jrt_table1, jrt_table1_twice in one ``jrt-eval sweep`` (leaderboard CSV, plot).

    python benchmarks/gpu_e2e.py --out DIR [--only small,paper,sweep]
    python benchmarks/gpu_e2e.py --smoke --out DIR   # CPU, toy widths, one document per task: the code path (CI)

Needs jrt-eval and lm-eval installed (``gpu_pending.sh 28`` installs the wheels carried in .whl_eval/ and .whl_ssm/).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BASELINE = ROOT / "results" / "baselines" / "small.csv"
BUNDLED = json.dumps({"jrt_data_dir": "bundled"})
FAMILIES = ("based", "jrt_rnn", "attn", "mamba", "mamba2", "gla")


def command(name: str) -> list:
    """The console script ``name`` of this environment (``jrt-eval``, ``lm_eval``), else its module form."""
    exe = Path(sys.executable).with_name(name)
    if exe.exists():
        return [str(exe)]
    found = shutil.which(name)
    if found:
        return [found]
    entry = "from jrt_eval.cli import main" if name == "jrt-eval" else "from lm_eval.__main__ import cli_evaluate as main"
    return [sys.executable, "-c", f"import sys; {entry}; sys.exit(main())"]


def run(argv: list, log: Path, timeout: float) -> tuple:
    """Run ``argv`` with its output in ``log``; (exit code, seconds). A timeout is exit code 124."""
    log.parent.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    with open(log, "w") as f:
        f.write(" ".join(argv) + "\n")
        f.flush()
        try:
            code = subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            code = 124
    return code, time.perf_counter() - t


def tail(log: Path, n: int = 12) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-n:])


def report(line: str, summary: list) -> None:
    print(line, flush=True)
    summary.append(line)


# ============================================================================ 1. the small set against the CPU baseline
def step_small(out: Path, smoke: bool, summary: list, deadline: float) -> None:
    for dtype in ("float32", "auto"):
        run_dir = out / f"small_{dtype}"
        sweep = command("jrt-eval") + ["sweep", "--models", "small", "--out", str(run_dir), "--no-plot"]
        if dtype != "auto":
            sweep += ["--model-args", f"dtype={dtype}"]
        if smoke:
            sweep += ["--limit", "1", "--devices", "cpu"]
        code, secs = run(sweep, out / f"small_{dtype}.log", max(deadline - time.time(), 1))
        report(f"small {dtype}: sweep exit {code} in {secs:.0f} s", summary)
        if code:
            report(tail(out / f"small_{dtype}.log"), summary)
            continue
        check = command("jrt-eval") + ["regress", "--baseline", str(BASELINE), "--run", str(run_dir), "--two-sided",
                                       "--tolerance", "0", "--check-outputs"]
        code, _ = run(check, out / f"small_{dtype}_regress.log", 120)
        report(f"small {dtype}: regress against the CPU baseline, exit {code}\n"
               + tail(out / f"small_{dtype}_regress.log", 40), summary)


# ============================================================================ 2. paper sizes through the stock CLI
def write_checkpoints(root: Path, smoke: bool, families=FAMILIES) -> dict:
    """{family: folder} of random checkpoints in the published formats, the paper's sizes (toy widths: smoke)."""
    sys.path.insert(0, str(HERE))
    from gpu_check_hazy import SMOKE, WIDTHS
    from gpu_check_ssm import MAMBA2_130M, MAMBA_130M, SMOKE_MAMBA2_SSM

    from jrt_eval.model_adapters import gla, hazy_gpt, mamba, mamba2

    folders = {}
    for fam in families:
        folder = root / fam
        folders[fam] = folder
        if (folder / "config.json").exists():
            continue
        t = time.perf_counter()
        if fam in ("based", "jrt_rnn", "attn"):
            hazy_gpt.write_tiny_checkpoint(folder, fam, **(SMOKE if smoke else WIDTHS)[fam])
        elif fam in ("mamba", "mamba2"):
            cfg = dict(MAMBA_130M if fam == "mamba" else MAMBA2_130M)
            if smoke:
                cfg.update(d_model=64, n_layer=2, **({"ssm_cfg": SMOKE_MAMBA2_SSM} if fam == "mamba2" else {}))
            (mamba if fam == "mamba" else mamba2).write_tiny_checkpoint(folder, **cfg)
        else:  # fla-hub/gla-1.3B-100B's widths; GPT-2's vocabulary and tokenizer files
            gla.write_tiny_checkpoint(folder, **({} if smoke else dict(hidden_size=2048, num_hidden_layers=24,
                                                                       num_heads=4, attn_mode="fused_chunk")))
        print(f"  wrote {fam} in {time.perf_counter() - t:.0f} s", flush=True)
    return folders


def lm_eval_scores(out_dir: Path) -> dict:
    """{task: (contains, n scored)} from the newest results_*.json lm-eval wrote under ``out_dir``."""
    files = sorted(glob.glob(str(out_dir / "**" / "results_*.json"), recursive=True), key=os.path.getmtime)
    if not files:
        return {}
    data = json.loads(Path(files[-1]).read_text())
    n = data.get("n-samples", {})
    return {task: (res.get("contains,none"), n.get(task, {}).get("effective"))
            for task, res in data.get("results", {}).items()}


def step_paper(out: Path, folders: dict, smoke: bool, summary: list, deadline: float) -> None:
    runs = [(fam, fam) for fam in folders] + [("gla", "jrt_auto")] * ("gla" in folders)
    for fam, model in runs:
        if time.time() > deadline - 30:
            report(f"paper {model}: skipped (deadline)", summary)
            continue
        dest = out / "lm_eval" / (fam if model == fam else f"{fam}_as_{model}")
        argv = command("lm_eval") + ["--model", model, "--model_args", f"pretrained={folders[fam]}",
                                     "--tasks", "jrt_swde,jrt_swde_twice", "--metadata", BUNDLED,
                                     "--output_path", str(dest), "--log_samples"]
        if smoke:
            argv += ["--limit", "1", "--device", "cpu"]
        code, secs = run(argv, dest.with_suffix(".log"), max(deadline - time.time(), 1))
        scores = lm_eval_scores(dest)
        report(f"paper lm_eval --model {model} ({fam}): exit {code}, {secs:.0f} s, "
               + ", ".join(f"{t} {s} (n {k})" for t, (s, k) in sorted(scores.items())), summary)
        if code or not scores:
            report(tail(dest.with_suffix(".log")), summary)


# ============================================================================ 3. one sweep over the paper sizes
def step_sweep(out: Path, folders: dict, smoke: bool, summary: list, deadline: float) -> None:
    run_dir = out / "paper_sweep"
    argv = command("jrt-eval") + ["sweep", "--models", ",".join(str(f) for f in folders.values()),
                                  "--tasks", "jrt_table1,jrt_table1_twice", "--metadata", BUNDLED,
                                  "--out", str(run_dir)]
    if smoke:
        argv += ["--limit", "1", "--devices", "cpu", "--no-plot"]
    code, secs = run(argv, out / "paper_sweep.log", max(deadline - time.time(), 1))
    report(f"paper sweep: exit {code} in {secs:.0f} s", summary)
    board = run_dir / "leaderboard.csv"
    if board.exists():
        import csv

        with open(board) as f:
            rows = list(csv.DictReader(f))
        report(f"  leaderboard.csv: {len(rows)} rows, status " + ", ".join(
            f"{s} {sum(r['status'] == s for r in rows)}" for s in sorted({r["status"] for r in rows})), summary)
    else:
        report(tail(out / "paper_sweep.log"), summary)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--only", default="small,paper,sweep", help="comma list of steps: small, paper, sweep")
    ap.add_argument("--checkpoints", help="folder of the paper-size checkpoints (default: <out>/checkpoints; "
                                          "written when absent)")
    ap.add_argument("--families", default=",".join(FAMILIES), help="families of the paper-size steps")
    ap.add_argument("--smoke", action="store_true", help="CPU, toy widths, one document per task")
    ap.add_argument("--deadline", type=float, default=560, help="seconds; later steps are skipped")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    deadline = time.time() + args.deadline
    steps = set(args.only.split(","))
    if steps - {"small", "paper", "sweep"}:
        ap.error(f"unknown steps {sorted(steps - {'small', 'paper', 'sweep'})}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    summary: list = []
    if "small" in steps:
        step_small(out, args.smoke, summary, deadline)
    if steps & {"paper", "sweep"}:
        families = args.families.split(",")
        if set(families) - set(FAMILIES):
            ap.error(f"unknown families {sorted(set(families) - set(FAMILIES))}; known: {', '.join(FAMILIES)}")
        folders = write_checkpoints(Path(args.checkpoints or out / "checkpoints"), args.smoke, families)
        if "paper" in steps:
            step_paper(out, folders, args.smoke, summary, deadline)
        if "sweep" in steps:
            step_sweep(out, folders, args.smoke, summary, deadline)
    (out / "summary.txt").write_text("\n".join(summary) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
