"""The catalogue of golden cases (``fixtures/README.md``): what each case feeds the reference.

Each :class:`CaseSpec` names the spec clauses it exercises, builds its inputs
from a seed, and (for valid cases) carries a ``check`` that asserts the case
really exercises what it claims (a tie really happens, a boundary opens at
every token, a continuation really equals one pass...), so a fixture cannot
silently drift into a case that tests nothing.

Inputs come from :class:`Draws`: the raw 64-bit outputs of NumPy's ``PCG64``
bit generator (``numpy.random.default_rng(seed).bit_generator``), whose stream
NumPy keeps stable across versions and machines, turned into floats with
exactly rounded IEEE operations only (no ``exp``/``log``/reductions), and
rounded to the float32 grid, so a float32 implementation sees the same values
as the float64 reference and the input bits are the same on every machine.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from dla.cache import Cache
from dla.config import Config
from dla.conformance.tolerance import compare, compare_cache
from dla.plan import Plan
from dla.reference import empty_cache, forward, make_plan
from dla.reference.policies import fenwick_capacity, fenwick_level

# ----------------------------------------------------------------- random draws


class Draws:
    """Deterministic inputs from PCG64 raw bits, through exactly rounded arithmetic only."""

    def __init__(self, seed: int) -> None:
        bits = np.random.default_rng(seed).bit_generator
        if not isinstance(bits, np.random.PCG64):  # the stream the fixtures depend on
            raise RuntimeError(
                f"numpy.random.default_rng must use PCG64, got {type(bits).__name__}"
            )
        self._bits = bits

    def unit(self, shape: tuple[int, ...]) -> np.ndarray:
        """Uniform in ``[0, 1)``: the top 53 bits of each raw output times ``2**-53`` (exact)."""
        n = int(np.prod(shape, dtype=np.int64))
        raw = self._bits.random_raw(n) if n else np.zeros(0, np.uint64)
        return ((raw >> np.uint64(11)).astype(np.float64) * 2.0**-53).reshape(shape)

    def uniform(self, shape: tuple[int, ...], lo: float = -1.0, hi: float = 1.0) -> np.ndarray:
        """Uniform in ``[lo, hi)``, rounded to the float32 grid (kept as float64)."""
        return f32(lo + (hi - lo) * self.unit(shape))

    def grid(self, shape: tuple[int, ...], levels: int, step: float) -> np.ndarray:
        """``j * step``, ``j`` uniform in ``0 .. levels - 1`` (dyadic ``step``: exact)."""
        return np.floor(self.unit(shape) * levels) * step


def f32(x: np.ndarray) -> np.ndarray:
    """``x`` rounded to float32 and back (exact, deterministic)."""
    return np.asarray(x, np.float64).astype(np.float32).astype(np.float64)


def unit_rows(x: np.ndarray) -> np.ndarray:
    """``x / |x|`` along the last axis, summed in a fixed order (same bits on every machine)."""
    sq = x[..., 0] * x[..., 0]
    for i in range(1, x.shape[-1]):
        sq = sq + x[..., i] * x[..., i]
    return f32(x / np.sqrt(np.where(sq > 0, sq, 1.0))[..., None])


# ----------------------------------------------------------------- case description


@dataclass(frozen=True)
class Dims:
    """Sizes of a case (DLA-1.1): ``[B, T, H, K]`` keys, ``V`` value width."""

    B: int
    T: int
    H: int
    K: int
    V: int


@dataclass(frozen=True)
class Built:
    """What a case passes to ``forward``.

    ``derived`` names the entries computed by the reference (a carried cache),
    which may differ in the last bits across machines; the rest come from
    :class:`Draws` and are bit-exact.
    """

    inputs: dict[str, np.ndarray]
    initial_cache: Cache | None = None
    plan: Plan | None = None
    derived: tuple[str, ...] = ()
    grad_output: np.ndarray | None = None  # cotangent of o for the gradient fixtures (DLA-10.5)


@dataclass(frozen=True)
class ErrorSpec:
    """The error a conforming implementation must raise (DLA-9), Wycheproof style."""

    type: str  # "ValueError" or "TypeError"
    clause: str
    argument: str  # the message must start with it (DLA-9.13)
    stage: str = "forward"  # "forward", or "config" when dla.Config itself must refuse


@dataclass(frozen=True)
class Outcome:
    """The reference's answer for a valid case, given to the case's ``check``."""

    spec: CaseSpec
    built: Built
    config: Config
    o: np.ndarray
    plan: Plan
    cache: Cache | None
    boundary_margin: np.ndarray
    merge_margin: np.ndarray


@dataclass(frozen=True)
class CaseSpec:
    name: str
    description: str
    config: dict[str, Any]
    dims: Dims
    seed: int
    clauses: tuple[str, ...]
    build: Callable[[Draws, CaseSpec], Built]
    output_final_cache: bool = False
    check: Callable[[Outcome], None] | None = None
    margin_floor: float | None = None  # search seeds upward until min_margin >= this
    error: ErrorSpec | None = None
    gradients: bool = False  # store finite-difference gradients of sum(grad_output * o)
    target: str = ""  # the clause the case is about: a failure is attributed to it
    requires: tuple[str, ...] = ()  # config fields an invalid case's rule depends on

    @property
    def kind(self) -> str:
        return "invalid" if self.error is not None else "valid"

    def make_config(self) -> Config:
        return Config(**self.config)


# ----------------------------------------------------------------- input builders


def topic_keys(d: Draws, s: Dims, run: float = 4.0, noise: float = 0.05) -> np.ndarray:
    """Keys that stay near one random direction for about ``run`` tokens, then jump.

    Consecutive cosines are then near 1 (inside a run) or spread (at a jump),
    so with ``tau`` near 0.5 boundary decisions are far from the threshold.
    """
    switch = d.unit((s.B, s.T, s.H)) < 1.0 / run
    topic = np.cumsum(switch, axis=1)  # [B, T, H], values in 0 .. T
    dirs = d.uniform((s.B, s.T + 1, s.H, s.K))
    b, h = np.arange(s.B)[:, None, None], np.arange(s.H)[None, None, :]
    return f32(dirs[b, topic, h] + noise * d.uniform((s.B, s.T, s.H, s.K)))


def draw_inputs(
    d: Draws,
    s: Dims,
    cfg: Config,
    *,
    keys: str = "topic",
    g_range: tuple[float, float] = (-0.5, 0.0),
    beta_max: float = 1.0,
) -> dict[str, np.ndarray]:
    """``q, k, v, g, lam`` (and ``beta``, ``scores`` when the config uses them), fixed order."""
    bth = (s.B, s.T, s.H)
    k = topic_keys(d, s) if keys == "topic" else d.uniform((*bth, s.K))
    if cfg.base == "delta":
        k = unit_rows(k)  # keeps I - beta k k^T a contraction (the gated delta rule)
    out = {
        "q": d.uniform((*bth, s.K)),
        "k": k,
        "v": d.uniform((*bth, s.V)),
        "g": d.uniform(bth, *g_range),
        "lam": d.uniform((*bth, cfg.capacity), 0.25, 1.25),
    }
    if cfg.base == "delta":
        out["beta"] = d.uniform(bth, 0.0, beta_max)
    if cfg.score == "external":
        out["scores"] = d.grid(bth, 5, 0.25)  # {0, .25, .5, .75, 1}: exact, with many ties
    return out


def plain(
    keys: str = "topic", g_range: tuple[float, float] = (-0.5, 0.0)
) -> Callable[[Draws, CaseSpec], Built]:
    def build(d: Draws, spec: CaseSpec) -> Built:
        return Built(draw_inputs(d, spec.dims, spec.make_config(), keys=keys, g_range=g_range))

    return build


def with_zero_keys(d: Draws, spec: CaseSpec) -> Built:
    """DLA-2.2: zero keys at the first token, twice in a row, and alone."""
    x = draw_inputs(d, spec.dims, spec.make_config(), keys="uniform")
    for t in (0, 3, 4, 9):
        x["k"][:, t] = 0.0
    return Built(x)


def with_equal_lam(d: Draws, spec: CaseSpec) -> Built:
    """DLA-5.5: equal readout weights make DLA the single-state base model."""
    x = draw_inputs(d, spec.dims, spec.make_config())
    x["lam"] = np.full_like(x["lam"], 0.75)
    return Built(x)


def float32_storage(d: Draws, spec: CaseSpec) -> Built:
    """DLA-1.3: float32 inputs (exact on the float32 grid), computed in float64 by the reference."""
    x = draw_inputs(d, spec.dims, spec.make_config())
    return Built({n: a.astype(np.float32) for n, a in x.items()})


def injected_plan(d: Draws, spec: CaseSpec) -> Built:
    """DLA-6.2: execute the plan of a different threshold (tau = 0.05) instead of the own one."""
    cfg = spec.make_config()
    x = draw_inputs(d, spec.dims, cfg)
    other = make_plan(replace(cfg, tau=0.05), k=x["k"])
    return Built(x, plan=other)


# ----------------------------------------------------------------- streaming and varlen


STREAM_PIECES = (13, 16, 1)  # prefix, continuation, one decode step


def _stream_full(d: Draws, spec: CaseSpec) -> dict[str, np.ndarray]:
    s = replace(spec.dims, T=sum(STREAM_PIECES))
    return draw_inputs(d, s, spec.make_config())


def _slice(x: dict[str, np.ndarray], a: int, b: int) -> dict[str, np.ndarray]:
    return {n: v[:, a:b].copy() for n, v in x.items()}


def _run(
    x: dict[str, np.ndarray], cfg: Config, cache: Cache | None = None, cu: np.ndarray | None = None
) -> tuple[np.ndarray, Cache]:
    o, c = forward(**x, config=cfg, initial_cache=cache, output_final_cache=True, cu_seqlens=cu)
    assert c is not None
    return o, c


CACHE_KEYS = tuple(f"initial_cache.{f}" for f in ("states", "info", "prev_key"))


def stream_piece(index: int) -> Callable[[Draws, CaseSpec], Built]:
    """Piece ``index`` of a sequence cut at :data:`STREAM_PIECES`, from the prior piece's cache."""

    def build(d: Draws, spec: CaseSpec) -> Built:
        cfg, full = spec.make_config(), _stream_full(d, spec)
        cache, a = None, 0
        for n in STREAM_PIECES[:index]:
            _, cache = _run(_slice(full, a, a + n), cfg, cache)
            a += n
        piece = _slice(full, a, a + STREAM_PIECES[index])
        return Built(piece, initial_cache=cache, derived=CACHE_KEYS if cache else ())

    return build


VARLEN_LENGTHS = (3, 0, 0, 1, 6, 1, 0, 5)


def cu_for(lengths: tuple[int, ...]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


def varlen(d: Draws, spec: CaseSpec) -> Built:
    """DLA-8.1: packed sequences, with empty ones next to each other and length-1 ones."""
    x = draw_inputs(d, replace(spec.dims, T=sum(VARLEN_LENGTHS)), spec.make_config())
    return Built({**x, "cu_seqlens": cu_for(VARLEN_LENGTHS)})


VARLEN_PREFIX, VARLEN_REST = (2, 0, 3, 1), (2, 1, 0, 4)


def varlen_from_cache(d: Draws, spec: CaseSpec) -> Built:
    """DLA-8.1 with DLA-7: each packed sequence continues row ``n`` of an initial cache."""
    cfg = spec.make_config()
    first = draw_inputs(d, replace(spec.dims, T=sum(VARLEN_PREFIX)), cfg)
    _, cache = _run(first, cfg, cu=cu_for(VARLEN_PREFIX))
    rest = draw_inputs(d, replace(spec.dims, T=sum(VARLEN_REST)), cfg)
    return Built(
        {**rest, "cu_seqlens": cu_for(VARLEN_REST)}, initial_cache=cache, derived=CACHE_KEYS
    )


# ----------------------------------------------------------------- checks (valid cases)
# Each check raises AssertionError when a case does not exercise what it claims; the
# numeric ones use the float64 tolerance of the one tolerance model (DLA-10.1).


def _require(ok: bool, what: str) -> None:
    if not ok:  # not `assert`: the checks must also run under python -O
        raise AssertionError(what)


def _require_close(actual: np.ndarray, expected: np.ndarray, what: str) -> None:
    cmp = compare(actual, expected, "float64")
    _require(cmp.passed, f"{what}: {cmp.message}")


def check_invariants(out: Outcome) -> None:
    """DLA-3.6: 1 <= count <= C, starts strictly increasing, labels the recency ranks."""
    p, C = out.plan, out.config.capacity
    assert np.all((p.count >= 1) & (p.count <= C)), "count outside [1, C]"
    used = np.arange(C) < p.count[..., None]
    both = used[..., 1:]
    assert np.all(np.diff(p.starts, axis=-1)[both] > 0), "starts not increasing"
    if out.config.policy == "dla":
        assert np.array_equal(p.labels, np.where(used, p.count[..., None] - 1 - np.arange(C), -1))


def check_masked(out: Outcome) -> None:
    """DLA-5.4: the masked form equals the recurrent form."""
    check_invariants(out)
    om, _ = forward(**out.built.inputs, config=out.config, masked=True)
    _require_close(om, out.o, "masked form != recurrent form")


def check_boundary_everywhere(out: Outcome) -> None:
    assert bool(out.plan.boundary.all()), "some token did not open a state"
    assert np.isfinite(out.merge_margin).any(), "no merge happened"


def check_no_boundary(out: Outcome) -> None:
    assert not out.plan.boundary[:, 1:].any() and bool((out.plan.count == 1).all())


def check_state_per_token(out: Outcome) -> None:
    T = out.plan.count.shape[1]
    assert np.array_equal(
        out.plan.count, np.broadcast_to(np.arange(1, T + 1)[None, :, None], out.plan.count.shape)
    )


def check_ties(out: Outcome) -> None:
    assert (out.merge_margin == 0).any(), "no exact tie among merge costs"
    assert (out.boundary_margin == 0).any(), "no score exactly at tau"


def check_zero_keys(out: Outcome) -> None:
    k = out.built.inputs["k"]
    assert (np.abs(k).sum(-1) == 0).any(), "no zero-norm key"
    assert out.plan.boundary[:, 3].all(), "a zero key after a nonzero one scores 1 > tau"


def base_recurrence(x: dict[str, np.ndarray], base: str) -> np.ndarray:
    """The single-state base model (GLA or gated delta rule), with readout ``lam[..., 0]``."""
    q, k, v, g, lam = (np.asarray(x[n], np.float64) for n in ("q", "k", "v", "g", "lam"))
    B, T, H, K = q.shape
    S = np.zeros((B, H, K, v.shape[-1]))
    o = np.zeros((B, T, H, v.shape[-1]))
    for t in range(T):
        kt, vt = k[:, t], v[:, t]
        if base == "gla":
            S = np.exp(g[:, t])[..., None, None] * S + kt[..., None] * vt[..., None, :]
        else:
            bt = np.asarray(x["beta"], np.float64)[:, t][..., None, None]
            kS = np.einsum("bhk,bhkv->bhv", kt, S)
            S = np.exp(g[:, t])[..., None, None] * (S - bt * kt[..., None] * kS[..., None, :])
            S = S + bt * kt[..., None] * vt[..., None, :]
        o[:, t] = K**-0.5 * lam[:, t, :, :1] * np.einsum("bhk,bhkv->bhv", q[:, t], S)
    return o


def check_base_model(out: Outcome) -> None:
    """DLA-5.5: the output equals the single-state base recurrence."""
    r = base_recurrence(out.built.inputs, out.config.base)
    _require_close(out.o, r, "DLA != base model")


def check_strong_decay(out: Outcome) -> None:
    assert out.built.inputs["g"].max() < -5 and np.isfinite(out.o).all()


def check_fenwick(out: Outcome) -> None:
    """DLA-4.1, DLA-4.4 and, on the gla base, DLA-5.4."""
    check_fenwick_levels(out)
    if out.config.base == "gla":
        check_masked(out)


def check_float32(out: Outcome) -> None:
    """DLA-1.3: float32 inputs are promoted exactly; the output is the float64 one."""
    x64 = {n: a.astype(np.float64) for n, a in out.built.inputs.items()}
    o64, _ = forward(**x64, config=out.config)
    assert o64.dtype == out.o.dtype == np.float64 and np.array_equal(o64, out.o)


def check_injected(out: Outcome) -> None:
    own = make_plan(out.config, k=out.built.inputs["k"])
    assert out.built.plan is not None and not own.equals(out.built.plan), "plan equals own plan"
    o_own, _ = forward(**out.built.inputs, config=out.config)
    assert not np.allclose(o_own, out.o), "injected plan did not change the output"


def check_stream(index: int) -> Callable[[Outcome], None]:
    """DLA-7.2: piece ``index`` equals the same tokens of one full pass (plan, o, final cache)."""

    def check(out: Outcome) -> None:
        full = _stream_full(Draws(out.spec.seed), out.spec)
        o_full, cache_full = _run(full, out.config)
        plan_full = make_plan(out.config, k=full["k"])
        a = sum(STREAM_PIECES[:index])
        b = a + STREAM_PIECES[index]
        _require_close(out.o, o_full[:, a:b], "o != one pass")
        for f in ("boundary", "count", "starts", "labels"):
            assert np.array_equal(getattr(out.plan, f), getattr(plan_full, f)[:, a:b]), f
        if index == 0:
            check_closed_form(out)
        if b == sum(STREAM_PIECES):
            assert out.cache is not None
            cmp = compare_cache(out.cache, cache_full, "float64")
            _require(cmp.passed, f"final cache != one pass: {cmp.message}")

    return check


def check_varlen(out: Outcome) -> None:
    """DLA-8.1: every packed sequence equals a separate call (from its cache row)."""
    x = out.built.inputs
    cu = x["cu_seqlens"]
    c0 = out.built.initial_cache
    for n, (a, b) in enumerate(itertools.pairwise(cu)):
        piece = {k: v[:, a:b] for k, v in x.items() if k != "cu_seqlens"}
        row = (
            None
            if c0 is None
            else Cache(
                **{
                    f: getattr(c0, f)[n : n + 1]
                    for f in ("states", "info", "starts", "labels", "count", "prev_key", "position")
                }
            )
        )
        o, c = forward(**piece, config=out.config, initial_cache=row, output_final_cache=True)
        _require_close(out.o[:, a:b], o, f"sequence {n} differs")
        assert out.cache is not None and np.array_equal(out.cache.count[n], c.count[0])
        if a == b and c0 is not None:  # DLA-8.2: an empty sequence keeps its initial row
            assert np.array_equal(out.cache.states[n], c0.states[n])
    assert (np.diff(cu) == 0).any() and (np.diff(cu) == 1).any()


def check_long(out: Outcome) -> None:
    assert out.plan.count.shape[1] >= 8192 and np.isfinite(out.o).all()


def check_empty(out: Outcome) -> None:
    assert out.o.shape[1] == 0 and out.cache is not None and not out.cache.position.any()


def check_single(out: Outcome) -> None:
    assert (
        out.o.shape[1] == 1 and bool(out.plan.boundary.all()) and bool((out.plan.count == 1).all())
    )


# ----------------------------------------------------------------- regimes (DLA-12.11)


def float32_tenths(d: Draws, spec: CaseSpec) -> Built:
    """DLA-3.8: external scores equal to float32(0.1), just above the float64 tau = 0.1, and
    some exact zeros: every float32 0.1 is a boundary, whatever dtype compares."""
    x = draw_inputs(d, spec.dims, spec.make_config())
    tenth = float(np.float32(0.1))
    x["scores"] = np.where(d.unit(x["scores"].shape) < 0.7, tenth, 0.0)
    return Built(x)


def check_float32_tenths(out: Outcome) -> None:
    s = out.built.inputs["scores"]
    assert (s > 0.1).any()
    expect = s > out.config.tau
    expect[:, 0] = True
    assert np.array_equal(out.plan.boundary, expect)


def repeated_keys(d: Draws, spec: CaseSpec) -> Built:
    """DLA-2.6: per row one key, repeated, scaled by powers of two and negated, with zero keys:
    every score is exactly 0, 1 or 2."""
    x = draw_inputs(d, spec.dims, spec.make_config(), keys="uniform")
    s = spec.dims
    base = x["k"][:, :1]
    sign = np.where(d.unit((s.B, s.T, s.H, 1)) < 0.25, -1.0, 1.0)
    scale = 2.0 ** np.floor(d.unit((s.B, s.T, s.H, 1)) * 5 - 2)
    zero = d.unit((s.B, s.T, s.H, 1)) < 0.1
    x["k"] = np.where(zero, 0.0, sign * scale * base)
    return Built(x)


def check_repeated_keys(out: Outcome) -> None:
    iota = _scores_of(out)
    assert set(np.unique(iota[:, 1:])) <= {0.0, 1.0, 2.0} and (iota[:, 1:] == 0).any()


def _scores_of(out: Outcome) -> np.ndarray:
    from dla.reference.scores import key_cosine

    k = out.built.inputs["k"]
    rows = np.moveaxis(k, 2, 1).reshape(-1, k.shape[1], k.shape[3])
    return key_cosine(rows, None)


def extreme_key_norms(d: Draws, spec: CaseSpec) -> Built:
    """DLA-2.6: topic keys scaled by 2^-100, 2^100 or 1 per token (float32's range: their
    squares underflow or overflow in float32 unless the keys are rescaled first)."""
    x = draw_inputs(d, spec.dims, spec.make_config())
    s = spec.dims
    e = np.choose((d.unit((s.B, s.T, s.H, 1)) * 3).astype(int), [-100, 100, 0])
    x["k"] = np.ldexp(x["k"], e)
    return Built(x)


def check_extreme_norms(out: Outcome) -> None:
    k = np.abs(out.built.inputs["k"])
    assert k.max() > 2.0**90 and k[k > 0].min() < 2.0**-90 and np.isfinite(out.o).all()


def tenths_with_ties(d: Draws, spec: CaseSpec) -> Built:
    """DLA-3.2, DLA-3.9: float64 scores j / 10 chosen (by seed) so that the plan of the running
    sums of DLA-3.2 differs from the plan of prefix-sum differences in every row."""
    from dla.conformance.regime_cases import plan_with_prefix_sums

    x = draw_inputs(d, spec.dims, spec.make_config())
    cfg = spec.make_config()
    s = spec.dims
    for b, h in itertools.product(range(s.B), range(s.H)):
        for _ in range(200):
            row = np.floor(d.unit((s.T,)) * 21) / 10.0
            mine = make_plan(cfg, scores=row[None, :, None]).starts[0, :, 0]
            if not np.array_equal(mine, plan_with_prefix_sums(row[None], cfg)[0]):
                break
        x["scores"][b, :, h] = row
    return Built(x)


def check_tenths_with_ties(out: Outcome) -> None:
    from dla.conformance.regime_cases import plan_with_prefix_sums

    scores = out.built.inputs["scores"]
    rows = np.moveaxis(scores, 2, 1).reshape(-1, scores.shape[1])
    other = plan_with_prefix_sums(rows, out.config)
    mine = np.moveaxis(out.plan.starts, 2, 1).reshape(rows.shape[0], rows.shape[1], -1)
    assert all(not np.array_equal(mine[r], other[r]) for r in range(rows.shape[0]))


def non_unit_delta_keys(d: Draws, spec: CaseSpec) -> Built:
    """DLA-5.2: delta keys of norms in [0.5, 1.15], used as given."""
    x = draw_inputs(d, spec.dims, spec.make_config())
    s = spec.dims
    x["k"] = f32(x["k"] * (0.5 + 0.65 * d.unit((s.B, s.T, s.H, 1))))
    return Built(x)


def check_non_unit_keys(out: Outcome) -> None:
    n = np.linalg.norm(out.built.inputs["k"], axis=-1)
    assert n.min() < 0.8 and n.max() > 1.05
    check_invariants(out)


def check_wide(out: Outcome) -> None:
    s = out.spec.dims
    assert s.K != s.V and s.K > 64 and s.V > 128 and s.V % 64 and np.isfinite(out.o).all()


def check_strong_long(out: Outcome) -> None:
    G = np.cumsum(out.built.inputs["g"], axis=1)
    assert G.min() < -800 and np.isfinite(out.o).all()


# ----------------------------------------------------------------- invalid inputs


def base_invalid_inputs(d: Draws, spec: CaseSpec) -> dict[str, np.ndarray]:
    """Valid inputs the case then breaks (a config-stage case draws them for a valid config)."""
    config_stage = spec.error is not None and spec.error.stage == "config"
    return draw_inputs(d, spec.dims, Config(capacity=2) if config_stage else spec.make_config())


def mutate(
    fn: Callable[[dict[str, np.ndarray], CaseSpec], Built],
) -> Callable[[Draws, CaseSpec], Built]:
    def build(d: Draws, spec: CaseSpec) -> Built:
        return fn(base_invalid_inputs(d, spec), spec)

    return build


def _set(
    name: str, value: Callable[[np.ndarray], np.ndarray]
) -> Callable[[Draws, CaseSpec], Built]:
    def f(x: dict[str, np.ndarray], spec: CaseSpec) -> Built:
        return Built({**x, name: value(x[name])})

    return mutate(f)


def _poke(value: float, where: tuple[int, ...] = (0, 2, 1)) -> Callable[[np.ndarray], np.ndarray]:
    def f(a: np.ndarray) -> np.ndarray:
        a = a.copy()
        a[where] = value
        return a

    return f


def _drop(name: str) -> Callable[[Draws, CaseSpec], Built]:
    return mutate(lambda x, spec: Built({n: a for n, a in x.items() if n != name}))


def _add(
    name: str, value: Callable[[dict[str, np.ndarray]], np.ndarray]
) -> Callable[[Draws, CaseSpec], Built]:
    return mutate(lambda x, spec: Built({**x, name: value(x)}))


def _with_cache(edit: Callable[[Cache], Cache]) -> Callable[[Draws, CaseSpec], Built]:
    def f(x: dict[str, np.ndarray], spec: CaseSpec) -> Built:
        s = spec.dims
        _, cache = _run(_slice(x, 0, 2), spec.make_config())
        return Built(_slice(x, 2, s.T), initial_cache=edit(cache), derived=CACHE_KEYS)

    return mutate(f)


def _with_plan(edit: Callable[[Plan], Plan]) -> Callable[[Draws, CaseSpec], Built]:
    def f(x: dict[str, np.ndarray], spec: CaseSpec) -> Built:
        return Built(x, plan=edit(make_plan(spec.make_config(), k=x["k"])))

    return mutate(f)


def check_closed_form(out: Outcome) -> None:
    """DLA-5.6: a final state of a fresh gla sequence is sum_s exp(G_T-1 - G_s) k_s v_s^T."""
    x, c = out.built.inputs, out.cache
    assert c is not None and out.config.base == "gla"
    G = np.cumsum(x["g"], axis=1)  # [B, T, H]
    T = G.shape[1]
    for b, h in np.ndindex(c.count.shape):
        starts = [*c.starts[b, h, : c.count[b, h]], T]
        for j in range(c.count[b, h]):
            s = np.arange(starts[j], starts[j + 1])
            w = np.exp(G[b, -1, h] - G[b, s, h])
            S = np.einsum("s,sk,sv->kv", w, x["k"][b, s, h], x["v"][b, s, h])
            assert np.allclose(c.states[b, h, j], S, rtol=1e-10, atol=1e-12), "closed form"


def with_empty_cache(d: Draws, spec: CaseSpec) -> Built:
    """DLA-7.3: an explicit empty cache (position 0) is the same as no cache."""
    s = spec.dims
    x = draw_inputs(d, s, spec.make_config())
    return Built(x, initial_cache=empty_cache(s.B, s.H, spec.config["capacity"], s.K, s.V))


def check_empty_cache(out: Outcome) -> None:
    o, c = forward(**out.built.inputs, config=out.config, output_final_cache=True)
    assert np.array_equal(o, out.o) and out.cache is not None and c is not None
    assert np.array_equal(out.cache.starts, c.starts)


FENWICK_PIECES = (11, 10)


def fenwick_continue(d: Draws, spec: CaseSpec) -> Built:
    """DLA-4 with DLA-7: a fenwick sequence continued from a cache at position 11."""
    cfg = spec.make_config()
    full = draw_inputs(d, replace(spec.dims, T=sum(FENWICK_PIECES)), cfg)
    _, cache = _run(_slice(full, 0, FENWICK_PIECES[0]), cfg)
    return Built(_slice(full, FENWICK_PIECES[0], sum(FENWICK_PIECES)), initial_cache=cache,
                 derived=CACHE_KEYS)


def check_fenwick_continue(out: Outcome) -> None:
    """DLA-1.5, DLA-2.5, DLA-7.2: positions continue from 11 and the piece equals one pass."""
    check_fenwick_levels(out, offset=FENWICK_PIECES[0])
    full = draw_inputs(Draws(out.spec.seed), replace(out.spec.dims, T=sum(FENWICK_PIECES)),
                       out.config)
    o_full, cache_full = _run(full, out.config)
    plan_full = make_plan(out.config, k=full["k"], scores=full["scores"])
    a = FENWICK_PIECES[0]
    assert np.allclose(out.o, o_full[:, a:], rtol=1e-10, atol=1e-12), "o != one pass"
    for f in ("boundary", "count", "starts", "labels"):
        assert np.array_equal(getattr(out.plan, f), getattr(plan_full, f)[:, a:]), f
    assert out.cache is not None and np.array_equal(out.cache.starts, cache_full.starts)
    assert np.allclose(out.cache.info, cache_full.info), "DLA-2.5: information as in one pass"
    assert (out.cache.info != 0).any(), "DLA-2.5: information accumulated under fenwick"


def check_fenwick_levels(out: Outcome, offset: int = 0) -> None:
    """DLA-4.1: the state holding position s at readout p has level bit_length(p XOR s)."""
    p = out.plan
    for b, t, h in np.ndindex(p.count.shape):
        pos = offset + t
        n = p.count[b, t, h]
        slot = np.searchsorted(p.starts[b, t, h, :n], np.arange(pos + 1), side="right") - 1
        lv = fenwick_level(pos, np.arange(pos + 1))
        assert np.array_equal(p.labels[b, t, h, slot], lv), f"fenwick levels differ at {pos}"
    assert np.isinf(out.boundary_margin).all() and np.isinf(out.merge_margin).all(), "DLA-4.4"


def gradient_inputs(d: Draws, spec: CaseSpec) -> Built:
    """DLA-10.5: inputs away from the domain edges (g < 0, 0 < beta < 2) and a cotangent."""
    s, cfg = spec.dims, spec.make_config()
    x = draw_inputs(d, s, cfg, g_range=(-0.5, -0.05))
    if "beta" in x:
        x["beta"] = d.uniform(x["beta"].shape, 0.1, 0.9)
    w = d.uniform((s.B, s.T, s.H, s.V))
    return Built(x, plan=make_plan(cfg, k=x["k"]), grad_output=w)


DIFFERENTIABLE = ("q", "k", "v", "g", "lam", "beta")
FD_STEP = 1e-6


def fd_gradients(built: Built, cfg: Config) -> dict[str, np.ndarray]:
    """Central finite differences of ``sum(grad_output * o)`` with the plan frozen (DLA-10.5)."""
    x, w = built.inputs, built.grad_output
    assert w is not None and built.plan is not None

    def loss(y: dict[str, np.ndarray]) -> float:
        o, _ = forward(**y, config=cfg, plan=built.plan)
        return float(np.sum(w * o))

    grads = {}
    for name in (n for n in DIFFERENTIABLE if n in x):
        g = np.zeros_like(x[name])
        for idx in np.ndindex(x[name].shape):
            hi, lo = x[name].copy(), x[name].copy()
            hi[idx] += FD_STEP
            lo[idx] -= FD_STEP
            g[idx] = (loss({**x, name: hi}) - loss({**x, name: lo})) / (2 * FD_STEP)
        grads[name] = g
    return grads


def check_gradients(out: Outcome) -> None:
    assert out.built.plan is not None and out.built.plan.equals(out.plan), "plan not frozen"


# ----------------------------------------------------------------- the catalogue
# fmt: off

BASICS = ("DLA-1.1", "DLA-1.2", "DLA-1.3", "DLA-1.4", "DLA-1.6", "DLA-5.3", "DLA-6.1",
          "DLA-10.1", "DLA-10.2", "DLA-10.4", "DLA-11.1", "DLA-11.3", "DLA-11.5", "DLA-12.1",
          "DLA-12.7")
DLA_POLICY = ("DLA-2.1", "DLA-2.3", "DLA-3.1", "DLA-3.2", "DLA-3.3", "DLA-3.5", "DLA-3.6",
              "DLA-6.3")
FENWICK = ("DLA-2.5", "DLA-3.6", "DLA-4.1", "DLA-4.2", "DLA-4.4", "DLA-6.3")
STREAM = ("DLA-1.5", "DLA-7.1", "DLA-7.2", "DLA-7.4", "DLA-10.6", "DLA-12.4")
F32 = 1e-3  # margin floor of key-cosine cases: MARGIN_BOUND["float32"] of dla.conformance.tolerance

S = Dims
SMALL = Dims(B=1, T=6, H=2, K=4, V=3)
GLA: dict[str, Any] = {"capacity": 2, "tau": 0.5}
SC: dict[str, Any] = {"capacity": 3, "tau": 0.5}


def clause_key(clause: str) -> tuple[int, ...]:
    """Numeric order of clause ids: DLA-2.1 before DLA-10.1."""
    return tuple(int(x) for x in clause.removeprefix("DLA-").split("."))


#: The clause each valid case is about (a failure of the case is attributed to it).
TARGETS = {
    "gla_dla_basic": "DLA-5.1", "single_token": "DLA-2.3", "empty_sequence": "DLA-7.3",
    "capacity_one": "DLA-3.7", "state_per_token": "DLA-3.7", "no_boundary": "DLA-3.1",
    "boundary_every_token": "DLA-3.4", "dyadic_ties": "DLA-3.4", "zero_norm_keys": "DLA-2.2",
    "strong_decay": "DLA-5.1", "delta_base": "DLA-5.2", "delta_equal_lam": "DLA-5.5",
    "scale_configured": "DLA-5.3", "float32_inputs": "DLA-1.3", "plan_injected": "DLA-6.2",
    "long_accumulation": "DLA-5.1", "fenwick_gla": "DLA-4.3", "fenwick_delta": "DLA-4.1",
    "fenwick_continue": "DLA-7.2", "stream_prefix": "DLA-7.1", "stream_continue": "DLA-7.2",
    "stream_decode": "DLA-7.2", "stream_empty_cache": "DLA-7.3", "varlen": "DLA-8.1",
    "varlen_initial_cache": "DLA-8.1", "gradients_delta": "DLA-10.5",
}


def valid(name: str, description: str, config: dict[str, Any], dims: Dims, seed: int,
          clauses: tuple[str, ...], build: Callable[[Draws, CaseSpec], Built],
          check: Callable[[Outcome], None] | None = None, target: str | None = None,
          **kw: Any) -> CaseSpec:
    """A valid case; its ``target`` is the clause it is about (:data:`TARGETS` by default)."""
    every = tuple(sorted(set(BASICS + clauses), key=clause_key))
    return CaseSpec(name, description, config, dims, seed, every, build, check=check,
                    target=target or TARGETS.get(name) or clauses[-1], **kw)


def invalid(name: str, description: str, error: ErrorSpec,
            build: Callable[[Draws, CaseSpec], Built], config: dict[str, Any] | None = None,
            dims: Dims = SMALL, seed: int = 900, clauses: tuple[str, ...] = (),
            requires: tuple[str, ...] | None = None) -> CaseSpec:
    """An invalid case. ``requires``: the config fields its rule depends on (default: the
    fields ``config`` sets besides ``capacity`` and ``tau``); the others may be changed to
    what an implementation claims, so the rule reaches every implementation (DLA-12.8)."""
    every = {"DLA-9.13", "DLA-11.1", "DLA-11.7", "DLA-12.7", "DLA-12.8", error.clause, *clauses}
    if requires is None:
        requires = tuple(k for k in (config or {}) if k not in ("capacity", "tau"))
    return CaseSpec(name, description, config or dict(GLA), dims, seed,
                    tuple(sorted(every, key=clause_key)), build, error=error,
                    target=error.clause, requires=requires)


def _core_cases() -> list[CaseSpec]:
    return [
        valid("gla_dla_basic", "DLA policy, gla base, key-cosine scores with runs of similar keys",
              {"capacity": 4, "tau": 0.5}, S(2, 33, 2, 8, 4), 1,
              (*DLA_POLICY, "DLA-3.4", "DLA-5.1", "DLA-5.4", "DLA-10.3", "DLA-12.3"), plain(),
              check_masked, margin_floor=F32),
        valid("single_token", "T = 1: the first token opens the only state",
              {"capacity": 2, "tau": 0.5}, S(2, 1, 2, 4, 3), 2, ("DLA-2.3", "DLA-3.1", "DLA-5.1"),
              plain(), check_single),
        valid("empty_sequence", "T = 0: empty output and the empty final cache",
              {"capacity": 2, "tau": 0.5}, S(1, 0, 2, 4, 3), 3, ("DLA-7.1", "DLA-7.3"), plain(),
              check_empty, output_final_cache=True),
        valid("capacity_one", "C = 1: DLA reduces to gated linear attention",
              {"capacity": 1, "tau": 0.3}, S(1, 20, 2, 6, 4), 4,
              (*DLA_POLICY, "DLA-3.4", "DLA-3.7", "DLA-5.1", "DLA-5.5", "DLA-12.8"), plain(),
              check_base_model, margin_floor=F32),
        valid("state_per_token", "C >= T with tau < 0: one state per token, no merge",
              {"capacity": 16, "tau": -0.5}, S(1, 12, 2, 4, 3), 5,
              (*DLA_POLICY, "DLA-3.7", "DLA-5.1"), plain(keys="uniform"), check_state_per_token),
        valid("no_boundary", "tau = 2.5 >= max score 2: one state for the whole sequence",
              {"capacity": 3, "tau": 2.5}, S(1, 16, 2, 4, 3), 6, (*DLA_POLICY, "DLA-5.1"),
              plain(keys="uniform"), check_no_boundary),
        valid("boundary_every_token", "tau < 0 with C = 3: a boundary and a merge at every token",
              {"capacity": 3, "tau": -0.25}, S(1, 24, 2, 4, 3), 7,
              (*DLA_POLICY, "DLA-3.4", "DLA-5.1", "DLA-10.3"), plain(keys="uniform"),
              check_boundary_everywhere, margin_floor=F32),
        valid("dyadic_ties", "external scores on a dyadic grid: exact ties at tau and among merges",
              {"capacity": 3, "tau": 0.5, "score": "external"}, S(2, 24, 2, 4, 3), 8,
              ("DLA-2.4", "DLA-2.7", "DLA-3.1", "DLA-3.2", "DLA-3.3", "DLA-3.4", "DLA-3.5",
               "DLA-3.6", "DLA-5.1", "DLA-6.3", "DLA-10.3", "DLA-10.8", "DLA-12.3"), plain(),
              check_ties),
        valid("zero_norm_keys", "zero keys (first token, twice in a row, alone) score iota = 1",
              {"capacity": 3, "tau": 0.5}, S(1, 12, 2, 4, 3), 9, (*DLA_POLICY, "DLA-2.2"),
              with_zero_keys, check_zero_keys),
        valid("strong_decay", "log decay g in [-30, -5): states vanish without under/overflow",
              {"capacity": 3, "tau": 0.5}, S(1, 16, 2, 4, 3), 10, (*DLA_POLICY, "DLA-5.1"),
              plain(g_range=(-30.0, -5.0)), check_strong_decay),
        valid("delta_base", "gated delta rule base, L2-normalized keys, beta in [0, 1]",
              {"capacity": 3, "tau": 0.4, "base": "delta"}, S(2, 20, 2, 6, 4), 11,
              (*DLA_POLICY, "DLA-3.4", "DLA-5.2", "DLA-10.3", "DLA-12.3"), plain(),
              check_invariants, margin_floor=F32),
        valid("delta_equal_lam", "delta base with equal lam: the gated delta rule (conservation)",
              {"capacity": 3, "tau": 0.4, "base": "delta"}, S(1, 18, 2, 4, 3), 12,
              (*DLA_POLICY, "DLA-5.2", "DLA-5.5", "DLA-12.8"), with_equal_lam, check_base_model),
        valid("scale_configured", "an explicit readout scale instead of K ** -0.5",
              {"capacity": 3, "tau": 0.5, "scale": 0.3}, S(1, 10, 2, 4, 3), 15,
              (*DLA_POLICY, "DLA-5.1"), plain(), check_invariants),
        valid("float32_inputs", "float32 inputs: the reference promotes exactly, output float64",
              {"capacity": 3, "tau": 0.5}, S(1, 12, 2, 4, 3), 16, (*DLA_POLICY, "DLA-5.1"),
              float32_storage, check_float32),
        valid("plan_injected", "forward executes an injected plan (of tau = 0.05), not its own",
              {"capacity": 3, "tau": 0.5}, S(1, 16, 2, 4, 3), 17,
              (*DLA_POLICY, "DLA-6.2", "DLA-6.4", "DLA-12.2"), injected_plan, check_injected),
        valid("long_accumulation", "T = 8192, slow decay: accumulation error over a long sequence",
              {"capacity": 4, "tau": 0.5}, S(1, 8192, 1, 4, 4), 21,
              (*DLA_POLICY, "DLA-3.4", "DLA-5.1"), plain(g_range=(-0.002, 0.0)), check_long),
    ]


def _fenwick_cases() -> list[CaseSpec]:
    return [
        valid("fenwick_gla", "fenwick policy, gla base: Log-Linear Attention with lam as level "
              "scales", {"capacity": fenwick_capacity(37), "policy": "fenwick"}, S(1, 37, 2, 4, 3),
              13, (*FENWICK, "DLA-4.3", "DLA-5.1", "DLA-5.4", "DLA-7.1"), plain(), check_fenwick,
              output_final_cache=True),
        valid("fenwick_delta", "fenwick policy on the delta base",
              {"capacity": fenwick_capacity(20), "policy": "fenwick", "base": "delta"},
              S(1, 20, 2, 4, 3), 14, (*FENWICK, "DLA-5.2"), plain(), check_fenwick),
        valid("fenwick_continue", f"fenwick continued from a cache after {FENWICK_PIECES[0]} "
              "tokens, external scores", {"capacity": fenwick_capacity(sum(FENWICK_PIECES)),
                                          "policy": "fenwick", "score": "external"},
              S(1, FENWICK_PIECES[1], 2, 4, 3), 22, (*FENWICK, *STREAM, "DLA-2.4", "DLA-5.1"),
              fenwick_continue, check_fenwick_continue, output_final_cache=True),
    ]


def _stream_cases() -> list[CaseSpec]:
    parts = (("prefix", "fresh start, final cache returned"),
             ("continue", "continues the prefix's final cache (carried prev_key, positions)"),
             ("decode", "one token continuing the continuation's final cache"))
    return [
        *[valid(f"stream_{part}", f"streaming piece {i} of {STREAM_PIECES}: {what}",
                dict(SC), S(2, STREAM_PIECES[i], 2, 6, 4), 18,
                (*DLA_POLICY, "DLA-3.4", "DLA-5.1", *STREAM) + (("DLA-5.6",) if i == 0 else ()),
                stream_piece(i), check_stream(i), output_final_cache=True)
          for i, (part, what) in enumerate(parts)],
        valid("stream_empty_cache", "an explicit empty cache (position 0) equals no cache",
              dict(SC), S(2, 9, 2, 4, 3), 23, (*DLA_POLICY, "DLA-7.1", "DLA-7.3", "DLA-12.4"),
              with_empty_cache, check_empty_cache, output_final_cache=True),
        valid("varlen", f"packed sequences of lengths {VARLEN_LENGTHS} (empty ones, length 1)",
              dict(SC), S(1, sum(VARLEN_LENGTHS), 2, 4, 3), 19,
              (*DLA_POLICY, "DLA-1.5", "DLA-7.1", "DLA-8.1", "DLA-8.2", "DLA-12.5"), varlen,
              check_varlen, output_final_cache=True),
        valid("varlen_initial_cache", f"packed sequences {VARLEN_REST} continuing cache rows "
              f"after {VARLEN_PREFIX}", dict(SC), S(1, sum(VARLEN_REST), 2, 4, 3), 20,
              (*DLA_POLICY, *STREAM, "DLA-8.1", "DLA-8.2", "DLA-12.5"), varlen_from_cache,
              check_varlen, output_final_cache=True),
        valid("gradients_delta", "finite-difference gradients of sum(w * o), plan frozen",
              {"capacity": 3, "tau": 0.4, "base": "delta"}, S(1, 7, 1, 3, 2), 24,
              (*DLA_POLICY, "DLA-5.2", "DLA-6.2", "DLA-10.5", "DLA-10.7", "DLA-12.2", "DLA-12.6"),
              gradient_inputs, check_gradients, gradients=True),
    ]


def _regime_cases() -> list[CaseSpec]:
    """DLA-12.11: a golden case per regime whose inputs every float dtype represents."""
    ext = {"score": "external"}
    return [
        valid("threshold_float32_tenth", "external scores float32(0.1) against tau = 0.1: "
              "just above tau, so boundaries (exact comparison)",
              {"capacity": 16, "tau": 0.1, **ext}, S(1, 16, 2, 4, 3), 30,
              ("DLA-2.4", "DLA-3.1", "DLA-3.8", "DLA-12.11"), float32_tenths, check_float32_tenths,
              target="DLA-3.8"),
        valid("repeated_keys_tau_zero", "repeated, 2^j-scaled and negated keys at tau = 0: "
              "scores exactly 0, 1, 2, exact merge ties", {"capacity": 3, "tau": 0.0},
              S(1, 24, 2, 6, 3), 31, (*DLA_POLICY, "DLA-2.2", "DLA-3.4", "DLA-12.11", "DLA-2.6"),
              repeated_keys, check_repeated_keys, target="DLA-2.6"),
        valid("extreme_key_norms", "keys scaled by 2^-100 and 2^100: their squares leave "
              "float32's range", {"capacity": 3, "tau": 0.5}, S(1, 20, 2, 4, 3), 32,
              (*DLA_POLICY, "DLA-2.2", "DLA-12.11", "DLA-2.6"), extreme_key_norms,
              check_extreme_norms,
              margin_floor=F32, target="DLA-2.6"),
        valid("information_ties_float64", "float64 scores j / 10 whose merges tie only in the "
              "running-sum order of DLA-3.2", {"capacity": 3, "tau": 0.05, **ext},
              S(1, 30, 3, 4, 3), 33, ("DLA-2.4", "DLA-3.2", "DLA-3.4", "DLA-12.11", "DLA-3.9"),
              tenths_with_ties, check_tenths_with_ties, target="DLA-3.9"),
        valid("delta_non_unit_keys", "delta base with key norms in [0.5, 1.15]",
              {"capacity": 3, "tau": 0.5, "base": "delta", **ext}, S(1, 24, 2, 5, 3), 34,
              ("DLA-5.5", "DLA-12.11", "DLA-5.2"), non_unit_delta_keys, check_non_unit_keys,
              target="DLA-5.2"),
        valid("wide_heads", "K = 80 and V = 136: partial second and third tiles, K != V",
              {"capacity": 3, "tau": 0.5, **ext}, S(1, 20, 1, 80, 136), 35,
              ("DLA-5.1", "DLA-12.11", "DLA-5.3"), plain(), check_wide, target="DLA-5.3"),
        valid("long_strong_decay", "T = 600 with g in [-3, -1): the cumulative decay reaches "
              "about -1200", {"capacity": 4, "tau": 0.5, **ext}, S(1, 600, 1, 4, 4), 36,
              ("DLA-5.1", "DLA-12.11", "DLA-5.6"), plain(g_range=(-3.0, -1.0)), check_strong_long,
              target="DLA-5.6"),
    ]


def _invalid_cases() -> list[CaseSpec]:
    E = ErrorSpec
    delta = {"capacity": 2, "tau": 0.5, "base": "delta"}
    ext = {"capacity": 2, "tau": 0.5, "score": "external"}
    first_plus = lambda a: np.concatenate([a, a[..., :1]], axis=-1)  # noqa: E731
    return [
        invalid("nan_in_v", "a NaN in v", E("ValueError", "DLA-9.4", "v"),
                _set("v", _poke(np.nan))),
        invalid("inf_in_q", "an Inf in q", E("ValueError", "DLA-9.4", "q"),
                _set("q", _poke(np.inf))),
        invalid("nan_in_scores", "a NaN in external scores", E("ValueError", "DLA-9.4", "scores"),
                _set("scores", _poke(np.nan)), ext, clauses=("DLA-2.4",)),
        invalid("nan_in_g", "a NaN in g (NaN > 0 is false: a domain check alone misses it)",
                E("ValueError", "DLA-9.4", "g"), _set("g", _poke(np.nan))),
        invalid("minus_inf_in_g", "g = -inf: satisfies g <= 0, but not finite",
                E("ValueError", "DLA-9.4", "g"), _set("g", _poke(-np.inf))),
        invalid("nan_in_lam", "a NaN in lam", E("ValueError", "DLA-9.4", "lam"),
                _set("lam", _poke(np.nan))),
        invalid("nan_in_k", "a NaN in k", E("ValueError", "DLA-9.4", "k"),
                _set("k", _poke(np.nan))),
        invalid("inf_in_beta", "beta = inf on the delta base", E("ValueError", "DLA-9.4", "beta"),
                _set("beta", _poke(np.inf)), delta),
        invalid("nan_in_cache_states", "a NaN in the carried states",
                E("ValueError", "DLA-9.4", "initial_cache.states"),
                _with_cache(lambda c: replace(c, states=_poke(np.nan, (0, 1, 0, 0, 0))(c.states))),
                clauses=("DLA-7.4",)),
        invalid("inf_in_cache_info", "an Inf in the carried information",
                E("ValueError", "DLA-9.4", "initial_cache.info"),
                _with_cache(lambda c: replace(c, info=_poke(np.inf, (0, 1, 0))(c.info))),
                clauses=("DLA-7.4",)),
        invalid("nan_in_cache_prev_key", "a NaN in the carried previous key",
                E("ValueError", "DLA-9.4", "initial_cache.prev_key"),
                _with_cache(lambda c: replace(c, prev_key=_poke(np.nan, (0, 1, 0))(c.prev_key))),
                clauses=("DLA-7.4",)),
        invalid("positive_g", "g > 0 at one position", E("ValueError", "DLA-9.5", "g"),
                _set("g", _poke(0.125)), clauses=("DLA-1.4",)),
        invalid("beta_above_two", "beta = 2.5 > 2 on the delta base",
                E("ValueError", "DLA-9.5", "beta"), _set("beta", _poke(2.5)), delta,
                clauses=("DLA-1.4",)),
        invalid("negative_scores", "an external score < 0", E("ValueError", "DLA-9.6", "scores"),
                _set("scores", _poke(-0.25)), ext, clauses=("DLA-2.4",)),
        invalid("lam_wrong_last_dim", "lam with C + 1 entries per position",
                E("ValueError", "DLA-9.7", "lam"), _set("lam", first_plus)),
        invalid("k_wrong_head_dim", "k with K + 1 columns", E("ValueError", "DLA-9.1", "k"),
                _set("k", first_plus)),
        invalid("v_wrong_length", "v with T - 1 positions", E("ValueError", "DLA-9.1", "v"),
                _set("v", lambda a: a[:, :-1].copy())),
        invalid("k_dtype_differs", "k float32 while q and v are float64",
                E("TypeError", "DLA-9.3", "q, k, v"), _set("k", lambda a: a.astype(np.float32)),
                clauses=("DLA-1.3",)),
        invalid("integer_g", "g as int64", E("TypeError", "DLA-9.3", "g"),
                _set("g", lambda a: np.zeros(a.shape, np.int64)), clauses=("DLA-1.3",)),
        invalid("cu_seqlens_short", "cu_seqlens ending before T",
                E("ValueError", "DLA-9.8", "cu_seqlens"),
                _add("cu_seqlens", lambda x: np.array([0, 2, 5], np.int64)), clauses=("DLA-8.1",)),
        invalid("cu_seqlens_decreasing", "cu_seqlens going down",
                E("ValueError", "DLA-9.8", "cu_seqlens"),
                _add("cu_seqlens", lambda x: np.array([0, 4, 3, 6], np.int64)),
                clauses=("DLA-8.1",)),
        invalid("cu_seqlens_float", "cu_seqlens as float64",
                E("TypeError", "DLA-9.8", "cu_seqlens"),
                _add("cu_seqlens", lambda x: np.array([0.0, 3.0, 6.0])), clauses=("DLA-8.1",)),
        invalid("cu_seqlens_batch_two", "cu_seqlens with B = 2",
                E("ValueError", "DLA-9.8", "cu_seqlens"),
                _add("cu_seqlens", lambda x: np.array([0, 3, 6], np.int64)), dims=S(2, 6, 2, 4, 3),
                clauses=("DLA-8.1",)),
        invalid("cache_count_above_capacity", "a carried cache with count = C + 3",
                E("ValueError", "DLA-9.9", "initial_cache.count"),
                _with_cache(lambda c: replace(c, count=c.count + 3)), clauses=("DLA-7.4",)),
        invalid("cache_states_wrong_shape", "carried states with V + 1 columns",
                E("ValueError", "DLA-9.9", "initial_cache.states"),
                _with_cache(lambda c: replace(c, states=first_plus(c.states))),
                clauses=("DLA-7.4",)),
        invalid("plan_count_zero", "an injected plan with count = 0 at a readout",
                E("ValueError", "DLA-9.10", "plan.count"),
                _with_plan(lambda p: replace(p, count=np.where(
                    np.arange(6)[None, :, None] == 2, 0, p.count))), clauses=("DLA-6.4",)),
        invalid("plan_wrong_shape", "an injected plan whose starts have C + 1 slots",
                E("ValueError", "DLA-9.10", "plan.starts"),
                _with_plan(lambda p: replace(p, starts=first_plus(p.starts))),
                clauses=("DLA-6.4",)),
        invalid("fenwick_capacity_too_small", "fenwick with C = 2 for T = 6 (needs 4)",
                E("ValueError", "DLA-9.11", "capacity"), mutate(lambda x, s: Built(x)),
                {"capacity": 2, "policy": "fenwick"}, clauses=("DLA-4.2",),
                requires=("policy", "capacity")),
        invalid("fenwick_without_scores", "fenwick with score = external but no scores",
                E("ValueError", "DLA-9.12", "scores"), _drop("scores"),
                {"capacity": 4, "policy": "fenwick", "score": "external"}, clauses=("DLA-2.5",)),
        invalid("delta_without_beta", "delta base without beta",
                E("ValueError", "DLA-9.12", "beta"),
                _drop("beta"), delta, clauses=("DLA-5.2",)),
        invalid("beta_with_gla", "beta given on the gla base", E("ValueError", "DLA-9.12", "beta"),
                _add("beta", lambda x: np.full(x["g"].shape, 0.5)), clauses=("DLA-5.2",)),
        invalid("scores_with_key_cosine", "external scores given while score = key_cosine",
                E("ValueError", "DLA-9.12", "scores"),
                _add("scores", lambda x: np.zeros(x["g"].shape))),
        invalid("capacity_zero", "Config(capacity=0): dla.Config must refuse it",
                E("ValueError", "DLA-9.2", "capacity", stage="config"),
                mutate(lambda x, s: Built(x)), {"capacity": 0, "tau": 0.5}, clauses=("DLA-1.2",)),
        invalid("unknown_score", "Config(score='cosine'): dla.Config must refuse it",
                E("ValueError", "DLA-9.2", "score", stage="config"), mutate(lambda x, s: Built(x)),
                {"capacity": 2, "tau": 0.5, "score": "cosine"}, clauses=("DLA-1.2",)),
    ]


# fmt: on


def catalogue() -> tuple[CaseSpec, ...]:
    """Every golden case, valid ones first, in a fixed order."""
    cases = (*_core_cases(), *_fenwick_cases(), *_stream_cases(), *_regime_cases(),
             *_invalid_cases())
    names = [c.name for c in cases]
    assert len(set(names)) == len(names), "duplicate case names"
    return cases
