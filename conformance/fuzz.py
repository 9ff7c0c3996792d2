"""Fuzzed calls for the robustness level (DLA-9, DLA-12.10): malformed input never passes.

Hypothesis draws a valid call inside the implementation's claims (sizes, a
configuration, optionally a carried cache, an injected plan or packed
sequences) and applies one or two mutations from a closed vocabulary
(:data:`MUTATIONS`): a NaN or an infinity in a float input or cache field,
a wrong rank or size, an integer or mismatched dtype, a value outside its
domain, malformed ``cu_seqlens``, one corrupted plan or cache field, a missing
or unused input, a non-array argument, and valid but extreme values or an
empty call. The oracle is the shared validation (``dla.reference.validation``,
DLA-9) on the very arguments the implementation receives:

- if it raises, the implementation must raise a ``ValueError`` or
  ``TypeError`` of a type one of the mutations alone would give, named and
  citing its clause (DLA-9.13), or refuse the call as DLA-9.14 asks;
- if the call is valid, the implementation must agree with the reference
  (DLA-10.2), or refuse it as DLA-9.14 asks (counted as not supported).

Anything else (another exception, a crash, a hang past a time limit, a
silent wrong result) fails, with the falsifying call in the report. The
detail says how many calls were tried and how each ended.
"""

from __future__ import annotations

import dataclasses
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import HealthCheck, Phase, Verbosity, given, seed, settings
from hypothesis import strategies as st

import dla.reference as ref
from dla.arrays import as_numpy, is_torch
from dla.cache import CACHE_FIELDS, Cache
from dla.config import Config
from dla.conformance.checks import Check, Context
from dla.conformance.inputs import Shape, cu_seqlens_for, random_inputs, rng_for
from dla.conformance.report import ClauseResult
from dla.conformance.tolerance import compare, is_refusal
from dla.plan import PLAN_FIELDS, Plan
from dla.reference import validation as val

LEVEL = "robustness"
#: Calls per profile.
EXAMPLES = {"ci": 30, "thorough": 400}
#: Seconds a call may take before it counts as a hang.
TIME_LIMIT = 120
#: Tokens a carried cache has consumed.
PREFIX = 7

MUTATIONS = ("nan", "posinf", "neginf", "rank", "size", "int_dtype", "mixed_dtype",
             "wide_gate", "domain", "cu_seqlens", "plan", "cache", "missing", "unused",
             "not_an_array", "extreme", "empty")
_FLOAT_INPUTS = ("q", "k", "v", "g", "lam", "beta", "scores")


@dataclass(frozen=True)
class FuzzCase:
    """A drawn call: sizes, configuration, extras and mutations (reproducible from its repr)."""

    T: int
    C: int
    policy: str
    base: str
    score: str
    with_cache: bool
    with_plan: bool
    packed: bool
    mutations: tuple[tuple[str, int], ...]
    data_seed: int


@st.composite
def fuzz_cases(draw: Any, ctx: Context) -> FuzzCase:
    c = ctx.claims
    policy = draw(st.sampled_from(c.policies))
    T = c.fit("T", draw(st.sampled_from((1, 5, 17, 33, 65)))) or 1
    C = c.fit("C", draw(st.integers(1, 4))) or 1
    if policy == "fenwick":  # enough levels for a carried prefix of PREFIX tokens too (DLA-4.2)
        from dla.reference.policies import fenwick_capacity

        cmax = c.size_rule("C").max
        if cmax is not None:
            T = max(min(T, (1 << (cmax - 1)) - PREFIX), 1)
        C = fenwick_capacity(T + PREFIX)
    n = draw(st.integers(1, 2))
    mutations = tuple((draw(st.sampled_from(MUTATIONS)), draw(st.integers(0, 2**16)))
                      for _ in range(n))
    return FuzzCase(
        T=T, C=C, policy=policy, base=draw(st.sampled_from(c.bases)),
        score=draw(st.sampled_from(c.scores)),
        with_cache="streaming" in c.levels and draw(st.booleans()),
        with_plan=c.plans == "any" and draw(st.booleans()),
        packed="varlen" in c.levels and draw(st.booleans()),
        mutations=mutations, data_seed=draw(st.integers(0, 2**32 - 1)))


# ----------------------------------------------------------------- building a call
@dataclass
class Arrays:
    """A call as NumPy arrays with the dtype each reaches the implementation in."""

    config: Config
    x: dict[str, Any]  # forward arrays (and cu_seqlens); values may be lists (not_an_array)
    dtypes: dict[str, str]  # name -> dtype name, "compute" for the compute dtype
    plan: Plan | None = None
    cache: Cache | None = None

    def copy(self) -> Arrays:
        return Arrays(self.config, dict(self.x), dict(self.dtypes), self.plan, self.cache)


def base_call(ctx: Context, case: FuzzCase) -> Arrays:
    """The valid call of ``case``, inside the claims, before any mutation."""
    rng = rng_for(case.data_seed, "fuzz", dataclasses.astuple(case)[:-2])
    B = 1 if case.packed else 2
    s = ctx.fit_shape(Shape(B=B, T=case.T, H=2, K=4, V=3))
    cfg = Config(capacity=case.C, tau=0.5, score=case.score, policy=case.policy, base=case.base)
    x: dict[str, Any] = random_inputs(rng, s, cfg, ctx.dtype)
    dtypes = {n: "compute" for n in x}
    out = Arrays(cfg, x, dtypes)
    if case.packed:
        cut = int(rng.integers(0, s.T + 1))
        x["cu_seqlens"] = cu_seqlens_for([cut, 0, s.T - cut])
        dtypes["cu_seqlens"] = ctx.claims.cu_seqlens_dtype
    N = 3 if case.packed else s.B
    if case.with_cache:
        pre = random_inputs(rng, dataclasses.replace(s, B=N, T=PREFIX), cfg, ctx.dtype)
        kw = {n: pre[n] for n in ("beta", "scores") if n in pre}
        _, cache = ref.forward(*[pre[n] for n in ("q", "k", "v", "g", "lam")], cfg,
                               output_final_cache=True, **kw)
        assert cache is not None
        out.cache = ctx.quantize_cache(cache)
    if case.with_plan:
        kw = {"scores": x["scores"]} if cfg.score == "external" else {"k": x["k"]}
        out.plan = ref.make_plan(cfg, initial_cache=out.cache,
                                 cu_seqlens=x.get("cu_seqlens"), **kw)
    return out


def _pick(names: list[str], k: int) -> str:
    return names[k % len(names)]


def mutate(a: Arrays, kind: str, k: int, ctx: Context) -> Arrays:
    """``a`` with one mutation of the vocabulary applied (``k`` chooses where)."""
    a = a.copy()
    x = a.x
    floats = [n for n in _FLOAT_INPUTS if n in x and isinstance(x[n], np.ndarray)]
    if kind in ("nan", "posinf", "neginf"):
        value = {"nan": np.nan, "posinf": np.inf, "neginf": -np.inf}[kind]
        fields = floats + ([f"cache.{f}" for f in ("states", "info", "prev_key")]
                           if a.cache is not None else [])
        name = _pick(fields, k)
        if name.startswith("cache.") and a.cache is not None:
            f = name.removeprefix("cache.")
            arr = np.array(getattr(a.cache, f), np.float64)
            if arr.size:
                arr.flat[k % arr.size] = value
            a.cache = dataclasses.replace(a.cache, **{f: arr})
        elif x[name].size:
            arr = np.array(x[name], np.float64)
            arr.flat[k % arr.size] = value
            x[name] = arr
    elif kind == "rank":
        name = _pick(floats, k)
        x[name] = x[name][..., 0] if k % 2 else x[name][..., None]
    elif kind == "size":
        name = _pick(floats, k)
        axis = (k // 7) % x[name].ndim
        arr = x[name]
        x[name] = (np.take(arr, range(max(arr.shape[axis] - 1, 0)), axis=axis) if k % 2
                   else np.concatenate([arr, np.take(arr, [0], axis=axis)], axis=axis)
                   if arr.shape[axis] else np.ones((*arr.shape[:axis], 1, *arr.shape[axis + 1:])))
    elif kind == "int_dtype":
        name = _pick(floats, k)
        x[name] = np.zeros(x[name].shape, np.int64)
        a.dtypes[name] = "int64"
    elif kind == "mixed_dtype":
        a.dtypes["k"] = "float64" if ctx.dtype != "float64" else "float32"
    elif kind == "wide_gate":  # valid (DLA-1.3): a gate in float32 or float64
        name = _pick([n for n in ("g", "lam", "beta", "scores") if n in x], k)
        a.dtypes[name] = "float64" if k % 2 else "float32"
    elif kind == "domain":
        choices = ["g"] + [n for n in ("beta", "scores") if n in x]
        name = _pick(choices, k)
        arr = np.array(x[name], np.float64)
        if arr.size:
            arr.flat[k % arr.size] = {"g": 0.25, "beta": 2.5 if k % 2 else -0.5,
                                      "scores": -0.25}[name]
        x[name] = arr
    elif kind == "cu_seqlens":
        T = x["q"].shape[1]
        bad = [np.array([0, T + 1], np.int64), np.array([0, T, T - 1, T], np.int64),
               np.array([1, T], np.int64), np.array([[0, T]], np.int64),
               np.array([0.0, float(T)]), np.array([0, T], np.int64)]
        x["cu_seqlens"] = bad[k % len(bad)]
        a.dtypes["cu_seqlens"] = str(x["cu_seqlens"].dtype)
        if k % len(bad) == len(bad) - 1 and x["q"].shape[0] == 1:  # valid cu, but B = 2
            for n in floats:
                x[n] = np.concatenate([x[n], x[n]], axis=0)
    elif kind == "plan" and a.plan is not None:
        p = a.plan
        f = ("count", "starts", "labels", "boundary")[k % 4]
        arr = np.array(getattr(p, f))
        if arr.size:
            if f == "count":
                arr.flat[k % arr.size] = 0 if k % 2 else a.config.capacity + 1
            elif f == "boundary":
                arr = arr.astype(np.float64)
            else:
                arr.flat[k % arr.size] = a.config.capacity + 5
        a.plan = dataclasses.replace(p, **{f: arr})
    elif kind == "cache" and a.cache is not None:
        c = a.cache
        f = ("count", "position", "starts", "info", "states")[k % 5]
        arr = np.array(getattr(c, f))
        if f == "count":
            arr = arr + a.config.capacity + 1
        elif f == "position":
            arr = arr * 0
        elif f == "starts":
            arr[..., 0] = 3
        elif f == "info":
            arr = arr - 1.0
        else:
            arr = arr[..., :-1]
        a.cache = dataclasses.replace(c, **{f: arr})
    elif kind == "missing":
        name = "beta" if "beta" in x and k % 2 else ("scores" if "scores" in x else "beta")
        x.pop(name, None)
    elif kind == "unused":
        if "beta" not in x:
            x["beta"] = np.full(x["g"].shape, 0.5)
            a.dtypes["beta"] = "compute"
        elif "scores" not in x:
            x["scores"] = np.zeros(x["g"].shape)
            a.dtypes["scores"] = "compute"
    elif kind == "not_an_array":
        name = _pick(floats, k)
        x[name] = np.asarray(x[name]).tolist()
    elif kind == "extreme":  # valid: huge or tiny values the dtype still represents
        name = _pick([n for n in ("q", "v") if n in x], k)
        scale = {"float16": 2.0**6, "bfloat16": 2.0**40, "float32": 2.0**40,
                 "float64": 2.0**200}[ctx.dtype]
        x[name] = np.asarray(x[name]) * (scale if k % 2 else 1.0 / scale)
    elif kind == "empty":  # valid: T = 0
        for n in floats:
            x[n] = x[n][:, :0]
        if "cu_seqlens" in x:
            x["cu_seqlens"] = np.array([0, 0], np.int64)
        if a.plan is not None:
            a.plan = Plan(**{f: np.asarray(getattr(a.plan, f))[:, :0] for f in PLAN_FIELDS})
    return a


# ----------------------------------------------------------------- to the implementation
def _resolve(ctx: Context, dtype: str) -> str:
    return ctx.dtype if dtype == "compute" else dtype


def to_impl(ctx: Context, a: Arrays) -> tuple[list[Any], dict[str, Any]]:
    """The call's arguments in the implementation's kind, each in its own dtype."""
    ad = ctx.adapter

    def conv(name: str, v: Any) -> Any:
        if not isinstance(v, np.ndarray):
            return v
        dt = _resolve(ctx, a.dtypes.get(name, str(v.dtype)))
        if ad.array == "numpy":
            return v.astype(dt if dt != "bfloat16" else "float32")
        import torch

        return torch.as_tensor(np.ascontiguousarray(v)).to(device=ctx.device,
                                                            dtype=getattr(torch, dt))

    args = [conv(n, a.x.get(n)) for n in ("q", "k", "v", "g", "lam")]
    kw: dict[str, Any] = {n: conv(n, a.x[n]) for n in ("beta", "scores", "cu_seqlens")
                          if n in a.x}
    if a.plan is not None:
        kw["plan"] = Plan(**{f: conv(f"plan.{f}", np.asarray(getattr(a.plan, f)))
                             for f in PLAN_FIELDS})
    if a.cache is not None:  # values and shapes mutated, dtypes as the adapter gives them
        kw["initial_cache"] = ad.cache_to_impl(a.cache)
    return args, kw


def oracle(ctx: Context, args: list[Any], kw: dict[str, Any], config: Config
           ) -> BaseException | None:
    """The error the shared validation (DLA-9) raises for this call, or ``None`` if valid."""
    try:
        val.check_forward_call(*args, config, kind=ctx.adapter.array,
                               **{n: v for n, v in kw.items() if n != "output_final_cache"})
    except (ValueError, TypeError) as exc:
        return exc
    return None


@contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    """A hang becomes a ``TimeoutError`` (on the main thread of a POSIX process)."""
    usable = hasattr(signal, "SIGALRM") and threading.current_thread() is threading.main_thread()
    if not usable:
        yield
        return

    def hang(signum: int, frame: Any) -> None:
        raise TimeoutError(f"the call did not return within {seconds} s")

    old = signal.signal(signal.SIGALRM, hang)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _float64(x: Any) -> Any:
    if x is None or not (is_torch(x) or isinstance(x, np.ndarray)):
        return x
    a = as_numpy(x)
    return a.astype(np.float64) if a.dtype.kind == "f" else a


def run_case(ctx: Context, case: FuzzCase, tally: dict[str, int]) -> None:
    """One fuzzed call; raises ``AssertionError`` describing a failure."""
    base = base_call(ctx, case)
    a = base
    for kind, k in case.mutations:
        a = mutate(a, kind, k, ctx)
    args, kw = to_impl(ctx, a)
    expected_exc = oracle(ctx, args, kw, a.config)
    allowed = {type(expected_exc).__name__} if expected_exc is not None else set()
    if expected_exc is not None and len(case.mutations) > 1:
        for kind, k in case.mutations:  # any one broken rule may be reported (DLA-9.13)
            single = mutate(base, kind, k, ctx)
            e = oracle(ctx, *to_impl(ctx, single), single.config)
            if e is not None:
                allowed.add(type(e).__name__)
    try:
        with time_limit(TIME_LIMIT):
            result = ctx.adapter.impl.forward(*args, a.config, **kw)
    except Exception as exc:
        _judge_raise(exc, expected_exc, allowed, tally)
        return
    if expected_exc is not None:
        tally["failed"] += 1
        raise AssertionError(f"accepted a malformed call; the validation raises "
                             f"{type(expected_exc).__name__}: {expected_exc}")
    o, _ = ctx.adapter.finish_forward(result, kw)
    ref_kw = {n: _float64(v) for n, v in kw.items()}
    if "plan" in ref_kw:
        ref_kw["plan"] = Plan(**{f: as_numpy(getattr(kw["plan"], f)) for f in PLAN_FIELDS})
    if "initial_cache" in ref_kw:
        ref_kw["initial_cache"] = Cache(**{f: _float64(getattr(kw["initial_cache"], f))
                                           for f in CACHE_FIELDS})
    o_ref, _ = ref.forward(*[_float64(v) for v in args], a.config, **ref_kw)
    comp = compare(o, o_ref, ctx.dtype)
    if not comp.passed:
        tally["failed"] += 1
        raise AssertionError(f"a valid call gave a wrong result: {comp.message}")
    tally["valid and agreed"] += 1


def _judge_raise(exc: BaseException, expected: BaseException | None, allowed: set[str],
                 tally: dict[str, int]) -> None:
    if expected is None:
        if is_refusal(exc):
            tally["valid, refused as not supported"] += 1
            return
        tally["failed"] += 1
        raise AssertionError(f"a valid call raised {type(exc).__name__}: {exc}")
    msg = str(exc)
    named = is_refusal(exc) or (type(exc).__name__ in allowed and isinstance(
        exc, (ValueError, TypeError)) and "DLA-" in msg and ":" in msg.split(" ")[0] + " ")
    if not named:
        tally["failed"] += 1
        raise AssertionError(f"raised {type(exc).__name__}: {msg}; expected "
                             f"{' or '.join(sorted(allowed))} naming the argument and citing "
                             f"the clause (the validation raises: {expected})")
    tally["raised as required"] += 1


def _run(ctx: Context) -> ClauseResult:
    n = EXAMPLES.get(ctx.profile.name, EXAMPLES["ci"])
    tally = {"raised as required": 0, "valid and agreed": 0,
             "valid, refused as not supported": 0, "failed": 0}
    failure: list[tuple[FuzzCase, str]] = []
    phases = [Phase.generate] + ([Phase.shrink] if ctx.profile.name == "thorough" else [])

    start = time.perf_counter()
    try:  # first a sweep: every mutation once, and every non-finite value in every float input
        for case in sweep(ctx):
            try:
                run_case(ctx, case, tally)
            except AssertionError as err:
                failure[:] = [(case, str(err))]
                raise
    except AssertionError:
        return _result(ctx, False, f"{failure[-1][1]}; falsifying call: {failure[-1][0]!r}",
                       tally, start)

    @seed(ctx.seed)
    @settings(max_examples=n, deadline=None, database=None, phases=phases, derandomize=False,
              verbosity=Verbosity.quiet, print_blob=False, suppress_health_check=list(HealthCheck))
    @given(fuzz_cases(ctx))
    def test(case: FuzzCase) -> None:
        try:
            run_case(ctx, case, tally)
        except AssertionError as err:
            failure[:] = [(case, str(err))]
            raise

    try:
        test()
        passed = True
        detail = ""
    except Exception as exc:
        passed = False
        detail = (f"{failure[-1][1]}; falsifying call: {failure[-1][0]!r}" if failure
                  else f"the fuzz run failed: {type(exc).__name__}: {exc}")
    return _result(ctx, passed, detail, tally, start)


def _result(ctx: Context, passed: bool, detail: str, tally: dict[str, int],
            start: float) -> ClauseResult:
    tried = sum(tally.values())
    counts = ", ".join(f"{v} {k}" for k, v in tally.items() if v)
    summary = f"{tried} fuzzed calls (profile {ctx.profile.name}, seed {ctx.seed}): {counts}"
    return ClauseResult(LEVEL, "DLA-9.13, DLA-9.14, DLA-12.10", "fuzzed malformed calls",
                        passed, f"{detail}; {summary}" if detail else summary, None,
                        dtype=ctx.dtype, device=ctx.device,
                        seconds=time.perf_counter() - start, regime="fuzz")


def sweep(ctx: Context) -> list[FuzzCase]:
    """Deterministic calls before the random ones: each mutation of :data:`MUTATIONS` once, and
    NaN, +inf and -inf in each float input in turn (``k`` picks the input)."""
    c = ctx.claims
    T = c.fit("T", 17) or 1
    policy = c.policies[0]
    C = c.fit("C", 3) or 1
    if policy == "fenwick":
        from dla.reference.policies import fenwick_capacity

        C = fenwick_capacity(T + PREFIX)
    base = FuzzCase(T=T, C=C, policy=policy, base=c.bases[0], score=c.scores[-1],
                    with_cache="streaming" in c.levels, with_plan=c.plans == "any",
                    packed="varlen" in c.levels, mutations=(), data_seed=ctx.seed)
    n_floats = 5 + (base.base == "delta") + (base.score == "external")
    out = [dataclasses.replace(base, mutations=((kind, 1),)) for kind in MUTATIONS]
    out += [dataclasses.replace(base, mutations=((kind, i),))
            for kind in ("nan", "posinf", "neginf") for i in range(n_floats)]
    return out


def fuzz_checks(ctx: Context) -> list[Check]:
    return [ctx.check(LEVEL, "DLA-9.13, DLA-9.14", "fuzzed malformed calls", lambda: _run(ctx))]
