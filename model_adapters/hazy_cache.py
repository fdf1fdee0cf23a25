"""Decode state of the hazyresearch families (Based, JRT-RNN, attention; model in ``hazy_gpt.py``).

``HazyCache`` keeps every layer's state as named tensors (``ssm_common.StateCache``), so the same
static-buffer / CUDA-graph machinery as the SSM families applies; ``_state_view`` puts the layer objects of
``hazy_layers.py`` (ConvState, BasedState, RingKV, GrowKV) back over those tensors without a copy, so a
decode step updates them in place. Host-side counters (filled columns, reserved room, a position bound)
spare the step any read of the device.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from jrt_eval.kernels.based import BasedState

from .hazy_layers import ConvState, GrowKV, RingKV
from .ssm_common import StateCache


def _state_tensors(state) -> dict:
    """A mixer's decode state (hazy_layers) as named tensors, batch first."""
    if isinstance(state, ConvState):
        return {"window": state.window}
    if isinstance(state, BasedState):
        return {"S": state.S, "z": state.z}
    if isinstance(state, (RingKV, GrowKV)):
        return {"k": state.k, "v": state.v, "valid": state.valid}
    raise TypeError(f"unknown decode state {type(state).__name__}")


def _state_view(kind: str, t: dict):
    """The mixer state object over the tensors of ``_state_tensors`` (no copy: steps update them in place)."""
    if kind == "conv":
        return ConvState(t["window"])
    if kind in ("la", "pla"):
        return BasedState(t["S"], t["z"])
    if kind == "swa":
        return RingKV(t["k"], t["v"], t["valid"])
    return GrowKV(t["k"], t["v"], t["valid"], None)  # mha: column from the StepContext


def _with_columns(t: torch.Tensor, dim: int, n: int) -> torch.Tensor:
    """A zero template (no memory) shaped like ``t`` with ``n`` entries along ``dim``."""
    return t.new_zeros(()).expand(t.shape[:dim] + (n,) + t.shape[dim + 1:])


class HazyCache(StateCache):
    """Decode state after a prefix (base.py's cache; ``select`` is in place and returns the cache).

    ``layers[i]`` holds block i's state tensors by name — BaseConv ``window``; Based / JRT-RNN linear attention
    ``S``, ``z``; sliding-window attention ``k``, ``v``, ``valid`` (a ring of window + 1 slots); full attention
    ``k``, ``v``, ``valid`` over ``capacity`` columns — and the last entry ``{"positions", "column"}``: each row's
    next real-token position and the full-attention column its next token goes to (the same in every row: the
    prompt width plus the steps taken). While bound to a decode graph (ssm_common) these are the graph's
    full-batch static buffers and ``rows`` lists the live rows.

    Host-side counters, so that decode never reads the device: ``filled`` (KV columns written), ``target``
    (columns wanted: ``reserve``), ``max_position`` (an upper bound of the live rows' next position, exact
    unless rows left since it was computed; only tracked for learned position embeddings).
    """

    def __init__(self, layers: list, positions: torch.Tensor, filled: int, kv_layers: tuple = (),
                 max_position: Optional[int] = None):
        column = torch.full_like(positions, filled)
        super().__init__(list(layers) + [{"positions": positions, "column": column}])
        self.kv_layers = tuple(kv_layers)  # indices of the full-attention layers
        self.filled = int(filled)
        self.target = self.filled
        self.max_position = max_position
        self._max_position_exact = True

    @property
    def positions(self) -> torch.Tensor:
        """The live rows' next positions [B]."""
        positions = self.layers[-1]["positions"]
        return positions if self.rows is None else positions.index_select(0, self.rows)

    @property
    def capacity(self) -> Optional[int]:
        """Columns of the full-attention KV buffers (None: no full-attention layer)."""
        return self.layers[self.kv_layers[0]]["k"].shape[2] if self.kv_layers else None

    def reserve(self, steps: int) -> "HazyCache":
        """Up to ``steps`` more decode steps will follow (base.py): full-attention buffers get room for them at the
        next step, once, instead of growing (and, under CUDA graphs, re-capturing) on the way."""
        self.target = max(self.target, self.filled + int(steps))
        return self

    def select(self, rows) -> "HazyCache":
        super().select(rows)
        self._max_position_exact = False
        return self

    def grow(self, capacity: int) -> None:
        """Full-attention buffers with ``capacity`` columns (new ones unfilled). Unbound caches only."""
        assert self._runner is None and capacity > self.filled
        with torch.inference_mode():
            for i in self.kv_layers:
                t = self.layers[i]
                extra = capacity - t["k"].shape[2]
                if extra > 0:
                    t["k"], t["v"] = F.pad(t["k"], (0, 0, 0, extra)), F.pad(t["v"], (0, 0, 0, extra))
                    t["valid"] = F.pad(t["valid"], (0, extra), value=False)
                elif extra < 0:  # only unfilled columns go (capacity > filled)
                    t["k"], t["v"] = t["k"][:, :, :capacity], t["v"][:, :, :capacity]
                    t["valid"] = t["valid"][:, :capacity]

    def check_position(self, n_positions: int) -> None:
        """Learned position embeddings: the next step's positions must be < n_positions (host-side check)."""
        if n_positions <= 0 or self.max_position is None or self.max_position < n_positions:
            return
        if not self._max_position_exact:  # rows left the batch: the bound may be stale; one read of the device
            with torch.inference_mode():
                self.max_position = int(self.positions.max())
            self._max_position_exact = True
        if self.max_position >= n_positions:
            raise ValueError(f"position {self.max_position} exceeds the checkpoint's {n_positions} learned positions")

    def advance(self) -> None:
        self.filled += 1
        if self.max_position is not None:
            self.max_position += 1
