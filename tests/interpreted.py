"""Run a test script under Triton's CPU interpreter (TRITON_INTERPRET=1) in a child process.

The variable only takes effect if it is set before ``triton`` is first imported, which a pytest process
rarely allows, so kernel tests that need the interpreter write their checks as a script that prints one
``RESULT <json>`` line, and the parent test asserts on that dict. The scripts can import the helpers below
(``from interpreted import ...``: this folder is on the child's path).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_interpreted(source: str, tmp_path: Path, name: str = "interpreted.py", timeout: int = 240) -> dict:
    """Run ``source`` (argv[1] = tmp_path) with TRITON_INTERPRET=1; returns its RESULT dict or fails."""
    path = os.pathsep.join([str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=path)
    script = Path(tmp_path) / name
    script.write_text(source)
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not line:
        raise AssertionError(f"interpreted run failed (rc {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(line[-1][len("RESULT "):])


def rel_max_err(a, b) -> float:
    """Max error relative to the largest reference value; a NaN fails (an element the kernel never wrote)."""
    import torch

    a, b = a.double(), b.double()
    assert not torch.isnan(a).any(), "NaN (unwritten element?)"
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def rounding_ulps(stored, exact) -> float:
    """Largest error of a 16-bit ``stored`` state against the float32 / float64 value it rounds, relative to that
    value (floored at 1e-3) and in units of the 16-bit dtype's eps: at most 0.5 when rounded to nearest."""
    import torch

    stored_d, exact_d = stored.double(), exact.double()
    rel = ((stored_d - exact_d).abs() / exact_d.abs().clamp_min(1e-3)).max()
    return float(rel / torch.finfo(stored.dtype).eps)


def ulps_limit(key: str) -> float:
    """The bound :func:`rounding_ulps` must meet for a result named ``key``: half a unit for round-to-nearest
    (the GPU; fp16 in the interpreter), one for bf16 under Triton's interpreter, which converts float32 to
    bfloat16 by truncation (checked on triton 3.6: 1 + 2^-8 + 2^-12 stores as 1.0)."""
    return 1.01 if "bf16" in key else 0.51


def greedy_decode_errors(ref, test, ids, mask, steps: int, err=rel_max_err) -> tuple:
    """Prefill both models, then step both ``steps`` times on the reference's greedy tokens:
    ``(error of the prefill logits, worst error of the step logits)``."""
    la, ca = ref.prefill(ids, mask)
    lt, ct = test.prefill(ids, mask)
    first, worst = err(lt, la), 0.0
    for _ in range(steps):
        nxt = la.argmax(-1)
        la, lt = ref.step(nxt, ca), test.step(nxt, ct)
        worst = max(worst, err(lt, la))
    return first, worst
