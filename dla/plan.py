"""The plan: every discrete decision of DLA for one input (spec section DLA-6)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from dla.arrays import as_numpy

PLAN_FIELDS = ("boundary", "count", "starts", "labels")


@dataclass(frozen=True)
class Plan:
    """DLA-6.1: the partition of ``[0, t]`` at every readout ``t``.

    Arrays follow the ``[B, T, H, ...]`` layout and are of the implementation's
    own kind (NumPy for the reference, torch tensors elsewhere):

    - ``boundary`` ``[B, T, H]`` bool: token ``t`` opened a state (DLA-3.1).
    - ``count`` ``[B, T, H]`` int64: states that exist at readout ``t``.
    - ``starts`` ``[B, T, H, C]`` int64: start position of each state, oldest
      first; ``-1`` in slots ``>= count``. Positions count from the start of
      the sequence, carried tokens included (DLA-7).
    - ``labels`` ``[B, T, H, C]`` int64: readout label of each slot (DLA-3.5,
      DLA-4.2); ``-1`` in slots ``>= count``.
    """

    boundary: Any
    count: Any
    starts: Any
    labels: Any

    @property
    def capacity(self) -> int:
        return int(self.starts.shape[-1])

    def to_numpy(self) -> Plan:
        """The same plan with NumPy arrays (torch tensors are moved to the host)."""
        return Plan(**{f.name: as_numpy(getattr(self, f.name)) for f in fields(self)})

    def equals(self, other: Plan) -> bool:
        """Exact equality of every field (DLA-6.2: plan parity is exact)."""
        a, b = self.to_numpy(), other.to_numpy()
        return all(
            getattr(a, n).shape == getattr(b, n).shape
            and np.array_equal(getattr(a, n), getattr(b, n))
            for n in PLAN_FIELDS
        )

