"""GPU kernels for jrt-eval, each beside a plain-PyTorch reference (importable as ``jrt_eval.kernels``)."""
