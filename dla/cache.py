"""The streaming cache (spec section DLA-7)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from dla.arrays import as_numpy

CACHE_FIELDS = ("states", "info", "starts", "labels", "count", "prev_key", "position")


@dataclass(frozen=True)
class Cache:
    """DLA-7.1: everything needed to continue a sequence, for ``N`` sequences.

    Slots are in chronological order (slot 0 the oldest state); slots
    ``>= count`` hold zeros (``states``, ``info``, ``prev_key`` never used) and
    ``-1`` (``starts``, ``labels``).

    - ``states`` ``[N, H, C, K, V]`` float: the state matrices ``S_i``.
    - ``info`` ``[N, H, C]`` float: the information ``I_i`` of each state.
    - ``starts`` ``[N, H, C]`` int64: start position of each state.
    - ``labels`` ``[N, H, C]`` int64: the labels at the last readout.
    - ``count`` ``[N, H]`` int64: number of states.
    - ``prev_key`` ``[N, H, K]`` float: the key of the last token consumed.
    - ``position`` ``[N]`` int64: number of tokens consumed so far.
    """

    states: Any
    info: Any
    starts: Any
    labels: Any
    count: Any
    prev_key: Any
    position: Any

    def to_numpy(self) -> Cache:
        return Cache(**{f.name: as_numpy(getattr(self, f.name)) for f in fields(self)})

