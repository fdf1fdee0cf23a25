"""Helpers shared by the benchmark scripts (run as ``python benchmarks/<script>.py``: this folder is on the path)."""
from __future__ import annotations

import torch


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """``|out - ref| / |ref|`` (Frobenius, float64 on the CPU); NaN when ``out`` has a NaN."""
    out, ref = out.double().cpu(), ref.double().cpu()
    if torch.isnan(out).any():
        return float("nan")
    return ((out - ref).norm() / ref.norm()).item()


def ab_generate(model, ids, new, variants, reps=3):
    """Time ``greedy_generate`` on ``model`` under each of ``variants`` (label -> function that switches ``model``
    to it), interleaved ``reps`` times so drift hits every variant alike; print the medians (whole batch, prefill
    alone, decode per step), each variant's speed-up over the last one and how many rows kept the last one's
    tokens. Returns {label: {"gen": [...], "pre": [...], "median": s, "toks": rows}}."""
    import statistics
    import time

    from jrt_eval.model_adapters.base import greedy_generate

    def sync():
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def run(n):
        sync()
        t = time.perf_counter()
        out = greedy_generate(model, ids, None, n)
        sync()
        return time.perf_counter() - t, out.tokens

    def switch(label):
        variants[label](model)
        if hasattr(model, "release_graphs"):
            model.release_graphs()
        run(2)  # capture this variant's decode graph outside the timed calls

    res = {label: {"gen": [], "pre": []} for label in variants}
    for label in variants:  # warm-up: autotuning, compilation
        switch(label)
        run(new)
    for _ in range(reps):
        for label in variants:
            switch(label)
            t, res[label]["toks"] = run(new)
            res[label]["gen"].append(t)
            res[label]["pre"].append(run(1)[0])
    batch = ids.shape[0]
    base = list(variants)[-1]
    for label, r in res.items():
        gen, pre = statistics.median(r["gen"]), statistics.median(r["pre"])
        r["median"] = gen
        print(f"{label}: {gen:.3f} s per batch ({batch / gen:.1f} prompts/s; runs "
              + " / ".join(f"{t:.3f}" for t in r["gen"]) + f"), prefill {pre:.3f} s, decode "
              f"{(gen - pre) / max(new - 1, 1) * 1e3:.2f} ms/step (batch {batch}, {ids.shape[1]} tokens, {new} new)",
              flush=True)
    for label, r in res.items():
        if label != base:
            same = sum(a == b for a, b in zip(r["toks"], res[base]["toks"])) / batch
            print(f"{label} / {base}: {res[base]['median'] / r['median']:.3f}x faster; greedy tokens identical on "
                  f"{same:.0%} of rows", flush=True)
    return res
