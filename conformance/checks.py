"""What a conformance check is, the context it runs in, and how one is run.

A level (see :mod:`dla.conformance.levels`) is a list of :class:`Check`
objects; listing them is cheap (inputs are drawn only when a check runs), so
the command line can show progress and the pytest plugin can collect one
test item per check without running anything.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Union

import numpy as np

from dla.cache import CACHE_FIELDS, Cache
from dla.conformance.adapter import Adapter
from dla.conformance.inputs import Shape, quantize, rng_for
from dla.conformance.report import ClauseResult
from dla.conformance.tolerance import CACHE_FLOAT_FIELDS, MARGIN_BOUND, Comparison


@dataclass(frozen=True)
class Profile:
    """How much a certification run does: ``ci`` is fast, ``thorough`` larger and more."""

    name: str
    shape: Shape  # the main test shape
    repeats: int  # independent draws per check
    pieces: int  # streaming: number of pieces
    seq_lengths: int  # varlen: number of packed sequences
    grad_shape: Shape  # gradients: small, finite differences cost 2 reference calls per entry


PROFILES: dict[str, Profile] = {
    "ci": Profile(
        "ci",
        Shape(B=2, T=32, H=2, K=8, V=8),
        repeats=1,
        pieces=4,
        seq_lengths=5,
        grad_shape=Shape(B=1, T=8, H=2, K=3, V=3),
    ),
    "thorough": Profile(
        "thorough",
        Shape(B=2, T=80, H=3, K=16, V=16),
        repeats=3,
        pieces=7,
        seq_lengths=9,
        grad_shape=Shape(B=1, T=12, H=2, K=4, V=4),
    ),
}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"profile: expected one of {sorted(PROFILES)}, got {name!r}") from None


@dataclass
class Context:
    """Everything a check needs: the wrapped implementation, dtype, device, profile, seed."""

    adapter: Adapter
    profile: Profile
    seed: int

    @property
    def dtype(self) -> str:
        return self.adapter.dtype

    @property
    def device(self) -> str:
        return self.adapter.device

    @property
    def claims(self) -> dict[str, Any]:
        return self.adapter.claims

    @property
    def margin_bound(self) -> float:
        return MARGIN_BOUND[self.dtype]

    def rng(self, *keys: Any) -> np.random.Generator:
        """The generator of one check: a function of the seed, the dtype and the check's name."""
        return rng_for(self.seed, self.dtype, *keys)

    def supports(self, *, base: str | None = None, policy: str = "dla") -> bool:
        """The implementation claims ``policy`` (and ``base``, when a check depends on it).

        Plans do not depend on the base, so plan checks name no base.
        """
        base_ok = base is None or base in self.claims["bases"]
        return base_ok and policy in self.claims["policies"]

    def quantize_cache(self, cache: Cache) -> Cache:
        """A reference cache rounded to the dtype the implementation receives it in."""
        cd = self.adapter.cache_dtype
        return Cache(
            **{
                f: (
                    quantize(getattr(cache, f), cd)
                    if f in CACHE_FLOAT_FIELDS
                    else np.asarray(getattr(cache, f), np.int64)
                )
                for f in CACHE_FIELDS
            }
        )


Outcome = Union[Comparison, Sequence[Comparison], ClauseResult, Sequence[ClauseResult]]  # noqa: UP007


@dataclass(frozen=True)
class Check:
    """One check of one level, tagged with the clause(s) it certifies (comma-separated)."""

    level: str
    clause: str
    name: str
    run: Callable[[], Outcome]

    @property
    def id(self) -> str:
        return f"{self.level}:{self.clause}:{self.name}"


def _worst(comps: Sequence[Comparison]) -> Comparison:
    failed = [c for c in comps if not c.passed]
    if failed:
        return failed[0]

    return max(comps, key=lambda c: c.ratio)


def _merge_clauses(own: str, cited: str) -> str:
    """``own`` followed by the ids of ``cited`` it lacks (results of a check cite its clauses)."""
    ids = [c.strip() for c in own.split(",") if c.strip()]
    ids += [c.strip() for c in cited.split(",") if c.strip() and c.strip() not in ids]
    return ", ".join(ids)


def run_check(check: Check, ctx: Context) -> list[ClauseResult]:
    """Run one check; an exception is a failure of that check, never a crash of the run."""
    tags = {"dtype": ctx.dtype, "device": ctx.device}
    t0 = time.perf_counter()
    try:
        outcome = check.run()
    except Exception as exc:  # the implementation under test may raise anything
        tb = traceback.extract_tb(exc.__traceback__)
        where = f" at {tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno}" if tb else ""
        detail = f"raised {type(exc).__name__}: {exc}{where}"
        return [
            ClauseResult(
                check.level,
                check.clause,
                check.name,
                False,
                detail,
                None,
                **tags,
                seconds=time.perf_counter() - t0,
            )
        ]
    seconds = time.perf_counter() - t0
    items = list(outcome) if isinstance(outcome, (list, tuple)) else [outcome]
    results = [i for i in items if isinstance(i, ClauseResult)]
    if items and len(results) == len(items):
        for r in results:
            r.clause = _merge_clauses(r.clause, check.clause)
            r.dtype, r.device = r.dtype or ctx.dtype, r.device or ctx.device
            r.seconds = r.seconds or seconds / len(results)
        return results
    if not items:
        return [
            ClauseResult(
                check.level,
                check.clause,
                check.name,
                False,
                "the check compared nothing",
                None,
                **tags,
                seconds=seconds,
            )
        ]
    comp = _worst(items)  # type: ignore[arg-type]
    passed = all(c.passed for c in items)  # type: ignore[union-attr]
    return [
        ClauseResult(
            check.level,
            check.clause,
            check.name,
            passed,
            comp.message,
            comp.to_json(),
            **tags,
            seconds=seconds,
        )
    ]
