"""Make Triton's CPU interpreter (``TRITON_INTERPRET=1``) usable for our kernels in CI.

Triton 3.x's interpreter stores every scalar as a 1-element NumPy array and converts it with
``int(array)`` in ``tensor.__index__``; NumPy >= 2.3 refuses that for arrays with ndim > 0, so any
loop whose bound is a runtime scalar (``for c in range(0, n)`` with ``n`` a kernel argument) fails
with "only 0-dimensional arrays can be converted to Python scalars". ``patch()`` swaps in a
conversion that takes the single element. Only the interpreter is touched; compiled kernels are
unaffected. Idempotent.
"""
from __future__ import annotations


def patch() -> bool:
    try:
        import triton.runtime.interpreter as ti
    except Exception:  # pragma: no cover - triton missing
        return False
    orig = getattr(ti, "_patch_lang_tensor", None)
    if orig is None or getattr(orig, "_jrt_eval_patched", False):
        return orig is not None

    def _patched(tensor, scope):
        orig(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    _patched._jrt_eval_patched = True
    ti._patch_lang_tensor = _patched
    return True
