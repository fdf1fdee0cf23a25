"""Summarise the warp-stall samples of an Nsight Compute source page (SASS view, CSV).

    ncu --import based.ncu-rep --page source --csv --print-source sass > based_sass.csv
    python benchmarks/ncu_stalls.py based_sass.csv [--top 40]

Prints the samples per opcode (HGMMA, WARPGROUP.DEPBAR, BAR, LDL / STL spill traffic, ...), per stall reason
where the page has one column per reason, and the instructions with the most samples. Column names differ
between ncu versions, so they are found by pattern ("Source" for the SASS text, "Sampling" / "stall" for the
counts) and the header is printed for the record.
"""
from __future__ import annotations

import argparse
import csv
import re
from collections import Counter


def _num(x: str) -> float:
    try:
        return float(x.replace(",", ""))
    except (ValueError, AttributeError):
        return 0.0


def load(path: str):
    with open(path, newline="") as fh:
        lines = fh.read().splitlines()
    start = next((i for i, line in enumerate(lines) if "Source" in line and "," in line), None)
    if start is None:
        raise SystemExit(f"{path}: no CSV header with a 'Source' column:\n" + "\n".join(lines[:20]))
    rows = list(csv.reader(lines[start:]))
    return rows[0], rows[1:]


def opcode(sass: str) -> str:
    """The opcode without guard predicate or modifiers: '@P0 HGMMA.64x64x16.F32 ...' -> 'HGMMA'."""
    s = re.sub(r"^@!?U?P\w+\s+", "", sass.strip())
    return s.split(" ")[0].split(".")[0] if s else "?"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("csv")
    ap.add_argument("--top", type=int, default=40)
    args = ap.parse_args(argv)
    header, rows = load(args.csv)
    print("columns:", " | ".join(header))
    src = next(i for i, h in enumerate(header) if h.strip() == "Source" or h.strip().startswith("Source"))
    total_col = next((i for i, h in enumerate(header) if "Sampling" in h and "All" in h), None)
    if total_col is None:
        total_col = next((i for i, h in enumerate(header) if "Sampling" in h), None)
    if total_col is None:
        raise SystemExit("no warp-sampling column")
    reason_cols = [i for i, h in enumerate(header)
                   if i != total_col and re.search(r"stall|Stall", h) and "Sampling" not in h]
    total = sum(_num(r[total_col]) for r in rows if len(r) > total_col)
    print(f"instructions: {len(rows)}  samples: {total:.0f}  (column '{header[total_col]}')")

    by_op = Counter()
    count_op = Counter()
    for r in rows:
        if len(r) <= max(src, total_col):
            continue
        op = opcode(r[src])
        by_op[op] += _num(r[total_col])
        count_op[op] += 1
    print("\nsamples by opcode (share, static count):")
    for op, n in by_op.most_common(25):
        print(f"  {op:<20} {n:>10.0f}  {100 * n / max(total, 1):5.1f}%  x{count_op[op]}")

    if reason_cols:
        print("\nsamples by stall reason:")
        sums = {header[i]: sum(_num(r[i]) for r in rows if len(r) > i) for i in reason_cols}
        rs = sum(sums.values()) or 1
        for name, n in sorted(sums.items(), key=lambda kv: -kv[1]):
            if n:
                print(f"  {name:<60} {n:>10.0f}  {100 * n / rs:5.1f}%")

    print(f"\ntop {args.top} instructions:")
    ranked = sorted((r for r in rows if len(r) > max(src, total_col)), key=lambda r: -_num(r[total_col]))
    for r in ranked[:args.top]:
        n = _num(r[total_col])
        top_reasons = sorted(((header[i], _num(r[i])) for i in reason_cols if len(r) > i), key=lambda kv: -kv[1])[:3]
        why = ", ".join(f"{name.split('(')[0].strip()[-28:]}={v:.0f}" for name, v in top_reasons if v)
        print(f"  {n:>8.0f} {100 * n / max(total, 1):5.1f}%  {r[src].strip()[:70]:<70} {why}")


if __name__ == "__main__":
    main()
