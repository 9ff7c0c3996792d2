"""The plan stage of ``torch_cpu`` (spec sections DLA-2, DLA-3, DLA-4, DLA-6).

Rows are independent (one row = one sequence of one head). Nothing here
loops over every token in Python:

* **dla policy (DLA-3).** Boundaries do not depend on any state:
  ``boundary_t = fresh or iota_t > tau`` (DLA-3.1), a vectorized comparison.
  Merges happen only at boundaries (DLA-3.3 step 4 needs ``C + 1`` states,
  and only opening a state adds one), so the partition is constant between
  two boundaries and the only sequential work is one step per *boundary
  event*. Between events the newest state's information grows by the scores
  of its tokens, added left to right as the reference's running sum, so
  every information value and every merge cost is bit-identical to the
  reference's (DLA-3.2, DLA-3.4; a cumulative-sum difference can differ in
  the last bit and flip a near-tie). Two paths make the same decisions:

  - :func:`plan_dla_across_rows` loops over the event *index*: step ``e``
    handles the ``e``-th boundary of every row at once with array operations
    (rows with fewer events are masked). The segments between events are
    scattered once into zero-padded blocks and folded into each row's newest
    information by a sequential ``torch.cumsum``.
  - :func:`plan_dla_per_row` runs one event loop per row in plain Python
    floats (:func:`functools.reduce` folds the segments), cheaper while the
    rows are few, since the event-index loop pays about 40 array calls per
    event index whatever the number of rows.

  :func:`plan_dla` dispatches on the number of rows (``ACROSS_ROWS_FROM``,
  the crossover measured in ``benchmarks/torch_cpu.md``). The per-position
  plan arrays are then one gather of the event-time partitions by
  ``cumsum(boundary)``.
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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import reduce

import numpy as np
import torch

from dla.config import Config

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
    lab = (count - 1)[..., None] - np.arange(C)
    return np.maximum(lab, -1, out=lab)


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


def _boundaries(iota: np.ndarray, config: Config, init: Partition) -> np.ndarray:
    """DLA-3.1: ``iota_t > tau``, and the first token of a row that has no state."""
    boundary = iota > config.tau
    if iota.shape[1]:
        boundary[:, 0] |= init.count == 0
    return boundary


def _readout(boundary: np.ndarray, table: np.ndarray, final_info: np.ndarray,
             C: int) -> RowPlan:
    """The per-position plan: ``table[r, e]`` holds the starts after event ``e`` (0: before
    any), so readout ``t`` takes event ``cumsum(boundary)[t]`` (DLA-3.5, DLA-6.2).

    Counts and labels are computed once per event, then all three fields are
    gathered as whole rows of the flattened ``[R (E+1), C]`` tables."""
    R, T = boundary.shape
    n_events = table.shape[1]
    count_table = (table >= 0).sum(axis=2).astype(np.int64)
    labels_table = recency_labels(count_table, C)
    event = np.cumsum(boundary, axis=1, dtype=np.int64)
    event += (np.arange(R, dtype=np.int64) * n_events)[:, None]
    flat = event.ravel()
    starts = np.take(table.reshape(-1, C), flat, axis=0).reshape(R, T, C)
    labels = np.take(labels_table.reshape(-1, C), flat, axis=0).reshape(R, T, C)
    count = np.take(count_table.ravel(), flat).reshape(R, T)
    return RowPlan(boundary, count, starts, labels, final_info)


def plan_dla_per_row(iota: np.ndarray, boundary: np.ndarray, C: int,
                     init: Partition) -> RowPlan:
    """DLA-3 with one Python event loop per row (fastest at few rows)."""
    R = iota.shape[0]
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
    return _readout(boundary, table, final_info, C)


# ------------------------------------------------- dla policy, vectorized across rows
def _event_times(boundary: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The time of the ``e``-th boundary of every row, ``[R, E]`` (``T`` past a row's last
    event), and the number of events of every row ``[R]`` (DLA-3.1)."""
    R, T = boundary.shape
    n = boundary.sum(axis=1)
    times = np.full((R, int(n.max(initial=0))), T, np.int64)
    rt = np.flatnonzero(boundary)  # row-major: each row's times in order
    times[rt // T, np.arange(rt.size) - np.repeat(np.cumsum(n) - n, n)] = rt % T
    return times, n


def _segment_bounds(times: np.ndarray, T: int) -> tuple[np.ndarray, np.ndarray]:
    """First token and length ``[R, E+1]`` of the tokens between event ``e - 1`` and event
    ``e`` (``e = E``: the tail; empty past a row's last event)."""
    R = times.shape[0]
    stop = np.concatenate([times, np.full((R, 1), T, np.int64)], axis=1)
    start = np.minimum(np.concatenate([np.zeros((R, 1), np.int64), times + 1], axis=1), T)
    return start, stop - start


def _widths(length: np.ndarray) -> np.ndarray:
    """Columns of each event's padded block: the longest segment plus one for the base."""
    return length.max(axis=0, initial=0) + 1


def _padded_width(times: np.ndarray, T: int) -> int:
    """Columns of :class:`_Segments`'s ``values`` for these event times."""
    return int(_widths(_segment_bounds(times, T)[1]).sum())


@dataclass
class _Segments:
    """The tokens each event adds to the newest state before it opens a new one (DLA-3.3
    step 3), for every row and event ``e = 0 .. E`` (``E``: the tail after the last).

    Event ``e``'s block is the columns ``offset[e] .. offset[e] + width[e] - 1`` of
    ``values [R, sum(width)]``: column 0 is free for the state's information, then
    the row's segment ``iota[cursor .. stop - 1]`` padded with zeros;
    ``length [E+1, R]``. They do not depend on any state, so they are scattered
    once for all events.
    """

    values: np.ndarray
    offset: np.ndarray
    width: np.ndarray
    length: np.ndarray

    @classmethod
    def of(cls, iota: np.ndarray, boundary: np.ndarray, times: np.ndarray) -> _Segments:
        """Scatter every token of ``iota`` into its event's block (``times``: of
        :func:`_event_times`)."""
        R, T = iota.shape
        _, length = _segment_bounds(times, T)
        width = _widths(length)
        offset = np.cumsum(width) - width
        # token t belongs to block e = number of boundaries <= t, at column t - (time of
        # event e - 1); a boundary lands in column 0 of the block after it, which the
        # base overwrites before it is read
        e = np.cumsum(boundary, axis=1, dtype=np.int64)
        before = np.concatenate([np.full((R, 1), -1, np.int64), times], axis=1)
        col = offset[e] + np.arange(T) - np.take_along_axis(before, e, axis=1)
        values = np.zeros((R, int(width.sum())))
        np.put(values, col + (np.arange(R) * values.shape[1])[:, None], iota)
        return cls(values, offset, width, length.T.copy())

    def fold(self, e: int, base: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """DLA-3.2: ``((base + iota[cursor]) + ...) + iota[stop - 1]`` for every row, added
        left to right as the reference's running sum.

        ``torch.cumsum`` on CPU accumulates each row sequentially in float64 (not
        pairwise; NumPy's accumulate does too, at several times the cost) and the
        zero padding comes after the row's own length, where it is read: the same
        additions in the same order, so the same bits (the near-tie tests of
        ``tests/test_torch_cpu_plan.py`` fail on any other order)."""
        block = self.values[:, self.offset[e] : self.offset[e] + self.width[e]]
        block[:, 0] = base
        acc = torch.cumsum(torch.from_numpy(block), 1).numpy()
        return acc[rows, self.length[e]]


@dataclass
class _Slots:
    """The partitions of ``R`` rows, oldest first, with a spare slot ``C`` for the
    ``(C+1)``-th state between opening and merging (DLA-3.3) and a slot ``C + 1`` that
    stays empty (the merge shifts it in): ``count [R]``, ``starts``, ``info [R, C+2]``;
    ``rows``: ``arange(R)``."""

    count: np.ndarray
    starts: np.ndarray
    info: np.ndarray
    rows: np.ndarray

    @classmethod
    def of(cls, init: Partition) -> _Slots:
        R = init.count.shape[0]
        return cls(init.count.copy(),
                   np.concatenate([init.starts, np.full((R, 2), -1, np.int64)], axis=1),
                   np.concatenate([init.info, np.zeros((R, 2))], axis=1), np.arange(R))

    def add_to_newest(self, segments: _Segments, e: int) -> None:
        """DLA-3.3 step 3 for the tokens between event ``e - 1`` and event ``e``."""
        rows = self.rows
        newest = np.maximum(self.count - 1, 0)  # a row without states has nothing to add
        self.info[rows, newest] = segments.fold(e, self.info[rows, newest], rows)

    def open(self, active: np.ndarray, starts: np.ndarray, info: np.ndarray) -> None:
        """DLA-3.3 steps 2 and 3 where ``active``: a new state with these ``starts`` and
        ``info`` (see :func:`_openings`). Other rows write into the empty slot ``C + 1``
        the empty values it already holds."""
        rows = self.rows
        slot = np.where(active, self.count, self.starts.shape[1] - 1)
        self.starts[rows, slot] = starts
        self.info[rows, slot] = info
        self.count += active

    def merge(self, C: int) -> None:
        """DLA-3.4: where ``count > C``, merge the adjacent pair with the least
        ``I_i + I_{i+1}`` (argmin's first minimum: the oldest pair on ties).

        Whole-array form: a row that does not merge takes ``m = C``, which moves
        nothing; in a row that merges, slot ``m`` takes ``I_m + I_{m+1}`` (the very
        addition of its cost) and the slots after ``m + 1`` shift down by one (the
        empty slot ``C + 1`` fills slot ``C``). Slots are read as flat indices."""
        j = np.arange(C + 1)
        over = self.count > C
        cost = self.info[:, :C] + self.info[:, 1 : C + 1]
        m = np.where(over, np.argmin(cost, axis=1), C)[:, None]
        src = (self.rows * (C + 2))[:, None] + j + (j > m)
        info = np.take(self.info, src)
        pair = info + np.take(self.info, src + 1, mode="clip")  # read at j == m <= C - 1
        self.info[:, : C + 1] = np.where(j == m, pair, info)
        self.starts[:, : C + 1] = np.take(self.starts, src)
        self.count -= over


def _openings(iota: np.ndarray, times: np.ndarray, n: np.ndarray,
              position: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every event index ``e`` (first axis) and row: whether the row has an ``e``-th
    boundary, the start of the state it opens (its absolute position) and that state's
    information ``0 + iota_t`` (DLA-3.3 steps 2 and 3); ``-1`` and ``0`` elsewhere."""
    R, T = iota.shape
    active = (np.arange(times.shape[1]) < n[:, None]).T.copy()
    t = np.minimum(times, max(T - 1, 0)).T
    starts = np.where(active, position + t, -1)
    info = np.where(active, 0.0 + iota[np.arange(R), t] if T else 0.0, 0.0)
    return active, starts, info


def plan_dla_across_rows(iota: np.ndarray, boundary: np.ndarray, C: int, init: Partition,
                         times: np.ndarray, n: np.ndarray) -> RowPlan:
    """DLA-3 with one loop over the event index: step ``e`` handles the ``e``-th boundary
    of every row at once (rows with fewer events are masked out). ``times, n``:
    :func:`_event_times` of ``boundary``."""
    R = iota.shape[0]
    segments = _Segments.of(iota, boundary, times)
    table = np.full((R, 1 + times.shape[1], C), -1, np.int64)
    table[:, 0] = init.starts
    slots = _Slots.of(init)
    active, new_starts, new_info = _openings(iota, times, n, init.position)
    for e in range(times.shape[1]):
        slots.add_to_newest(segments, e)
        slots.open(active[e], new_starts[e], new_info[e])
        slots.merge(C)
        table[:, e + 1] = slots.starts[:, :C]
    slots.add_to_newest(segments, times.shape[1])
    return _readout(boundary, table, slots.info[:, :C].copy(), C)


ACROSS_ROWS_FROM = 32
"""Rows from which :func:`plan_dla` takes the event-index loop (the measured crossover,
``benchmarks/torch_cpu.md``)."""

MAX_PADDING = 16
"""The event-index loop pads every event's segment to the longest among the rows
(:class:`_Segments`); above ``MAX_PADDING * T`` padded columns (rows whose events
are far out of step) :func:`plan_dla` takes the per-row loop instead."""


@contextmanager
def forced_path(path: str) -> Iterator[None]:
    """Make :func:`plan_dla` take one path, ``"per_row"`` or ``"across_rows"``, whatever the
    number of rows: for the tests that hold both paths to the reference, and the benchmark."""
    global ACROSS_ROWS_FROM, MAX_PADDING
    if path not in ("per_row", "across_rows"):
        raise ValueError(f"path: expected 'per_row' or 'across_rows', got {path!r}")
    saved = ACROSS_ROWS_FROM, MAX_PADDING
    if path == "per_row":
        ACROSS_ROWS_FROM = 10**9
    else:
        ACROSS_ROWS_FROM, MAX_PADDING = 1, 10**9
    try:
        yield
    finally:
        ACROSS_ROWS_FROM, MAX_PADDING = saved


def plan_dla(iota: np.ndarray, config: Config, init: Partition) -> RowPlan:
    """DLA-3: the dla policy over ``iota [R, T]`` (float64), continuing from ``init``.

    Both paths make the same decisions with the same floating-point sums; the
    per-row loop is cheaper at few rows, the event-index loop at many."""
    R, T = iota.shape
    boundary = _boundaries(iota, config, init)
    if R >= ACROSS_ROWS_FROM:
        times, n = _event_times(boundary)
        if _padded_width(times, T) <= MAX_PADDING * max(T, 1):
            return plan_dla_across_rows(iota, boundary, config.capacity, init, times, n)
    return plan_dla_per_row(iota, boundary, config.capacity, init)


# ----------------------------------------------------------------- fenwick policy
def plan_fenwick(iota: np.ndarray, config: Config, init: Partition) -> RowPlan:
    """DLA-4.1: the Fenwick partition at every absolute position, in closed form.

    The capacity rule (DLA-4.2) was checked with the whole call (validation.check_*_call).
    """
    R, T = iota.shape
    C = config.capacity
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
