"""What the reference decided at one readout, in words, for a failed plan comparison.

``decision_context(config, k=..., scores=..., ...)`` returns a function of a
position ``(b, t, h)`` that replays the reference policy (DLA-3, DLA-4) on
that one row up to readout ``t`` and describes step ``t``: the score and
``tau`` of the boundary decision (DLA-3.1), the informations after the
write, the pair costs and the merged pair (DLA-3.4), or the Fenwick levels
(DLA-4.1). A kernel author reads there why the expected plan is what it is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from dla.cache import Cache
from dla.config import Config
from dla.reference.policies import PartitionState, fenwick_level, run_policy
from dla.reference.scores import token_scores


def _fmt(xs: Any) -> str:
    return "[" + ", ".join(f"{float(x):.17g}" for x in np.asarray(xs).ravel()) + "]"


def _row(config: Config, k: Any, scores: Any, cache: Cache | None, cu: Any,
         b: int, t: int, h: int) -> tuple[np.ndarray, PartitionState, int]:
    """The row's scores ``iota [1, t_local + 1]``, its carried partition and ``t_local``."""
    start, n = 0, b
    if cu is not None:
        cuts = np.asarray(cu, np.int64)
        n = int(np.searchsorted(cuts, t, side="right") - 1)
        start = int(cuts[n])
    local = t - start
    C = config.capacity
    if cache is None:
        init, prev_key, carried = PartitionState.fresh(1, C), None, None
    else:
        c = cache.to_numpy()
        init = PartitionState(
            count=np.asarray(c.count[n, h], np.int64).reshape(1),
            starts=np.asarray(c.starts[n, h], np.int64).reshape(1, C),
            labels=np.asarray(c.labels[n, h], np.int64).reshape(1, C),
            info=np.asarray(c.info[n, h], np.float64).reshape(1, C),
            position=np.asarray(c.position[n], np.int64).reshape(1),
        )
        prev_key = np.asarray(c.prev_key[n, h], np.float64).reshape(1, -1)
        carried = init.position > 0
    bb = 0 if cu is not None else b
    if config.score == "external":
        src = np.asarray(scores, np.float64)[bb, start : t + 1, h][None]
        iota = token_scores("external", None, src, None)
    else:
        src = np.asarray(k, np.float64)[bb, start : t + 1, h][None]
        iota = token_scores("key_cosine", src, None, prev_key, carried)
    return iota, init, local


def describe(config: Config, iota: np.ndarray, init: PartitionState, local: int) -> str:
    """Step ``local`` of one row (DLA-3.3 or DLA-4.1), replayed from ``init``."""
    _, before = run_policy(iota[:, :local], config, init)
    p = int(before.position[0])
    iota_t = float(iota[0, local])
    if config.policy == "fenwick":
        n = int(before.count[0])
        starts = [int(x) for x in before.starts[0, :n]] + [p]
        levels = [int(x) for x in fenwick_level(p, np.asarray(starts))]
        return (f"reference (fenwick) at position {p} = {p:b}b: starts {starts} have levels "
                f"{levels}; states of equal level merge (DLA-4.1)")
    n = int(before.count[0])
    info = [float(x) for x in before.info[0, :n]]
    boundary = n == 0 or iota_t > config.tau
    text = (f"reference at position {p}: iota = {iota_t:.17g}, tau = {config.tau!r} -> "
            f"{'boundary' if boundary else 'no boundary'} ("
            f"{'forced: no state yet' if n == 0 else 'iota > tau is strict'}, DLA-3.1)")
    info = [*info, iota_t] if boundary else [*info[:-1], info[-1] + iota_t]
    text += f"; information after the write {_fmt(info)}"
    if len(info) > config.capacity:
        costs = [info[i] + info[i + 1] for i in range(len(info) - 1)]
        i_star = int(np.argmin(costs))
        ties = [i for i, c in enumerate(costs) if c == costs[i_star]]
        text += (f"; pair costs {_fmt(costs)} -> merge pair ({i_star}, {i_star + 1})"
                 + (f", an exact tie with pairs {ties[1:]}: the oldest wins" if len(ties) > 1
                    else "") + " (DLA-3.4)")
    return text


def decision_context(config: Config, *, k: Any = None, scores: Any = None,
                     initial_cache: Cache | None = None,
                     cu_seqlens: Any = None) -> Callable[[tuple[int, int, int]], str]:
    """A function of ``(b, t, h)`` describing the reference's decision at that readout."""

    def at(where: tuple[int, int, int]) -> str:
        b, t, h = where
        iota, init, local = _row(config, k, scores, initial_cache, cu_seqlens, b, t, h)
        return describe(config, iota, init, local)

    return at
