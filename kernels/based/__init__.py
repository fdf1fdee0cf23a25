"""Based linear attention and JRT-RNN prefix linear attention: references (CPU) and Triton kernels (CUDA)."""
from .reference import (  # noqa: F401
    BasedState,
    based_attention_chunked,
    based_attention_quadratic,
    based_decode_step,
    feature_dim,
    pla_attention_chunked,
    pla_attention_quadratic,
    state_from_keys,
    taylor_features,
    taylor_kernel,
)
