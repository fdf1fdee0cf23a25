"""`jrt-eval demo`: the README's main job — a real end-to-end evaluation, offline, in a few minutes on a CPU.

It evaluates the embedded default checkpoint (a tiny Based model in the hazyresearch published format,
written from a fixed seed by ``jrt_eval.tiny``; its weights are random, so its scores are near 0: the
demo shows the pipeline, not a model that recalls) on the bundled sample documents of the paper's six
Table 1 tasks, in both prompt forms, through the same sweep machinery as ``jrt-eval sweep``: lm-eval
results and samples per cell, then ``leaderboard.csv``, ``summary.md`` and the plot under
``results/demo/``. Rerunning resumes (finished cells are skipped); ``--force`` recomputes.

    jrt-eval demo [--model based|jrt_rnn|attn|mamba|mamba2|gla] [--out results/demo] [--force]
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

FAMILIES = ("based", "jrt_rnn", "attn", "mamba", "mamba2", "gla")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="jrt-eval demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="based", choices=FAMILIES, help="family of the tiny checkpoint")
    ap.add_argument("--out", type=Path, default=Path("results") / "demo")
    ap.add_argument("--workers", type=int, default=1, help="CPU workers (GPU: one per visible GPU)")
    ap.add_argument("--force", action="store_true", help="recompute finished cells")
    args = ap.parse_args(argv)

    from jrt_eval import sweep

    sweep_args = [
        "--models", f"tiny:{args.model}", "--tasks", "jrt_table1,jrt_table1_twice",
        "--metadata", '{"jrt_data_dir": "bundled"}', "--batch-size", "4",
        "--workers", str(args.workers), "--out", str(args.out),
    ] + (["--force"] if args.force else [])
    print(f"jrt-eval demo: tiny {args.model} checkpoint x 12 tasks (6 datasets x default/JRT-Prompt) "
          f"on the bundled samples -> {args.out}/", flush=True)
    code = sweep.main(sweep_args)
    board = args.out / "leaderboard.csv"
    if code != 0 or not board.is_file():
        print(f"jrt-eval demo: the sweep failed (exit {code}); see {args.out}/cells/*/*/log.txt", file=sys.stderr)
        return code or 1
    rows = list(csv.DictReader(board.open()))
    print("\n| dataset | default | JRT-Prompt | delta | scored docs (default / JRT) |")
    print("| --- | ---: | ---: | ---: | --- |")
    for r in rows:
        pct = [f"{100 * float(r[k]):.1f}" if r[k] not in ("", None) else "-" for k in ("default_score", "jrt_score", "delta")]
        print(f"| {r['dataset']} | {pct[0]} | {pct[1]} | {pct[2]} | {r['n_default']} / {r['n_jrt']} |")
    print(f"\nScores are contains x 100 (random tiny weights: near 0 by design). Written: {board}, "
          f"{args.out / 'summary.md'}, {args.out / 'leaderboard.png'} (if matplotlib), and lm-eval's JSON "
          f"results and samples per cell under {args.out / 'cells'}/.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
