"""Hypothesis property and invariant checks, run on an implementation through its adapter.

Each property is a rule of the spec that holds for *every* input, checked on
inputs Hypothesis draws: small shapes, capacities, thresholds, both bases and
both policies (those the implementation claims, ``CLAIMS["bases"]`` and
``CLAIMS["policies"]``), and lengths around the chunk sizes 16 and 64 that
optimized kernels use. A drawn :class:`Case` holds only sizes, the config and
a data seed; the arrays are made from the seed by :mod:`dla.conformance.inputs`,
so a falsifying example printed in a report reproduces the failure exactly.

The properties (clause ids of ``spec/SPEC.md``):

- DLA-3.3 / DLA-5.3 causality: changing the inputs after ``t0`` leaves the
  plan and the outputs up to ``t0`` unchanged;
- DLA-3.6 capacity (``1 <= count <= C`` at every readout) and partition
  (contiguous, chronological, covering ``[0, t]``, only coarsening);
- DLA-3.5 / DLA-4.1 labels: recency ranks under ``dla``, Fenwick levels under ``fenwick``;
- DLA-3.1 boundaries and DLA-3.4 merges, on dyadic external scores (exact ties);
- DLA-5.5 conservation: with ``lam`` all ones the output is the single-state
  base model (the reference with ``C = 1``);
- DLA-1.1 independence: permuting batch rows and heads permutes the results;
- DLA-7.2 chunk-size invariance (if ``streaming`` is claimed) and DLA-8.1
  packed sequences (if ``varlen`` is claimed).

``property_checks`` runs each property as a Hypothesis test with a fixed seed
and no example database, and turns its outcome into one ``ClauseResult``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np
from hypothesis import HealthCheck, Phase, Verbosity, given, seed, settings
from hypothesis import strategies as st

from dla.cache import CACHE_FIELDS, Cache
from dla.claims import Claims, resolve
from dla.config import SCORES, Config
from dla.conformance.inputs import Shape, random_inputs, rng_for
from dla.conformance.report import ClauseResult
from dla.conformance.tolerance import Comparison, compare, compare_cache, compare_plan
from dla.plan import PLAN_FIELDS, Plan
from dla.reference.policies import fenwick_capacity

LEVEL = "properties"

#: Examples per property, and whether failures are shrunk to a minimal example.
PROFILES: dict[str, tuple[int, bool]] = {"ci": (12, False), "thorough": (400, True)}

#: Sequence lengths: tiny ones, and one below, at and above multiples of the chunk sizes 16 and 64.
LENGTHS = (1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65)
#: Thresholds: below every score, on the dyadic grid of the external scores (exact ties),
#: between grid points, and above every score.
TAUS = (0.5, 0.0, 0.25, 1.0, 0.3, 0.7, 1.5, -0.25, 2.0)


# ----------------------------------------------------------------- drawn cases
@dataclass(frozen=True)
class Case:
    """One drawn input: sizes, config and the seed of its arrays (reproducible from its repr)."""

    B: int
    T: int
    H: int
    K: int
    V: int
    C: int
    tau: float
    score: str
    policy: str
    base: str
    scale: float | None
    data_seed: int

    def config(self) -> Config:
        return Config(self.C, self.tau, self.score, self.policy, self.base, self.scale)

    def shape(self) -> Shape:
        return Shape(self.B, self.T, self.H, self.K, self.V)

    def rng(self, purpose: str) -> np.random.Generator:
        """A generator determined by the whole case (so cases sharing a data seed differ)."""
        return rng_for(self.data_seed, purpose, dataclasses.astuple(self))

    def inputs(self, dtype: str, purpose: str = "inputs") -> dict[str, np.ndarray]:
        """``q, k, v, g, lam`` (+ ``beta`` / ``scores``), rounded to ``dtype``."""
        return random_inputs(self.rng(purpose), self.shape(), self.config(), dtype)


@st.composite
def cases(draw: Any, bases: tuple[str, ...], policies: tuple[str, ...],
          scores: tuple[str, ...] = SCORES, claims: Claims | None = None) -> Case:
    """A :class:`Case` over the claimed bases, policies and score sources, its sizes moved
    into the claimed ones (DLA-11.2)."""
    claims = claims or resolve(None)
    policy = draw(st.sampled_from(policies))
    T = claims.fit("T", draw(st.sampled_from(LENGTHS))) or 1
    if policy == "fenwick":
        cmax = claims.size_rule("C").max
        if cmax is not None:
            T = min(T, 1 << (cmax - 1))
        C = fenwick_capacity(T) + draw(st.integers(0, 1))
        if not claims.size_rule("C").allows(C):
            C = fenwick_capacity(T)
    else:
        C = claims.fit("C", draw(st.integers(1, 4))) or 1

    def size(name: str, lo: int, hi: int) -> int:
        return claims.fit(name, draw(st.integers(lo, hi))) or lo

    return Case(
        B=size("B", 1, 2), T=T, H=size("H", 1, 2), K=size("K", 1, 4), V=size("V", 1, 3), C=C,
        tau=draw(st.sampled_from(TAUS)), score=draw(st.sampled_from(scores)), policy=policy,
        base=draw(st.sampled_from(bases)), scale=draw(st.sampled_from((None, 0.5))),
        data_seed=draw(st.integers(0, 2**32 - 1)),
    )


# ----------------------------------------------------------------- helpers
class Violation(AssertionError):
    """A property did not hold; ``worst`` is the comparison that showed it."""

    def __init__(self, message: str, worst: Comparison | None = None) -> None:
        super().__init__(message)
        self.worst = worst


def _require(comp: Comparison, what: str) -> Comparison:
    if not comp.passed:
        raise Violation(f"{what}: {comp.message}", comp)
    return comp


def _fail(message: str, field: str = "plan", where: tuple[int, ...] | None = None) -> None:
    raise Violation(message, Comparison(False, field, where=where, error=1.0, message=message))


def _plan_kw(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The score source of ``make_plan``: ``scores`` if external, else the keys."""
    if "scores" in inputs:
        return {"scores": inputs["scores"]}
    return {"k": inputs["k"]}


def _forward_kw(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {n: inputs[n] for n in ("beta", "scores") if n in inputs}


def _run_forward(adapter: Any, inputs: dict[str, np.ndarray], config: Config,
                 **kw: Any) -> tuple[np.ndarray, Cache | None]:
    x = inputs
    return adapter.forward(x["q"], x["k"], x["v"], x["g"], x["lam"], config,
                           **_forward_kw(x), **kw)


def _take(x: np.ndarray, axis: int, index: Any) -> np.ndarray:
    return np.take(x, index, axis=axis)


def _slice_inputs(inputs: dict[str, np.ndarray], a: int, b: int) -> dict[str, np.ndarray]:
    return {n: x[:, a:b] for n, x in inputs.items()}


def _plan_slice(plan: Plan, a: int, b: int) -> Plan:
    return Plan(**{f: getattr(plan, f)[:, a:b] for f in PLAN_FIELDS})


def _plan_map(plan: Plan, fn: Callable[[np.ndarray], np.ndarray]) -> Plan:
    return Plan(**{f: fn(getattr(plan, f)) for f in PLAN_FIELDS})


def _bit_length(x: int) -> int:
    return int(x).bit_length()


# ----------------------------------------------------------------- plan invariants
def _rows(plan: Plan) -> Any:
    """Per row ``(b, h)``: ``boundary [T]``, ``count [T]``, ``starts [T, C]``, ``labels [T, C]``."""
    B, _, H = plan.count.shape
    for b in range(B):
        for h in range(H):
            yield (b, h), plan.boundary[b, :, h], plan.count[b, :, h], plan.starts[b, :, h], \
                plan.labels[b, :, h]


def _make_plan(adapter: Any, case: Case) -> tuple[Plan, dict[str, np.ndarray]]:
    inputs = case.inputs(adapter.dtype)
    return adapter.make_plan(case.config(), **_plan_kw(inputs)), inputs


def prop_capacity(adapter: Any, case: Case) -> None:
    """DLA-3.6: ``1 <= count <= C`` at every readout."""
    plan, _ = _make_plan(adapter, case)
    for (b, h), _, count, _, _ in _rows(plan):
        for t, n in enumerate(count):
            if not 1 <= n <= case.C:
                _fail(f"count {n} at readout (b, t, h) = {(b, t, h)}, outside [1, C = {case.C}]",
                      "plan.count", (b, t, h))


def prop_partition(adapter: Any, case: Case) -> None:
    """DLA-3.6: states contiguous, ordered by start, covering ``[0, t]``; the partition coarsens."""
    plan, _ = _make_plan(adapter, case)
    for (b, h), _, count, starts, labels in _rows(plan):
        prev: set[int] = set()
        for t, n in enumerate(count):
            n = max(int(n), 0)
            s = [int(x) for x in starts[t, :n]]
            where = (b, t, h)
            if not s or s[0] != 0 or s[-1] > t or any(x >= y for x, y in pairwise(s)):
                _fail(f"starts {s} at {where} do not split [0, {t}] in order", "plan.starts", where)
            if np.any(starts[t, n:] != -1) or np.any(labels[t, n:] != -1):
                _fail(f"unused slots at {where} are not -1: starts {list(starts[t])}, "
                      f"labels {list(labels[t])}", "plan.starts", where)
            if t and not set(s) <= prev | {t}:
                _fail(f"starts {s} at {where} are not a coarsening of {sorted(prev)} plus {t}",
                      "plan.starts", where)
            prev = set(s)


def prop_labels(adapter: Any, case: Case) -> None:
    """DLA-3.5 (recency ranks, policy ``dla``) and DLA-4.1 (Fenwick levels, one per state)."""
    plan, _ = _make_plan(adapter, case)
    for (b, h), _, count, starts, labels in _rows(plan):
        for t, n in enumerate(count):
            n = int(n)
            got = [int(x) for x in labels[t, :n]]
            if case.policy == "dla":
                want = list(range(n - 1, -1, -1))
            else:
                s = [int(x) for x in starts[t, :n]]
                ends = [*(x - 1 for x in s[1:]), t]
                want = [_bit_length(t ^ x) for x in s]
                if any(_bit_length(t ^ e) != w for e, w in zip(ends, want, strict=True)):
                    _fail(f"a state at {(b, t, h)} mixes Fenwick levels: starts {s}",
                          "plan.starts", (b, t, h))
            if got != want:
                _fail(f"labels {got} at {(b, t, h)}, expected {want}", "plan.labels", (b, t, h))


def _expected_boundary(case: Case, scores: np.ndarray) -> np.ndarray:
    if case.policy == "fenwick":
        return np.ones(scores.shape, bool)
    out = scores > case.tau
    out[:, 0] = True
    return out


def prop_boundary(adapter: Any, case: Case) -> None:
    """DLA-3.1 (strict ``iota > tau``, token 0 forced) and DLA-4.1 (every token opens a state)."""
    plan, inputs = _make_plan(adapter, case)
    want = _expected_boundary(case, inputs["scores"])
    bad = np.argwhere(plan.boundary != want)
    if bad.size:
        b, t, h = (int(i) for i in bad[0])
        _fail(f"boundary at {(b, t, h)} is {bool(plan.boundary[b, t, h])} for score "
              f"{inputs['scores'][b, t, h]} and tau {case.tau}", "plan.boundary", (b, t, h))


def _merge_step(prev: list[int], t: int, opens: bool, prefix: np.ndarray, C: int) -> list[int]:
    """DLA-3.3 steps 2-4 on the starts: open, then merge the cheapest adjacent pair."""
    q = [*prev, t] if opens or not prev else list(prev)
    if len(q) <= C:
        return q
    ends = [*q[1:], t + 1]
    info = [prefix[e] - prefix[s] for s, e in zip(q, ends, strict=True)]
    costs = [info[i] + info[i + 1] for i in range(len(q) - 1)]
    m = int(np.argmin(costs))
    return q[: m + 1] + q[m + 2 :]


def prop_merge(adapter: Any, case: Case) -> None:
    """DLA-3.4: with ``C + 1`` states the pair with least information merges; ties go oldest."""
    plan, inputs = _make_plan(adapter, case)
    scores = inputs["scores"]
    for (b, h), boundary, count, starts, _ in _rows(plan):
        prefix = np.concatenate([[0.0], np.cumsum(scores[b, :, h])])
        prev: list[int] = []
        for t in range(case.T):
            want = _merge_step(prev, t, bool(boundary[t]), prefix, case.C)
            got = [int(x) for x in starts[t, : max(int(count[t]), 0)]]
            if got != want:
                _fail(f"starts {got} at {(b, t, h)} after {prev}, boundary {bool(boundary[t])}; "
                      f"the least-information rule gives {want}", "plan.starts", (b, t, h))
            prev = got


# ----------------------------------------------------------------- numeric properties
def _perturb_after(case: Case, inputs: dict[str, np.ndarray], dtype: str,
                   t0: int) -> dict[str, np.ndarray]:
    """The inputs with every position ``> t0`` replaced by fresh values of the same domain."""
    other = case.inputs(dtype, "future")
    out = {}
    for n, x in inputs.items():
        y = x.copy()
        y[:, t0 + 1 :] = other[n][:, t0 + 1 :]
        out[n] = y
    return out


def prop_causality_plan(adapter: Any, case: Case) -> None:
    """DLA-3.3: the plan up to ``t0`` depends on no input after ``t0``."""
    t0 = int(case.rng("t0").integers(0, case.T))
    x = case.inputs(adapter.dtype)
    y = _perturb_after(case, x, adapter.dtype, t0)
    p1 = adapter.make_plan(case.config(), **_plan_kw(x))
    p2 = adapter.make_plan(case.config(), **_plan_kw(y))
    _require(compare_plan(_plan_slice(p2, 0, t0 + 1), _plan_slice(p1, 0, t0 + 1)),
             f"plan up to t0 = {t0} changed when the inputs after t0 changed")


def prop_causality_output(adapter: Any, case: Case) -> Comparison:
    """DLA-5.3: the outputs up to ``t0`` depend on no input after ``t0``."""
    t0 = int(case.rng("t0").integers(0, case.T))
    x = case.inputs(adapter.dtype)
    y = _perturb_after(case, x, adapter.dtype, t0)
    o1, _ = _run_forward(adapter, x, case.config())
    o2, _ = _run_forward(adapter, y, case.config())
    return _require(compare(o2[:, : t0 + 1], o1[:, : t0 + 1], adapter.dtype),
                    f"outputs up to t0 = {t0} changed when the inputs after t0 changed")


def prop_conservation(adapter: Any, case: Case) -> Comparison:
    """DLA-5.5: with ``lam`` all ones the output is the base model (the reference with C = 1)."""
    from dla import reference

    x = case.inputs(adapter.dtype)
    x["lam"] = np.ones_like(x["lam"])
    o, _ = _run_forward(adapter, x, case.config())
    base = Config(1, case.tau, case.score, "dla", case.base, case.scale)
    r, _ = _run_forward(reference, {**x, "lam": x["lam"][..., :1]}, base)
    return _require(compare(o, r, adapter.dtype),
                    "output with lam = 1 differs from the single-state base model")


def _permutation(rng: np.random.Generator, n: int) -> np.ndarray:
    p = rng.permutation(n)
    return p[::-1].copy() if n > 1 and np.array_equal(p, np.arange(n)) else p


def prop_independence(adapter: Any, case: Case) -> Comparison:
    """DLA-1.1: permuting batch rows and heads permutes the outputs and the plan alike."""
    if case.B * case.H == 1:
        case = dataclasses.replace(case, H=2)
    rng = case.rng("permutation")
    pb, ph = _permutation(rng, case.B), _permutation(rng, case.H)

    def perm(a: np.ndarray) -> np.ndarray:
        return _take(_take(a, 0, pb), 2, ph)

    x = case.inputs(adapter.dtype)
    y = {n: perm(a) for n, a in x.items()}
    o, _ = _run_forward(adapter, x, case.config())
    o_p, _ = _run_forward(adapter, y, case.config())
    comp = _require(compare(o_p, perm(o), adapter.dtype),
                    f"outputs not permuted alike (batch {pb.tolist()}, heads {ph.tolist()})")
    p = adapter.make_plan(case.config(), **_plan_kw(x))
    p_p = adapter.make_plan(case.config(), **_plan_kw(y))
    _require(compare_plan(p_p, _plan_map(p, perm)),
             f"plan not permuted alike (batch {pb.tolist()}, heads {ph.tolist()})")
    return comp


def _cuts(rng: np.random.Generator, T: int) -> list[int]:
    """1 to 3 cuts in ``[0, T]``, near multiples of the chunk sizes; 0, ``T`` and repeated cuts
    give empty pieces (an empty first piece leaves a fresh cache, DLA-2.3)."""
    near = [c for m in (16, 32, 64) for c in (m - 1, m, m + 1) if 0 < c <= T]
    pool = near + [int(c) for c in rng.integers(0, T + 1, size=3)]
    n = int(rng.integers(1, 4))
    return sorted(int(c) for c in rng.choice(pool, size=n))


def prop_streaming(adapter: Any, case: Case) -> Comparison:
    """DLA-7.2: pieces, each continuing the previous final cache, equal one pass."""
    x = case.inputs(adapter.dtype)
    cfg = case.config()
    bounds = [0, *_cuts(case.rng("cuts"), case.T), case.T]
    o_full, c_full = _run_forward(adapter, x, cfg, output_final_cache=True)
    p_full = adapter.make_plan(cfg, **_plan_kw(x))
    outs, cache = [], None
    for a, b in pairwise(bounds):
        piece = _slice_inputs(x, a, b)
        p = adapter.make_plan(cfg, **_plan_kw(piece), initial_cache=cache)
        _require(compare_plan(p, _plan_slice(p_full, a, b)), f"plan of piece [{a}, {b})")
        o, cache = _run_forward(adapter, piece, cfg, initial_cache=cache, output_final_cache=True)
        if cache is None:
            _fail("forward returned no final cache with output_final_cache=True", "cache")
        outs.append(o)
    what = f"pieces {list(pairwise(bounds))} vs one pass"
    comp = _require(compare(np.concatenate(outs, axis=1), o_full, adapter.dtype), what)
    assert c_full is not None
    _require(compare_cache(cache, c_full, adapter.dtype), f"final cache of {what}")
    return comp


def _lengths(rng: np.random.Generator, T: int) -> list[int]:
    cuts = _cuts(rng, T)
    if rng.integers(0, 2):
        cuts = [0, *cuts]  # an empty first sequence
    bounds = [0, *cuts, T]
    return [b - a for a, b in pairwise(bounds)]


def prop_varlen(adapter: Any, case: Case) -> Comparison:
    """DLA-8.1: packed sequences (``cu_seqlens``, ``B = 1``) equal separate calls."""
    case = dataclasses.replace(case, B=1)
    x = case.inputs(adapter.dtype)
    cfg = case.config()
    lengths = _lengths(case.rng("lengths"), case.T)
    cu = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    o, cache = _run_forward(adapter, x, cfg, cu_seqlens=cu, output_final_cache=True)
    plan = adapter.make_plan(cfg, **_plan_kw(x), cu_seqlens=cu)
    parts, worst = [], None
    for n, (a, b) in enumerate(pairwise(cu)):
        piece = _slice_inputs(x, int(a), int(b))
        o_n, c_n = _run_forward(adapter, piece, cfg, output_final_cache=True)
        p_n = adapter.make_plan(cfg, **_plan_kw(piece))
        _require(compare_plan(_plan_slice(plan, int(a), int(b)), p_n), f"plan of sequence {n}")
        if cache is None or c_n is None:
            _fail("forward returned no final cache with output_final_cache=True", "cache")
        row = Cache(**{f: getattr(cache, f)[n : n + 1] for f in CACHE_FIELDS})
        _require(compare_cache(row, c_n, adapter.dtype), f"final cache of sequence {n}")
        parts.append(o_n)
    worst = _require(compare(o, np.concatenate(parts, axis=1), adapter.dtype),
                     f"packed sequences of lengths {lengths} vs separate calls")
    return worst


# ----------------------------------------------------------------- the runner
@dataclass(frozen=True)
class Property:
    """One property: its clause, check name, function and the claims it needs."""

    clause: str
    check: str
    fn: Callable[[Any, Case], Comparison | None]
    needs_level: str | None = None
    scores: tuple[str, ...] = SCORES  # score sources it is checked on
    policies: tuple[str, ...] = ("dla", "fenwick")  # policies it is checked on (if claimed)


PROPERTIES: tuple[Property, ...] = (
    Property("DLA-3.3", "causality of the plan", prop_causality_plan),
    Property("DLA-5.3", "causality of the outputs", prop_causality_output),
    Property("DLA-3.6", "capacity: 1 <= count <= C", prop_capacity),
    Property("DLA-3.6", "partition: contiguous, ordered, coarsening", prop_partition),
    Property("DLA-3.5", "labels are recency ranks", prop_labels, policies=("dla",)),
    Property("DLA-4.1", "states are Fenwick levels, labelled by level", prop_labels,
             policies=("fenwick",)),
    Property("DLA-3.1", "boundary rule on dyadic scores", prop_boundary,
             scores=("external",)),
    Property("DLA-3.4", "merge rule and tie-break on dyadic scores", prop_merge,
             scores=("external",), policies=("dla",)),
    Property("DLA-5.5", "conservation: lam = 1 gives the base model", prop_conservation),
    Property("DLA-1.1", "batch and head independence", prop_independence),
    Property("DLA-7.2", "chunk-size invariance of streaming", prop_streaming, "streaming"),
    Property("DLA-8.1", "packed sequences equal separate calls", prop_varlen, "varlen"),
)


def _policies(prop: Property, claims: Claims) -> tuple[str, ...]:
    return tuple(p for p in claims.policies if p in prop.policies)


def _scores(prop: Property, claims: Claims) -> tuple[str, ...]:
    return tuple(s for s in claims.scores if s in prop.scores)


def _strategy(prop: Property, claims: Claims) -> st.SearchStrategy[Case]:
    return cases(claims.bases, _policies(prop, claims), _scores(prop, claims), claims)


def _worse(a: Comparison | None, b: Comparison | None) -> Comparison | None:
    def ratio(c: Comparison | None) -> float:
        return -1.0 if c is None else (c.error / c.bound if c.bound > 0 else 0.0)

    return b if ratio(b) > ratio(a) else a


def run_property(prop: Property, adapter: Any, profile: str = "ci", seed_: int = 0) -> ClauseResult:
    """Run one property as a Hypothesis test; a failure's detail names its falsifying case."""
    n, shrink = PROFILES[profile]
    phases = [Phase.explicit, Phase.generate] + ([Phase.shrink] if shrink else [])
    worst: list[Comparison | None] = [None]
    failure: list[tuple[Case, Violation]] = []

    @seed(seed_)
    @settings(max_examples=n, deadline=None, database=None, derandomize=False, phases=phases,
              verbosity=Verbosity.quiet, print_blob=False,
              suppress_health_check=list(HealthCheck))
    @given(_strategy(prop, adapter.claims))
    def test(case: Case) -> None:
        try:
            worst[0] = _worse(worst[0], prop.fn(adapter, case))
        except Violation as v:
            failure[:] = [(case, v)]
            raise
        except Exception as exc:  # the implementation raised: a failure, with its message
            err = Violation(f"raised {type(exc).__name__}: {exc}")
            failure[:] = [(case, err)]
            raise err from exc

    start = time.perf_counter()
    try:
        test()
        passed, detail = True, f"{n} examples held (profile {profile}, seed {seed_})"
    except Exception as exc:
        passed = False
        if failure:
            case, v = failure[-1]
            worst[0] = v.worst
            detail = f"{v}; falsifying example: {case!r} (profile {profile}, seed {seed_})"
        else:
            detail = f"the property run failed: {type(exc).__name__}: {exc}"
    return ClauseResult(
        level=LEVEL, clause=prop.clause, check=prop.check, passed=passed, detail=detail,
        worst=None if worst[0] is None else worst[0].to_json(), dtype=adapter.dtype,
        device=adapter.device, seconds=time.perf_counter() - start,
    )


def applicable(adapter: Any) -> list[Property]:
    """The properties for the levels, policies and score sources ``adapter``'s implementation
    claims."""
    c = adapter.claims
    return [p for p in PROPERTIES if (p.needs_level is None or p.needs_level in c.levels)
            and _policies(p, c) and _scores(p, c)]


def property_checks(adapter: Any, profile: str = "ci", seed: int = 0) -> list[ClauseResult]:
    """Run every applicable property on ``adapter``; one ``ClauseResult`` per property.

    ``profile`` is ``"ci"`` (few examples, no shrinking) or ``"thorough"``
    (many examples, failures shrunk to a minimal case). The same ``seed``
    and profile draw the same cases, so a report's failure reproduces.
    """
    if profile not in PROFILES:
        raise ValueError(f"profile: expected one of {sorted(PROFILES)}, got {profile!r}")
    return [run_property(p, adapter, profile, seed) for p in applicable(adapter)]
