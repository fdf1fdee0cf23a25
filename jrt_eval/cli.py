"""`jrt-eval` command: lm-eval's own CLI with our models and tasks registered, plus our subcommands.

    jrt-eval --model based --model_args pretrained=... --tasks jrt_swde   # = lm_eval ..., hook forced on
    jrt-eval ls tasks                                                    # = lm_eval ls tasks
    jrt-eval <subcommand> ...                                            # see SUBCOMMANDS
"""
from __future__ import annotations

import importlib
import sys

# subcommand -> "module:function" taking argv (list[str]) and returning an exit code
SUBCOMMANDS = {
    "demo": "jrt_eval.demo:main",
    "sweep": "jrt_eval.sweep:main",
    "leaderboard": "jrt_eval.leaderboard:main",
    "regress": "jrt_eval.regress:main",
}


def run_lm_eval(argv: list[str]) -> int:
    """Run lm-eval's CLI in-process with the jrt-eval hook active (even if JRT_EVAL_AUTOLOAD=0)."""
    from jrt_eval import _autoload

    _autoload.activate()
    from lm_eval.__main__ import cli_evaluate

    saved = sys.argv
    sys.argv = ["lm_eval", *argv]
    try:
        cli_evaluate()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = saved
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        module, func = SUBCOMMANDS[argv[0]].split(":")
        return int(getattr(importlib.import_module(module), func)(argv[1:]) or 0)
    if argv and argv[0] in ("-h", "--help") and len(argv) == 1:
        print(__doc__.strip())
        print("\nsubcommands: " + ", ".join(SUBCOMMANDS) + "; anything else goes to lm_eval.")
        return 0
    return run_lm_eval(argv)


if __name__ == "__main__":
    sys.exit(main())
