"""The leaderboard as a picture: one panel per model, default vs JRT-Prompt bars per dataset.

Needs matplotlib (``pip install 'jrt-eval[plot]'``); without it the plot is skipped with a message and
everything else goes on.
"""
from __future__ import annotations

import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Optional

DISPLAY = {"fda": "FDA", "swde": "SWDE", "nq_1024": "NQ", "squad": "SQuAD", "triviaqa": "TriviaQA", "drop": "DROP",
           "nq_512": "NQ-512", "nq_2048": "NQ-2048"}


def _num(x) -> Optional[float]:
    return None if x in ("", None) else 100.0 * float(x)


def plot_leaderboard(rows: list, path, title: str = "") -> Optional[Path]:
    """Write a PNG of leaderboard rows to ``path`` (atomically); None (and a message) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("jrt-eval: plot skipped: matplotlib is not installed (pip install 'jrt-eval[plot]')", file=sys.stderr)
        return None
    models = list(dict.fromkeys(r["model"] for r in rows))
    ncols = min(4, len(models))
    nrows = math.ceil(len(models) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), squeeze=False, sharey=True)
    width = 0.38
    for ax, model in zip(axes.flat, models):
        rs = [r for r in rows if r["model"] == model]
        labels = [DISPLAY.get(r["dataset"], r["dataset"]) + (f"\n{r['label']}" if r["label"] else "") for r in rs]
        xs = range(len(rs))
        dflt = [_num(r["default_score"]) for r in rs]
        jrt = [_num(r["jrt_score"]) for r in rs]
        ax.bar([x - width / 2 for x in xs], [v or 0 for v in dflt], width, label="default", color="#9e9e9e")
        ax.bar([x + width / 2 for x in xs], [v or 0 for v in jrt], width, label="JRT-Prompt", color="#1f77b4")
        for x, v in zip(xs, dflt):
            if v is not None:
                ax.text(x - width / 2, v + 1, f"{v:.0f}", ha="center", va="bottom", fontsize=6)
        for x, v in zip(xs, jrt):
            if v is not None:
                ax.text(x + width / 2, v + 1, f"{v:.0f}", ha="center", va="bottom", fontsize=6)
        for x, r in zip(xs, rs):  # failed or missing cells are marked, not drawn as zeros silently
            if r["default_task"] and r["default_score"] in ("", None):
                ax.text(x - width / 2, 4, "x", ha="center", color="red")
            if r["jrt_task"] and r["jrt_score"] in ("", None):
                ax.text(x + width / 2, 4, "x", ha="center", color="red")
        pd = [_num(r.get("paper_default")) for r in rs]
        pj = [_num(r.get("paper_jrt")) for r in rs]
        if any(v is not None for v in pd + pj):
            ax.scatter([x - width / 2 for x, v in zip(xs, pd) if v is not None], [v for v in pd if v is not None],
                       marker="_", s=200, color="black", zorder=3, label="paper")
            ax.scatter([x + width / 2 for x, v in zip(xs, pj) if v is not None], [v for v in pj if v is not None],
                       marker="_", s=200, color="black", zorder=3)
        params = rs[0].get("params") or ""
        ax.set_title(f"{model}" + (f" ({params})" if params else ""), fontsize=9)
        ax.set_xticks(list(xs))
        ax.set_xticklabels(labels, fontsize=7)
        ax.set_ylim(0, 106)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(models):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("contains (%)")
    handles, names = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="upper right", fontsize=8)
    if any(r["status"] != "ok" for r in rows):
        title = (title + "   " if title else "") + "(red x: cell failed)"
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.93, 0.95 if title else 1))
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
