"""Run a test script under Triton's CPU interpreter (TRITON_INTERPRET=1) in a child process.

The variable only takes effect if it is set before ``triton`` is first imported, which a pytest process
rarely allows, so kernel tests that need the interpreter write their checks as a script that prints one
``RESULT <json>`` line, and the parent test asserts on that dict.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_interpreted(source: str, tmp_path: Path, name: str = "interpreted.py", timeout: int = 240) -> dict:
    """Run ``source`` (argv[1] = tmp_path) with TRITON_INTERPRET=1; returns its RESULT dict or fails."""
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    script = Path(tmp_path) / name
    script.write_text(source)
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not line:
        raise AssertionError(f"interpreted run failed (rc {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(line[-1][len("RESULT "):])
