"""Plan policies: the DLA policy (DLA-3) and the Fenwick policy (DLA-4).

A policy walks the token scores of ``R`` independent rows (one row = one
sequence of one head) through time and records, at every readout, the
partition of the past. Everything is vectorized across rows; only time is a
loop, because each decision depends on the previous ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dla.config import Config
from dla.reference.validation import check_fenwick_capacity


@dataclass
class PartitionState:
    """The discrete part of the cache (DLA-7.1) for ``R`` rows, ``C`` slots, oldest first."""

    count: np.ndarray  # [R] int64
    starts: np.ndarray  # [R, C] int64, -1 when unused
    labels: np.ndarray  # [R, C] int64, -1 when unused
    info: np.ndarray  # [R, C] float64, 0 when unused
    position: np.ndarray  # [R] int64: tokens consumed

    @classmethod
    def fresh(cls, R: int, C: int) -> PartitionState:
        return cls(
            count=np.zeros(R, np.int64),
            starts=np.full((R, C), -1, np.int64),
            labels=np.full((R, C), -1, np.int64),
            info=np.zeros((R, C)),
            position=np.zeros(R, np.int64),
        )

    def copy(self) -> PartitionState:
        return PartitionState(*(np.array(a, copy=True) for a in (
            self.count, self.starts, self.labels, self.info, self.position)))


@dataclass
class RowPlan:
    """A plan for ``R`` rows and ``T`` steps (``Plan`` without the ``[B, H]`` layout)."""

    boundary: np.ndarray  # [R, T] bool
    count: np.ndarray  # [R, T] int64
    starts: np.ndarray  # [R, T, C] int64
    labels: np.ndarray  # [R, T, C] int64
    boundary_margin: np.ndarray  # [R, T] float64, inf where the boundary was forced
    merge_margin: np.ndarray  # [R, T] float64, inf where no merge happened


def dla_labels(count: np.ndarray, C: int) -> np.ndarray:
    """DLA-3.5: the label of slot ``j`` is its recency rank ``count - 1 - j`` (-1 if unused)."""
    j = np.arange(C)
    lab = count[..., None] - 1 - j
    return np.where(lab >= 0, lab, -1)


def _open_and_write(
    st: PartitionState, iota_t: np.ndarray, tau: float
) -> tuple[np.ndarray, np.ndarray]:
    """DLA-3.1, DLA-3.3 steps 2 and 3: open a state at a boundary, add ``iota_t`` to the newest."""
    R = st.count.shape[0]
    rows = np.arange(R)
    forced = st.count == 0
    boundary = forced | (iota_t > tau)
    ob = rows[boundary]
    st.starts[ob, st.count[ob]] = st.position[ob]
    st.info[ob, st.count[ob]] = 0.0
    st.count[ob] += 1
    st.info[rows, st.count - 1] += iota_t
    margin = np.where(forced, np.inf, np.abs(iota_t - tau))
    return boundary, margin


def _merge_cheapest_pair(st: PartitionState, C: int) -> np.ndarray:
    """DLA-3.4: where ``count > C``, merge the adjacent pair with least ``I_i + I_{i+1}``.

    Ties go to the smallest ``i`` (the oldest pair). Returns the margin between
    the best and second-best cost (0 for an exact tie; inf where no merge).
    """
    R = st.count.shape[0]
    margin = np.full(R, np.inf)
    over = np.flatnonzero(st.count > C)
    if over.size == 0:
        return margin
    cost = st.info[over, :-1] + st.info[over, 1:]  # [n, C] pairs (i, i+1), i = 0..C-1
    i = np.argmin(cost, axis=1)  # first minimum: the oldest pair wins ties
    if C > 1:
        margin[over] = np.sort(cost, axis=1)[:, 1] - np.sort(cost, axis=1)[:, 0]
    # few rows merge at a time; the shift is clearest per row
    for r, m in zip(over, i, strict=True):
        st.info[r, m] += st.info[r, m + 1]
        st.info[r, m + 1 : -1] = st.info[r, m + 2 :]
        st.starts[r, m + 1 : -1] = st.starts[r, m + 2 :]
        st.info[r, -1] = 0.0
        st.starts[r, -1] = -1
    st.count[over] -= 1
    return margin


def plan_dla(
    iota: np.ndarray, config: Config, init: PartitionState
) -> tuple[RowPlan, PartitionState]:
    """DLA-3: the DLA policy over scores ``iota [R, T]``, continuing from ``init``."""
    R, T = iota.shape
    C = config.capacity
    # One spare slot holds the (C+1)-th state between opening and merging (DLA-3.3).
    st = PartitionState(
        count=init.count.copy(),
        starts=np.concatenate([init.starts, np.full((R, 1), -1, np.int64)], axis=1),
        labels=init.labels.copy(),
        info=np.concatenate([init.info, np.zeros((R, 1))], axis=1),
        position=init.position.copy(),
    )
    out = _empty_row_plan(R, T, C)
    for t in range(T):
        out.boundary[:, t], out.boundary_margin[:, t] = _open_and_write(st, iota[:, t], config.tau)
        out.merge_margin[:, t] = _merge_cheapest_pair(st, C)
        out.count[:, t] = st.count
        out.starts[:, t] = st.starts[:, :C]
        out.labels[:, t] = dla_labels(st.count, C)
        st.position += 1
    final = PartitionState(
        count=st.count, starts=st.starts[:, :C].copy(), labels=dla_labels(st.count, C),
        info=st.info[:, :C].copy(), position=st.position,
    )
    return out, final


def fenwick_level(t: np.ndarray | int, s: np.ndarray | int) -> np.ndarray:
    """DLA-4.1: the level of token ``s`` seen from readout ``t``: ``bit_length(t XOR s)``.

    For ``x >= 1``, ``frexp`` writes ``x = m * 2**e`` with ``m`` in ``[0.5, 1)``, so ``e`` is the
    bit length (exact for positions below 2**53); ``bit_length(0) = 0``.
    """
    x = np.bitwise_xor(np.asarray(t, np.int64), np.asarray(s, np.int64))
    return np.where(x > 0, np.frexp(x.astype(np.float64))[1], 0).astype(np.int64)


def fenwick_capacity(num_positions: int) -> int:
    """DLA-4.2: the capacity the Fenwick policy needs for positions ``0 .. num_positions - 1``."""
    return int(max(num_positions - 1, 0)).bit_length() + 1


def plan_fenwick(
    iota: np.ndarray, config: Config, init: PartitionState
) -> tuple[RowPlan, PartitionState]:
    """DLA-4: the Fenwick partition of Log-Linear Attention, as states with level labels.

    At readout ``t`` the tokens ``s <= t`` with the same level
    ``bit_length(t XOR s)`` form one state; the partition only coarsens with
    ``t``, so each step merges existing states whose levels coincide and opens
    a level-0 state for token ``t``. Information is accounted as in DLA-3.2.
    """
    R, T = iota.shape
    C = config.capacity
    check_fenwick_capacity(C, init.position, T)
    st = init.copy()
    out = _empty_row_plan(R, T, C)
    for t in range(T):
        pos = st.position  # [R]
        for r in range(R):
            _fenwick_step_row(st, r, int(pos[r]), float(iota[r, t]), C)
        out.boundary[:, t] = True
        out.count[:, t] = st.count
        out.starts[:, t] = st.starts
        out.labels[:, t] = st.labels
        st.position += 1
    return out, st


def _fenwick_step_row(st: PartitionState, r: int, t: int, iota_t: float, C: int) -> None:
    """One DLA-4.1 step of one row: regroup old states by their new level, then open ``{t}``."""
    n = int(st.count[r])
    starts, info = st.starts[r, :n], st.info[r, :n]
    levels = fenwick_level(t, starts)
    new_starts: list[int] = []
    new_info: list[float] = []
    new_labels: list[int] = []
    for j in range(n):  # oldest first; equal levels are adjacent (DLA-3.6)
        if new_labels and new_labels[-1] == levels[j]:
            new_info[-1] += info[j]
        else:
            new_starts.append(int(starts[j]))
            new_info.append(float(info[j]))
            new_labels.append(int(levels[j]))
    new_starts.append(t)
    new_info.append(iota_t)
    new_labels.append(0)
    m = len(new_starts)
    st.count[r] = m
    st.starts[r] = -1
    st.labels[r] = -1
    st.info[r] = 0.0
    st.starts[r, :m] = new_starts
    st.labels[r, :m] = new_labels
    st.info[r, :m] = new_info


def _empty_row_plan(R: int, T: int, C: int) -> RowPlan:
    return RowPlan(
        boundary=np.zeros((R, T), bool),
        count=np.zeros((R, T), np.int64),
        starts=np.full((R, T, C), -1, np.int64),
        labels=np.full((R, T, C), -1, np.int64),
        boundary_margin=np.full((R, T), np.inf),
        merge_margin=np.full((R, T), np.inf),
    )


def run_policy(
    iota: np.ndarray, config: Config, init: PartitionState
) -> tuple[RowPlan, PartitionState]:
    """Dispatch on ``config.policy`` (DLA-3 or DLA-4)."""
    if config.policy == "fenwick":
        return plan_fenwick(iota, config, init)
    return plan_dla(iota, config, init)
