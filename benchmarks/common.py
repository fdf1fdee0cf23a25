"""Helpers shared by the benchmark scripts (run as ``python benchmarks/<script>.py``: this folder is on the path)."""
from __future__ import annotations

import torch


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """``|out - ref| / |ref|`` (Frobenius, float64 on the CPU); NaN when ``out`` has a NaN."""
    out, ref = out.double().cpu(), ref.double().cpu()
    if torch.isnan(out).any():
        return float("nan")
    return ((out - ref).norm() / ref.norm()).item()
