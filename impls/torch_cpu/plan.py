"""The plan stage of ``torch_cpu`` (spec sections DLA-2, DLA-3, DLA-4, DLA-6).

Rows are independent (one row = one sequence of one head). Nothing here
loops over every token in Python:

* **dla policy (DLA-3).** Boundaries do not depend on any state:
  ``boundary_t = fresh or iota_t > tau`` (DLA-3.1), a vectorized comparison.
  Merges happen only at boundaries (DLA-3.3 step 4 needs ``C + 1`` states,
  and only opening a state adds one), so the partition is constant between
  two boundaries and the only sequential work is one step per *boundary
  event*. Between events the newest state's information grows by the scores
  of its tokens; it is accumulated with :func:`functools.reduce` (a C-level,
  left-to-right fold), so every information value, and therefore every
  merge cost, is bit-identical to the reference's running sums (DLA-3.2,
  DLA-3.4; a cumulative-sum difference can differ in the last bit and flip a
  near-tie). The event loop runs per row in plain Python floats (IEEE
  doubles, the reference's arithmetic), one cheap step per event; a NumPy
  loop vectorized across rows would pay its per-call overhead at every
  event instead. Its cost is the "plan only" column of
  ``benchmarks/torch_cpu.md``.
  The per-position plan arrays are then one gather of the event-time
  partitions by ``cumsum(boundary)``.
* **fenwick policy (DLA-4).** The partition at absolute position ``p`` is a
  closed form: one state per set bit ``l`` of ``p`` (level ``l + 1``, start
  ``(p >> (l + 1)) << (l + 1)``), oldest (highest bit) first, plus ``{p}``
  at level 0. Fully vectorized over rows and positions.

Token scores are computed by :func:`dla.reference.scores.token_scores` in
float64 on the host: the score is ``O(T K)`` work, and reusing the exact
summation order of the reference is what makes plans bit-identical for
degenerate inputs (repeated keys give ``iota = 0`` or ``2e-16`` depending on
the order of a dot product, which decides ``iota > tau`` at ``tau = 0``).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from functools import reduce

import numpy as np

from dla.config import Config
from dla.reference import validation as val

_ADD = operator.add


@dataclass
class Partition:
    """The discrete part of a cache (DLA-7.1) for ``R`` rows, as NumPy arrays.

    ``count [R]``, ``starts [R, C]`` (-1 unused), ``info [R, C]`` float64,
    ``position [R]`` (absolute position of the next token).
    """

    count: np.ndarray
    starts: np.ndarray
    info: np.ndarray
    position: np.ndarray

    @classmethod
    def fresh(cls, R: int, C: int) -> Partition:
        return cls(np.zeros(R, np.int64), np.full((R, C), -1, np.int64), np.zeros((R, C)),
                   np.zeros(R, np.int64))


@dataclass
class RowPlan:
    """A plan for ``R`` rows and ``T`` steps: ``boundary [R, T]``, ``count [R, T]``,
    ``starts``/``labels [R, T, C]`` (NumPy, int64), and for the dla policy the
    exact information of the final states ``final_info [R, C]`` (else ``None``)."""

    boundary: np.ndarray
    count: np.ndarray
    starts: np.ndarray
    labels: np.ndarray
    final_info: np.ndarray | None


def recency_labels(count: np.ndarray, C: int) -> np.ndarray:
    """DLA-3.5: slot ``j`` has label ``count - 1 - j``; ``-1`` in unused slots."""
    lab = count[..., None] - 1 - np.arange(C)
    return np.where(lab >= 0, lab, -1)


# ----------------------------------------------------------------- dla policy
def _dla_row_events(iota: list[float], bidx: list[int], C: int, count0: int,
                    starts0: list[int], info0: list[float], pos0: int
                    ) -> tuple[list[list[int]], list[float]]:
    """DLA-3.1 to DLA-3.4 for one row, one step per boundary event.

    Returns the starts after each event (padded with -1 to ``C`` slots) and
    the final information. Token scores between events are folded left to
    right into the newest state, exactly as the reference's running sum.
    """
    starts = starts0[:count0]
    info = info0[:count0]
    pad = [[-1] * (C - n) for n in range(C + 1)]
    events: list[list[int]] = []
    cursor = 0
    for t in bidx:
        if cursor < t:  # tokens cursor .. t-1 were written into the newest state
            info[-1] = reduce(_ADD, iota[cursor:t], info[-1])
        starts.append(pos0 + t)
        info.append(0.0 + iota[t])
        if len(info) > C:  # DLA-3.4: cheapest adjacent pair, oldest on ties
            costs = list(map(_ADD, info[:-1], info[1:]))
            m = costs.index(min(costs))
            info[m] = info[m] + info[m + 1]
            del info[m + 1], starts[m + 1]
        events.append(starts + pad[len(starts)])
        cursor = t + 1
    if cursor < len(iota):
        info[-1] = reduce(_ADD, iota[cursor:], info[-1])
    return events, info


def plan_dla(iota: np.ndarray, config: Config, init: Partition) -> RowPlan:
    """DLA-3: the dla policy over ``iota [R, T]`` (float64), continuing from ``init``."""
    R, T = iota.shape
    C = config.capacity
    boundary = iota > config.tau
    if T:
        boundary[:, 0] |= init.count == 0  # DLA-3.1: a token that finds no state opens one
    table = np.full((R, 1 + int(boundary.sum(axis=1).max(initial=0)), C), -1, np.int64)
    table[:, 0] = init.starts
    final_info = np.zeros((R, C))
    iota_l = iota.tolist()
    for r in range(R):
        c0 = int(init.count[r])
        events, info = _dla_row_events(
            iota_l[r], np.flatnonzero(boundary[r]).tolist(), C, c0,
            init.starts[r, :c0].tolist(), init.info[r, :c0].tolist(), int(init.position[r]))
        if events:
            table[r, 1 : 1 + len(events)] = events
        final_info[r, : len(info)] = info
    idx = np.cumsum(boundary, axis=1, dtype=np.int64)  # event index in force at readout t
    starts = np.take_along_axis(table, idx[:, :, None], axis=1)
    count = (starts >= 0).sum(axis=2).astype(np.int64)
    return RowPlan(boundary, count, starts, recency_labels(count, C), final_info)


# ----------------------------------------------------------------- fenwick policy
def plan_fenwick(iota: np.ndarray, config: Config, init: Partition) -> RowPlan:
    """DLA-4.1: the Fenwick partition at every absolute position, in closed form."""
    R, T = iota.shape
    C = config.capacity
    val.check_fenwick_capacity(C, init.position, T)
    p = init.position[:, None] + np.arange(T, dtype=np.int64)[None, :]  # [R, T]
    starts = np.full((R, T, C), -1, np.int64)
    labels = np.full((R, T, C), -1, np.int64)
    nbits = int(p.max(initial=0)).bit_length()
    slot = np.zeros((R, T), np.int64)  # states placed so far, oldest (highest bit) first
    r_i, t_i = np.indices((R, T))
    for bit in range(nbits - 1, -1, -1):
        has = ((p >> bit) & 1).astype(bool)
        s = slot[has]
        starts[r_i[has], t_i[has], s] = (p[has] >> (bit + 1)) << (bit + 1)
        labels[r_i[has], t_i[has], s] = bit + 1
        slot += has
    starts[r_i, t_i, slot] = p
    labels[r_i, t_i, slot] = 0
    return RowPlan(np.ones((R, T), bool), slot + 1, starts, labels, None)


def run_policy(iota: np.ndarray, config: Config, init: Partition) -> RowPlan:
    """Dispatch on ``config.policy`` (DLA-3 or DLA-4)."""
    if config.policy == "fenwick":
        return plan_fenwick(iota, config, init)
    return plan_dla(iota, config, init)
