"""The configuration of a DLA layer (spec clause DLA-1.2)."""

from __future__ import annotations

import math
from dataclasses import dataclass

SCORES = ("key_cosine", "external")
POLICIES = ("dla", "fenwick")
BASES = ("gla", "delta")


@dataclass(frozen=True)
class Config:
    """DLA-1.2: the discrete and numeric hyper-parameters of one DLA layer.

    ``capacity`` is ``C``, the most states that may exist at a readout;
    ``tau`` is the boundary threshold of DLA-3.1; ``score`` picks the token
    score of DLA-2; ``policy`` the plan policy (DLA-3 or DLA-4); ``base`` the
    state transition of DLA-5.1; ``scale`` the readout scale (``None`` means
    ``K ** -0.5``). Invalid values raise at construction (DLA-9.2).
    """

    capacity: int
    tau: float = 0.5
    score: str = "key_cosine"
    policy: str = "dla"
    base: str = "gla"
    scale: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.capacity, bool) or not isinstance(self.capacity, int):
            raise TypeError(
                f"capacity: must be an int (DLA-9.2), got {type(self.capacity).__name__}"
            )
        if self.capacity < 1:
            raise ValueError(f"capacity: must be >= 1 (DLA-1.2), got {self.capacity}")
        if isinstance(self.tau, bool) or not isinstance(self.tau, (int, float)):
            raise TypeError(f"tau: must be a real number (DLA-9.2), got {type(self.tau).__name__}")
        if not math.isfinite(self.tau):
            raise ValueError(f"tau: must be finite (DLA-1.2), got {self.tau}")
        for name, value, allowed in (
            ("score", self.score, SCORES),
            ("policy", self.policy, POLICIES),
            ("base", self.base, BASES),
        ):
            if value not in allowed:
                raise ValueError(f"{name}: must be one of {allowed} (DLA-1.2), got {value!r}")
        if self.scale is not None:
            if isinstance(self.scale, bool) or not isinstance(self.scale, (int, float)):
                raise TypeError(
                    "scale: must be a real number or None (DLA-9.2), "
                    f"got {type(self.scale).__name__}"
                )
            if not (math.isfinite(self.scale) and self.scale > 0):
                raise ValueError(f"scale: must be finite and > 0 (DLA-1.2), got {self.scale}")

    def resolved_scale(self, head_dim: int) -> float:
        """DLA-5.3: the readout scale, ``K ** -0.5`` unless given."""
        return float(head_dim) ** -0.5 if self.scale is None else float(self.scale)

    def to_dict(self) -> dict:
        return {
            "capacity": self.capacity,
            "tau": self.tau,
            "score": self.score,
            "policy": self.policy,
            "base": self.base,
            "scale": self.scale,
        }
