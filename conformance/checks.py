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
from dla.claims import Claims, Needs
from dla.config import Config
from dla.conformance.adapter import Adapter
from dla.conformance.inputs import Shape, fenwick_config, quantize, rng_for
from dla.conformance.report import NOT_SUPPORTED, WORKS_UNCLAIMED, ClauseResult
from dla.conformance.tolerance import CACHE_FLOAT_FIELDS, MARGIN_BOUND, Comparison, is_refusal
from dla.reference.policies import fenwick_capacity


@dataclass(frozen=True)
class Profile:
    """How much a certification run does: ``ci`` is fast, ``thorough`` larger and more."""

    name: str
    shape: Shape  # the main test shape
    repeats: int  # independent draws per check
    pieces: int  # streaming: number of pieces
    seq_lengths: int  # varlen: number of packed sequences
    grad_shape: Shape  # gradients: small, finite differences cost 2 reference calls per entry
    long_grad_shape: Shape  # gradients across chunks: directional differences per block


PROFILES: dict[str, Profile] = {
    "ci": Profile(
        "ci",
        Shape(B=2, T=32, H=2, K=8, V=8),
        repeats=1,
        pieces=4,
        seq_lengths=5,
        grad_shape=Shape(B=1, T=8, H=2, K=3, V=3),
        long_grad_shape=Shape(B=1, T=150, H=2, K=5, V=4),
    ),
    "thorough": Profile(
        "thorough",
        Shape(B=2, T=80, H=3, K=16, V=16),
        repeats=3,
        pieces=7,
        seq_lengths=9,
        grad_shape=Shape(B=1, T=12, H=2, K=4, V=4),
        long_grad_shape=Shape(B=2, T=300, H=2, K=8, V=6),
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
    def claims(self) -> Claims:
        return self.adapter.claims

    @property
    def margin_bound(self) -> float:
        return MARGIN_BOUND[self.dtype]

    def rng(self, *keys: Any) -> np.random.Generator:
        """The generator of one check: a function of the seed, the dtype and the check's name."""
        return rng_for(self.seed, self.dtype, *keys)

    # ------------------------------------------------------------ sizes inside the claims
    def fit_shape(self, s: Shape) -> Shape:
        """``s`` with each size moved to the nearest value the claims allow (DLA-11.2)."""
        fitted = {}
        for name in ("B", "T", "H", "K", "V"):
            n = getattr(s, name)
            fitted[name] = self.claims.fit(name, n)
            if fitted[name] is None:  # resolve() guarantees a value; keep the draw valid anyway
                fitted[name] = n
        return Shape(**fitted)

    @property
    def shape(self) -> Shape:
        """The profile's main shape, inside the claims."""
        return self.fit_shape(self.profile.shape)

    def plan_config(self, **kw: Any) -> Config:
        """A config for a plan check: plans do not depend on the base (DLA-6.1), so the base is
        one the implementation claims."""
        return Config(base=self.claims.bases[0], **kw)

    def capacity(self, C: int) -> int:
        """``C``, or the nearest capacity the claims allow when ``C`` is incidental to a check."""
        return self.claims.fit("C", C) or C

    def fenwick(self, T: int, **kw: Any) -> tuple[Config, int]:
        """A fenwick config for ``T`` tokens (DLA-4.2) and ``T``, shortened to fit a capacity
        limit of the claims."""
        cmax = self.claims.size_rule("C").max
        if cmax is not None and fenwick_capacity(T) > cmax:
            T = self.claims.fit("T", 1 << (cmax - 1)) or T
        return fenwick_config(T, **kw), T

    def check(self, level: str, clause: str, name: str, run: Callable[[], Outcome], *,
              config: Config | None = None, shape: Shape | None = None,
              features: Sequence[str] = (), regime: str = "", probe: bool = False) -> Check:
        """A :class:`Check` with what it needs of the implementation (checked in ``run_check``)."""
        sizes = {} if shape is None else {n: getattr(shape, n) for n in ("B", "T", "H", "K", "V")}
        needs = Needs(config=config, sizes=sizes, features=frozenset(features))
        if regime and regime != "small":  # DLA-12.11: the case comes from a named regime
            clause = _merge_clauses(clause, "DLA-12.11")
        return Check(level, clause, name, run, needs=needs, regime=regime, probe=probe)

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


NO_NEEDS = Needs()


@dataclass(frozen=True)
class Check:
    """One check of one level.

    ``clause`` lists the clauses it cites, comma-separated; the first is the
    clause it *targets*, the one a failure is attributed to. ``needs`` is what
    it requires of the implementation: outside the claims it is reported as
    not supported without running (DLA-11.2), unless it is a ``probe``, which
    runs outside the claims on purpose (the ``claims`` level, DLA-12.9).
    ``regime`` names the entry of :mod:`dla.conformance.regimes` its case
    comes from.
    """

    level: str
    clause: str
    name: str
    run: Callable[[], Outcome]
    needs: Needs = NO_NEEDS
    regime: str = ""
    probe: bool = False

    @property
    def id(self) -> str:
        return f"{self.level}:{self.clause}:{self.name}"

    @property
    def target(self) -> str:
        return self.clause.split(",")[0].strip()


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


def _result(check: Check, ctx: Context, passed: bool, detail: str,
            worst: dict[str, Any] | None, seconds: float, status: str = "",
            cites: str = "") -> ClauseResult:
    return ClauseResult(check.level, _merge_clauses(check.clause, cites), check.name, passed,
                        detail, worst, dtype=ctx.dtype, device=ctx.device, seconds=seconds,
                        status=status, target=check.target, regime=check.regime,
                        probe=check.probe)


def _model_clauses(comps: Sequence[Comparison]) -> str:
    """The clauses of the tolerance model a comparison applied (DLA-10.1, DLA-10.2, DLA-10.4,
    DLA-9.13 for errors): a check that compared outputs exercised them too."""
    out = []
    for c in comps:
        if c.field == "error":
            out.append("DLA-9.13, DLA-10.4")
        elif c.field.startswith("grad"):
            out.append("DLA-10.1, DLA-10.5, DLA-10.7")
        elif c.field == "cache" or c.field.startswith("cache."):
            out.append("DLA-10.1, DLA-10.2, DLA-10.4, DLA-10.6, DLA-1.6")
        elif c.rel_rms is not None:  # outputs: the adapter checked their kind and dtype too
            out.append("DLA-10.1, DLA-10.2, DLA-1.6, DLA-11.1")
        else:
            out.append("DLA-10.4, DLA-1.6")
    return _merge_clauses("", ", ".join(out))


def _raised(exc: BaseException) -> str:
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" at {tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno}" if tb else ""
    return f"raised {type(exc).__name__}: {exc}{where}"


def run_check(check: Check, ctx: Context) -> list[ClauseResult]:
    """Run one check; an exception is a failure of that check, never a crash of the run.

    A check outside the claims (DLA-11.2) does not run: its result is *not
    supported*. A probe runs outside the claims: a refusal in the form of
    DLA-11.2 is *not supported*, a correct result *works, not claimed*, and a
    wrong result or any other exception a failure.
    """
    unsupported = ctx.claims.unsupported(check.needs, dtype=ctx.dtype, device=ctx.device)
    if unsupported is not None and not check.probe:
        return [_result(check, ctx, True, f"outside the claims: {unsupported}", None, 0.0,
                        status=NOT_SUPPORTED)]
    t0 = time.perf_counter()
    try:
        outcome = check.run()
    except Exception as exc:  # the implementation under test may raise anything
        seconds = time.perf_counter() - t0
        if check.probe and is_refusal(exc):
            return [_result(check, ctx, True, f"refused as DLA-11.2 asks: {type(exc).__name__}: "
                            f"{exc}", None, seconds, status=NOT_SUPPORTED)]
        detail = _raised(exc)
        if check.probe:
            detail = (f"outside its claims an implementation refuses with ValueError or TypeError "
                      f"naming the argument and citing DLA-11.2; it {detail}")
        return [_result(check, ctx, False, detail, None, seconds)]
    seconds = time.perf_counter() - t0
    items = list(outcome) if isinstance(outcome, (list, tuple)) else [outcome]
    results = [i for i in items if isinstance(i, ClauseResult)]
    if items and len(results) == len(items):
        for r in results:
            r.clause = _merge_clauses(r.clause, check.clause)
            r.target = r.target or r.clauses()[0]
            r.regime = r.regime or check.regime
            r.dtype, r.device = r.dtype or ctx.dtype, r.device or ctx.device
            r.seconds = r.seconds or seconds / len(results)
        return results
    if not items:
        return [_result(check, ctx, False, "the check compared nothing", None, seconds)]
    comp = _worst(items)  # type: ignore[arg-type]
    passed = all(c.passed for c in items)  # type: ignore[union-attr]
    status = ""
    detail = comp.message
    if check.probe:
        status = WORKS_UNCLAIMED if passed else ""
        detail = (f"works, not claimed: {detail}" if passed else
                  f"outside its claims it returned a wrong result instead of refusing "
                  f"(DLA-11.2): {detail}")
    result = _result(check, ctx, passed, detail, comp.to_json(), seconds, status=status,
                     cites=_model_clauses(items))  # type: ignore[arg-type]
    if not passed and comp.clause:  # the comparison knows which rule the difference breaks
        result.target = comp.clause
        result.clause = _merge_clauses(comp.clause, result.clause)
    return [result]
