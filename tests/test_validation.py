"""DLA-9: every bad input raises the right exception, naming the argument and the clause.

Each case starts from valid inputs (checked to pass), breaks exactly one rule,
and asserts the exception type, that the message starts with the argument's
name, and that it cites the clause.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from helpers import config, random_inputs

import dla
from dla.reference import empty_cache, forward, make_plan

B, T, H, K, V, C = 1, 6, 2, 3, 2, 4


def valid(base: str = "gla", score: str = "key_cosine", policy: str = "dla") -> dict[str, Any]:
    """Valid keyword arguments of ``forward`` (arrays and config)."""
    x: dict[str, Any] = random_inputs(0, B, T, H, K, V, C, base=base, score=score)
    x["config"] = config(C, score=score, base=base, policy=policy)
    return x


def with_cache(x: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """``x`` with the final cache of a 4-token prefix as ``initial_cache``, fields replaced.

    With ``tau < 0`` the prefix fills all ``C`` slots (``count == C``, position 4).
    """
    prefix = random_inputs(1, B, 4, H, K, V, C)
    _, cache = forward(**prefix, config=config(C, tau=-1.0), output_final_cache=True)
    assert (cache.count == C).all()
    x["initial_cache"] = dataclasses.replace(cache, **fields)
    return x


def with_plan(x: dict[str, Any], **fields: Any) -> dict[str, Any]:
    plan = make_plan(x["config"], k=x["k"], scores=x.get("scores"))
    x["plan"] = dataclasses.replace(plan, **fields)
    return x


def setitem(name: str, index: Any, value: float) -> Callable[[dict], dict]:
    def f(x: dict) -> dict:
        x[name] = x[name].copy()
        x[name][index] = value
        return x
    return f


def replace(name: str, value: Callable[[Any], Any]) -> Callable[[dict], dict]:
    def f(x: dict) -> dict:
        x[name] = value(x[name])
        return x
    return f


def cast(name: str, dtype: Any) -> Callable[[dict], dict]:
    return replace(name, lambda a: a.astype(dtype))


def cache_field(field: str, value: Callable[[Any], Any]) -> Callable[[dict], dict]:
    def f(x: dict) -> dict:
        x = with_cache(x)
        return with_cache(x, **{field: value(getattr(x["initial_cache"], field))})
    return f


def plan_field(field: str, value: Callable[[Any], Any]) -> Callable[[dict], dict]:
    def f(x: dict) -> dict:
        x = with_plan(x)
        return with_plan(x, **{field: value(getattr(x["plan"], field))})
    return f


def _set(a: np.ndarray, index: Any, value: Any) -> np.ndarray:
    a = a.copy()
    a[index] = value
    return a


def forget_newest_slot(x: dict) -> dict:
    """A cache whose slot ``C - 1`` is marked unused but still holds a state and information."""
    c = with_cache(x)["initial_cache"]
    starts = _set(c.starts, (..., C - 1), -1)
    labels = np.where(c.labels > 0, c.labels - 1, -1)  # recency ranks of the C - 1 older states
    return with_cache(x, count=c.count - 1, starts=starts, labels=labels)


def split_a_state(x: dict) -> dict:
    """A plan that is valid at every readout alone but splits a state from t = 2 to t = 3.

    Scores of 0 give one state ``[0]`` at every readout; the injected plan has
    ``[0, 2]`` at ``t = 3``, yet 2 is neither a start at ``t = 2`` nor ``t`` itself.
    """
    x["scores"] = np.zeros_like(x["scores"])
    x = with_plan(x)
    p = x["plan"]
    assert (p.count == 1).all()
    starts, labels, count = p.starts.copy(), p.labels.copy(), p.count.copy()
    starts[0, 3, 0, :2], labels[0, 3, 0, :2], count[0, 3, 0] = [0, 2], [1, 0], 2
    return with_plan(x, starts=starts, labels=labels, count=count)


def cu(values: list, dtype: Any = np.int64) -> Callable[[dict], dict]:
    def f(x: dict) -> dict:
        x["cu_seqlens"] = np.array(values, dtype=dtype)
        return x
    return f


def seq(*fs: Callable[[dict], dict]) -> Callable[[dict], dict]:
    def f(x: dict) -> dict:
        for g in fs:
            x = g(x)
        return x
    return f


# (id, setup kwargs for valid(), mutation, exception, argument, clause)
CASES: list[tuple[str, dict, Callable[[dict], dict], type, str, str]] = [
    # DLA-9.1 shapes
    ("q-3d", {}, replace("q", lambda a: a[..., 0]), ValueError, "q", "DLA-9.1"),
    ("v-3d", {}, replace("v", lambda a: a[..., 0]), ValueError, "v", "DLA-9.1"),
    ("q-no-heads", {}, replace("q", lambda a: a[:, :, :0]), ValueError, "q", "DLA-9.1"),
    ("v-no-width", {}, replace("v", lambda a: a[..., :0]), ValueError, "v", "DLA-9.1"),
    ("q-no-K", {}, seq(replace("q", lambda a: a[..., :0]), replace("k", lambda a: a[..., :0])),
     ValueError, "q", "DLA-9.1"),
    ("k-wrong-K", {}, replace("k", lambda a: a[..., :2]), ValueError, "k", "DLA-9.1"),
    ("k-wrong-T", {}, replace("k", lambda a: a[:, :-1]), ValueError, "k", "DLA-9.1"),
    ("v-wrong-T", {}, replace("v", lambda a: a[:, :-1]), ValueError, "v", "DLA-9.1"),
    ("v-wrong-H", {}, replace("v", lambda a: a[:, :, :1]), ValueError, "v", "DLA-9.1"),
    ("g-4d", {}, replace("g", lambda a: a[..., None]), ValueError, "g", "DLA-9.1"),
    ("lam-wrong-T", {}, replace("lam", lambda a: a[:, :-1]), ValueError, "lam", "DLA-9.1"),
    ("beta-wrong-shape", {"base": "delta"}, replace("beta", lambda a: a[:, :-1]), ValueError,
     "beta", "DLA-9.1"),
    ("scores-wrong-shape", {"score": "external"}, replace("scores", lambda a: a[..., None]),
     ValueError, "scores", "DLA-9.1"),
    # DLA-9.3 dtypes
    *[(f"{n}-int", {"base": "delta"}, cast(n, np.int64), TypeError, n, "DLA-9.3")
      for n in ("q", "k", "v", "g", "lam", "beta")],
    ("scores-int", {"score": "external"}, cast("scores", np.int64), TypeError, "scores", "DLA-9.3"),
    ("q-bool", {}, cast("q", bool), TypeError, "q", "DLA-9.3"),
    ("q-list", {}, replace("q", lambda a: a.tolist()), TypeError, "q", "DLA-9.3"),
    ("lam-list", {}, replace("lam", lambda a: a.tolist()), TypeError, "lam", "DLA-9.3"),
    ("qkv-mismatch", {}, cast("q", np.float32), TypeError, "q, k, v", "DLA-9.3"),
    ("v-mismatch", {}, cast("v", np.float16), TypeError, "q, k, v", "DLA-9.3"),
    ("g-float16-with-float64-q", {}, cast("g", np.float16), TypeError, "g", "DLA-9.3"),
    ("lam-float16-with-float64-q", {}, cast("lam", np.float16), TypeError, "lam", "DLA-9.3"),
    # DLA-9.4 NaN / Inf, in each input
    *[(f"{n}-{v}", {"base": "delta"}, setitem(n, (0, 2), v), ValueError, n, "DLA-9.4")
      for n in ("q", "k", "v", "g", "lam", "beta") for v in (np.nan, np.inf, -np.inf)],
    *[(f"scores-{v}", {"score": "external"}, setitem("scores", (0, 2), v), ValueError, "scores",
       "DLA-9.4") for v in (np.nan, np.inf)],
    # DLA-9.5 domains
    ("g-positive", {}, setitem("g", (0, 3, 1), 1e-6), ValueError, "g", "DLA-9.5"),
    ("beta-negative", {"base": "delta"}, setitem("beta", (0, 1, 0), -1e-9), ValueError, "beta",
     "DLA-9.5"),
    ("beta-above-2", {"base": "delta"}, setitem("beta", (0, 1, 0), 2.0 + 1e-9), ValueError, "beta",
     "DLA-9.5"),
    # DLA-9.6 negative external scores
    ("scores-negative", {"score": "external"}, setitem("scores", (0, 5, 1), -0.25), ValueError,
     "scores", "DLA-9.6"),
    # DLA-9.7 lam's last dimension
    ("lam-C-plus-1", {}, replace("lam", lambda a: np.concatenate([a, a[..., :1]], -1)), ValueError,
     "lam", "DLA-9.7"),
    ("lam-C-minus-1", {}, replace("lam", lambda a: a[..., :-1]), ValueError, "lam", "DLA-9.7"),
    # DLA-9.12 missing or unused inputs
    ("beta-missing-delta", {"base": "delta"}, replace("beta", lambda a: None), ValueError, "beta",
     "DLA-9.12"),
    ("beta-given-gla", {}, lambda x: {**x, "beta": np.ones((B, T, H))}, ValueError, "beta",
     "DLA-9.12"),
    ("scores-missing-external", {"score": "external"}, replace("scores", lambda a: None),
     ValueError, "scores", "DLA-9.12"),
    ("fenwick-scores-missing", {"score": "external", "policy": "fenwick"},
     replace("scores", lambda a: None), ValueError, "scores", "DLA-9.12"),
    ("scores-given-key-cosine", {}, lambda x: {**x, "scores": np.ones((B, T, H))}, ValueError,
     "scores", "DLA-9.12"),
    # DLA-9.2 config
    ("config-not-a-config", {}, replace("config", lambda c: c.to_dict()), TypeError, "config",
     "DLA-9.2"),
    # DLA-9.8 cu_seqlens
    ("cu-float", {}, cu([0, 2, 6], np.float64), TypeError, "cu_seqlens", "DLA-9.8"),
    ("cu-list", {}, lambda x: {**x, "cu_seqlens": [0, 2, 6]}, TypeError, "cu_seqlens", "DLA-9.8"),
    ("cu-not-from-0", {}, cu([1, 2, 6]), ValueError, "cu_seqlens", "DLA-9.8"),
    ("cu-not-to-T", {}, cu([0, 2, 5]), ValueError, "cu_seqlens", "DLA-9.8"),
    ("cu-past-T", {}, cu([0, 2, 7]), ValueError, "cu_seqlens", "DLA-9.8"),
    ("cu-decreasing", {}, cu([0, 4, 3, 6]), ValueError, "cu_seqlens", "DLA-9.8"),
    ("cu-2d", {}, cu([[0, 6]]), ValueError, "cu_seqlens", "DLA-9.8"),
    ("cu-one-entry", {}, cu([0]), ValueError, "cu_seqlens", "DLA-9.8"),
    ("cu-batch-2", {}, seq(*[replace(n, lambda a: np.concatenate([a, a])) for n in
                             ("q", "k", "v", "g", "lam")], cu([0, 6])), ValueError, "cu_seqlens",
     "DLA-9.8"),
    # DLA-9.9 cache
    ("cache-not-a-cache", {}, lambda x: {**x, "initial_cache": {"states": 0}}, TypeError,
     "initial_cache", "DLA-9.9"),
    ("cache-states-wrong-C", {}, cache_field("states", lambda a: a[:, :, :-1]), ValueError,
     "initial_cache.states", "DLA-9.9"),
    ("cache-states-wrong-K", {}, cache_field("states", lambda a: a[..., :-1, :]), ValueError,
     "initial_cache.states", "DLA-9.9"),
    ("cache-states-wrong-V", {}, cache_field("states", lambda a: a[..., :-1]), ValueError,
     "initial_cache.states", "DLA-9.9"),
    ("cache-two-rows-for-one", {}, cache_field("states", lambda a: np.concatenate([a, a])),
     ValueError, "initial_cache.states", "DLA-9.9"),
    ("cache-states-int", {}, cache_field("states", lambda a: a.astype(np.int64)), TypeError,
     "initial_cache.states", "DLA-9.9"),
    ("cache-states-nan", {}, cache_field("states", lambda a: _set(a, (0, 0, 0, 0, 0), np.nan)),
     ValueError, "initial_cache.states", "DLA-9.4"),
    ("cache-info-wrong-shape", {}, cache_field("info", lambda a: a[..., :-1]), ValueError,
     "initial_cache.info", "DLA-9.9"),
    ("cache-info-negative", {}, cache_field("info", lambda a: _set(a, (0, 0, 0), -1.0)), ValueError,
     "initial_cache.info", "DLA-9.9"),
    ("cache-prev-key-wrong-K", {}, cache_field("prev_key", lambda a: a[..., :-1]), ValueError,
     "initial_cache.prev_key", "DLA-9.9"),
    ("cache-starts-float", {}, cache_field("starts", lambda a: a.astype(np.float64)), TypeError,
     "initial_cache.starts", "DLA-9.9"),
    ("cache-count-float", {}, cache_field("count", lambda a: a.astype(np.float64)), TypeError,
     "initial_cache.count", "DLA-9.9"),
    ("cache-count-above-C", {}, cache_field("count", lambda a: a + C), ValueError,
     "initial_cache.count", "DLA-9.9"),
    ("cache-position-0-with-states", {}, cache_field("position", lambda a: a * 0), ValueError,
     "initial_cache.position", "DLA-9.9"),
    ("cache-position-wrong-shape", {}, cache_field("position", lambda a: a[:, None]), ValueError,
     "initial_cache.position", "DLA-9.9"),
    ("cache-starts-unordered", {}, cache_field("starts", lambda a: _set(a, (0, 0, 1), 0)),
     ValueError, "initial_cache.starts", "DLA-9.9"),
    ("cache-starts-beyond-position", {}, cache_field("starts", lambda a: _set(a, (0, 0, C - 1), 9)),
     ValueError, "initial_cache.starts", "DLA-9.9"),
    ("cache-unused-slot-states", {}, forget_newest_slot, ValueError, "initial_cache.states",
     "DLA-9.9"),
    ("cache-prev-key-at-position-0", {}, lambda x: {**x, "initial_cache": dataclasses.replace(
        empty_cache(B, H, C, K, V), prev_key=np.ones((B, H, K)))}, ValueError,
     "initial_cache.prev_key", "DLA-9.9"),
    ("cache-used-slot-beyond-count", {}, cache_field("count", lambda a: a - 1), ValueError,
     "initial_cache.starts", "DLA-9.9"),
    # DLA-9.10 injected plan
    ("plan-not-a-plan", {}, lambda x: {**x, "plan": "plan"}, TypeError, "plan", "DLA-9.10"),
    ("plan-count-wrong-T", {}, plan_field("count", lambda a: a[:, :-1]), ValueError, "plan.count",
     "DLA-9.10"),
    ("plan-starts-wrong-C", {}, plan_field("starts", lambda a: a[..., :-1]), ValueError,
     "plan.starts", "DLA-9.10"),
    ("plan-count-zero", {}, plan_field("count", lambda a: a * 0), ValueError, "plan.count",
     "DLA-9.10"),
    ("plan-count-above-C", {}, plan_field("count", lambda a: a + C), ValueError, "plan.count",
     "DLA-9.10"),
    ("plan-starts-float", {}, plan_field("starts", lambda a: a.astype(np.float64)), TypeError,
     "plan.starts", "DLA-9.10"),
    ("plan-boundary-int", {}, plan_field("boundary", lambda a: a.astype(np.int64)), TypeError,
     "plan.boundary", "DLA-9.10"),
    ("plan-label-out-of-range", {}, plan_field("labels", lambda a: np.where(a == 0, C, a)),
     ValueError, "plan.labels", "DLA-9.10"),
    ("plan-starts-not-from-0", {}, plan_field("starts", lambda a: np.where(a >= 0, a + 1, a)),
     ValueError, "plan.starts", "DLA-9.10"),
    ("plan-splits-a-state", {"score": "external"}, split_a_state, ValueError, "plan.starts",
     "DLA-9.10"),
    # DLA-9.11 fenwick capacity
    ("fenwick-capacity", {"policy": "fenwick"}, lambda x: {
        **x, "config": config(2, policy="fenwick"), "lam": x["lam"][..., :2]}, ValueError,
     "capacity", "DLA-9.11"),
]


@pytest.mark.parametrize("setup", [{}, {"base": "delta"}, {"score": "external"},
                                   {"policy": "fenwick"}])
def test_the_valid_starting_points_are_valid(setup):
    x = valid(**setup)
    o, _ = forward(**x)
    assert o.shape == (B, T, H, V)
    forward(**with_plan(valid(**setup)))  # a valid plan is accepted
    if setup.get("policy") != "fenwick":  # and a valid cache (fenwick: 10 positions need C = 5)
        _, cache = forward(**with_cache(valid(**setup)), output_final_cache=True)
        assert (cache.position == 4 + T).all()


def assert_names_rule(err: BaseException, arg: str, clause: str) -> None:
    msg = str(err)
    assert re.match(rf"{re.escape(arg)}\b", msg), f"message does not start with {arg!r}: {msg}"
    assert clause in msg, f"message does not cite {clause}: {msg}"


@pytest.mark.parametrize(("setup", "mutate", "exc", "arg", "clause"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_forward_input_raises(setup, mutate, exc, arg, clause):
    """DLA-9, DLA-9.13: the exact exception type, the argument's name and the clause id.

    DLA-9.13 error form: ``type(err) is exc`` (TypeError for kind/dtype,
    ValueError for shape/value, nothing else), the message starts with the
    argument's name and cites the clause. The ``cache-*`` cases break the rules
    of a well-formed cache (DLA-7.4), the ``plan-*`` cases those of a
    well-formed plan (DLA-6.4).
    """
    x = mutate(valid(**setup))
    with pytest.raises(exc) as info:
        forward(**x)
    assert type(info.value) is exc
    assert_names_rule(info.value, arg, clause)


PLAN_IDS = ("k-int", "k-nan", "k-inf", "scores-int", "scores-nan", "scores-inf", "scores-negative",
            "scores-wrong-shape", "scores-missing-external", "scores-given-key-cosine",
            "config-not-a-config", "fenwick-capacity")
PLAN_CASES = [c for c in CASES if c[0] in PLAN_IDS
              or (c[0].startswith(("cu-", "cache-")) and c[0] != "cache-states-wrong-V")]


@pytest.mark.parametrize(("setup", "mutate", "exc", "arg", "clause"),
                         [c[1:] for c in PLAN_CASES], ids=[c[0] for c in PLAN_CASES])
def test_bad_make_plan_input_raises(setup, mutate, exc, arg, clause):
    """DLA-9 through ``make_plan``: the same rules on the arguments it shares with ``forward``.

    DLA-9.13: the same error form (exact type, argument name first, clause cited).
    """
    x = mutate(valid(**setup))
    with pytest.raises(exc) as info:
        make_plan(x["config"], k=x["k"], scores=x.get("scores"),
                  initial_cache=x.get("initial_cache"), cu_seqlens=x.get("cu_seqlens"))
    assert type(info.value) is exc
    assert_names_rule(info.value, arg, clause)


def test_make_plan_needs_its_score_source():
    """DLA-9.12: ``make_plan`` without ``k`` (key_cosine) or ``scores`` (external)."""
    with pytest.raises(ValueError) as info:
        make_plan(config(C))
    assert_names_rule(info.value, "k", "DLA-9.12")
    with pytest.raises(ValueError) as info:
        make_plan(config(C, score="external"), k=np.ones((B, T, H, K)))
    assert_names_rule(info.value, "scores", "DLA-9.12")


def test_fenwick_capacity_counts_carried_tokens():
    """DLA-4.2, DLA-9.11: positions continue from the cache, so the needed capacity grows."""
    cfg = config(3, policy="fenwick")  # enough for positions 0..3
    x = random_inputs(0, 1, 4, 1, 2, 2, 3)
    _, cache = forward(**x, config=cfg, output_final_cache=True)
    with pytest.raises(ValueError) as info:
        forward(**random_inputs(1, 1, 1, 1, 2, 2, 3), config=cfg, initial_cache=cache)
    assert_names_rule(info.value, "capacity", "DLA-9.11")


def test_edge_values_are_accepted():
    """DLA-1.4: ``g = 0``, ``beta`` in {0, 2}, external score 0 and ``T = 0`` are valid."""
    x = valid(base="delta")
    x["g"] = np.zeros_like(x["g"])
    x["beta"] = np.where(np.arange(T)[None, :, None] % 2 == 0, 0.0, 2.0) * np.ones((B, T, H))
    forward(**x)
    y = valid(score="external")
    y["scores"] = np.zeros_like(y["scores"])
    assert (make_plan(y["config"], scores=y["scores"]).count == 1).all()
    forward(**y)
    o, _ = forward(**random_inputs(0, 2, 0, 1, 2, 2, C), config=config(C))
    assert o.shape == (2, 0, 1, 2)


def test_float32_and_float16_inputs_are_accepted_and_promoted_exactly():
    """DLA-1.3: lower precision inputs are computed in float64; output is float64."""
    x = valid()
    for dtype in (np.float32, np.float16):
        y = {n: (a.astype(dtype) if isinstance(a, np.ndarray) else a) for n, a in x.items()}
        o, _ = forward(**y)
        assert o.dtype == np.float64
        z = {n: (a.astype(dtype).astype(np.float64) if isinstance(a, np.ndarray) else a)
             for n, a in x.items()}
        np.testing.assert_array_equal(o, forward(**z)[0])


# ----------------------------------------------------------------- DLA-9.2 Config
CONFIG_CASES = [
    ({"capacity": 0}, ValueError, "capacity"),
    ({"capacity": -1}, ValueError, "capacity"),
    ({"tau": float("nan")}, ValueError, "tau"),
    ({"tau": float("inf")}, ValueError, "tau"),
    ({"score": "cosine"}, ValueError, "score"),
    ({"policy": "lru"}, ValueError, "policy"),
    ({"base": "mamba"}, ValueError, "base"),
    ({"scale": 0.0}, ValueError, "scale"),
    ({"scale": -1.0}, ValueError, "scale"),
    ({"scale": float("nan")}, ValueError, "scale"),
]
CONFIG_TYPE_CASES = [
    ({"capacity": 2.0}, TypeError, "capacity"),
    ({"capacity": True}, TypeError, "capacity"),
    ({"capacity": "3"}, TypeError, "capacity"),
    ({"tau": "0.5"}, TypeError, "tau"),
    ({"scale": True}, TypeError, "scale"),
]


@pytest.mark.parametrize(("fields", "exc", "arg"), CONFIG_CASES + CONFIG_TYPE_CASES,
                         ids=[f"{c[2]}={next(iter(c[0].values()))!r}"
                              for c in CONFIG_CASES + CONFIG_TYPE_CASES])
def test_invalid_config_field_raises_naming_it(fields, exc, arg):
    """DLA-1.2, DLA-9.2: each invalid field raises at construction, naming the field."""
    kw = {"capacity": 2, **fields}
    with pytest.raises(exc) as info:
        dla.Config(**kw)
    assert type(info.value) is exc
    assert re.match(rf"{arg}\b", str(info.value)), str(info.value)


@pytest.mark.parametrize(("fields", "exc", "arg"), CONFIG_CASES + CONFIG_TYPE_CASES,
                         ids=[f"{c[2]}={next(iter(c[0].values()))!r}"
                              for c in CONFIG_CASES + CONFIG_TYPE_CASES])
def test_invalid_config_cites_the_clause(fields, exc, arg):
    """DLA-9.2: the rule is cited (DLA-1.2 states the valid values)."""
    with pytest.raises(exc, match=r"DLA-(1|9)\.2"):
        dla.Config(**{"capacity": 2, **fields})


def test_empty_cache_and_cache_of_other_sequences_are_checked_against_cu_seqlens():
    """DLA-8.1, DLA-9.9: under varlen the cache has one row per packed sequence."""
    x = valid()
    x["cu_seqlens"] = np.array([0, 2, 6])
    forward(**x, initial_cache=empty_cache(2, H, C, K, V))
    with pytest.raises(ValueError) as info:
        forward(**x, initial_cache=empty_cache(1, H, C, K, V))
    assert_names_rule(info.value, "initial_cache.states", "DLA-9.9")


def test_lam_width_error_names_lam_and_capacity():
    """DLA-9.7: the message names ``lam`` and ``capacity``."""
    x = valid()
    x["lam"] = x["lam"][..., :-1]
    with pytest.raises(ValueError, match=r"^lam: .*capacity.*DLA-9\.7"):
        forward(**x)


def test_fenwick_error_names_the_needed_capacity_and_position():
    """DLA-9.11: ``capacity``, the needed capacity and the position are in the message."""
    x = random_inputs(0, 1, 5, 1, 2, 2, 2)  # position 2 is the first to need 3 > 2 levels
    with pytest.raises(ValueError, match=r"^capacity: .*\b3\b.*position 2.*DLA-9\.11"):
        forward(**x, config=config(2, policy="fenwick"))


@pytest.mark.parametrize("name", ["q", "k", "v", "g", "lam", "cu_seqlens"])
def test_torch_tensors_are_not_the_reference_kind(name):
    """DLA-9.3, DLA-11.1: the reference takes NumPy arrays; a tensor is a TypeError."""
    torch = pytest.importorskip("torch")
    x = valid()
    x["cu_seqlens"] = np.array([0, T])
    x[name] = torch.from_numpy(x[name])
    with pytest.raises(TypeError) as info:
        forward(**x)
    assert_names_rule(info.value, name, "DLA-9.3")
    if name in ("k", "cu_seqlens"):
        with pytest.raises(TypeError) as info:
            make_plan(x["config"], k=x["k"], cu_seqlens=x["cu_seqlens"])
        assert_names_rule(info.value, name, "DLA-9.3")


@pytest.mark.parametrize("case", ["delta", "initial_cache", "output_final_cache"])
def test_masked_form_refuses_what_it_does_not_cover(case):
    """DLA-11.5: ``masked=True`` only for ``gla``, no cache, no final cache: else ValueError."""
    x = valid(base="delta" if case == "delta" else "gla")
    kw = {"initial_cache": empty_cache(B, H, C, K, V)} if case == "initial_cache" else {}
    with pytest.raises(ValueError, match=r"^masked: .*DLA-11\.5"):
        forward(**x, masked=True, output_final_cache=case == "output_final_cache", **kw)


# ----------------------------------------------------------------- DLA-6.4 well-formed plan
def every_token_opens(x: dict) -> dict:
    """Scores above ``tau`` everywhere: counts 1, 2, 3, 4, 4, 4 and starts ``0 .. t`` early on."""
    x["scores"] = np.ones_like(x["scores"])
    return x


def plan_entry(field: str, t: int, slot: int, value: int) -> Callable[[dict], dict]:
    """Set ``plan.<field>[0, t, 0, slot]`` of the reference plan of ``x`` to ``value``."""
    def f(x: dict) -> dict:
        x = with_plan(every_token_opens(x))
        return with_plan(x, **{field: _set(getattr(x["plan"], field), (0, t, 0, slot), value)})
    return f


def swap_starts(x: dict) -> dict:
    x = with_plan(every_token_opens(x))
    starts = _set(x["plan"].starts, (0, 3, 0, slice(1, 3)), [2, 1])
    return with_plan(x, starts=starts)


#: (id, mutation, argument named): each breaks one rule of DLA-6.4 not covered by CASES.
PLAN_RULES = [
    ("starts-not-increasing", swap_starts, "plan.starts"),
    ("start-after-p_t", plan_entry("starts", 1, 1, 2), "plan.starts"),
    ("unused-start-not-minus-1", plan_entry("starts", 0, 1, 5), "plan.starts"),
    ("unused-label-not-minus-1", plan_entry("labels", 0, 1, 0), "plan.starts"),
    ("used-label-negative", plan_entry("labels", 3, 0, -1), "plan.labels"),
]


@pytest.mark.parametrize(("mutate", "arg"), [c[1:] for c in PLAN_RULES],
                         ids=[c[0] for c in PLAN_RULES])
def test_a_plan_breaking_a_well_formedness_rule_is_refused(mutate, arg):
    """DLA-6.4 (raised as DLA-9.10): strictly increasing starts ``<= p_t``, ``-1`` padding,
    used labels in ``[0, C - 1]``; the unmutated plan of the same inputs is accepted."""
    x = every_token_opens(valid(score="external"))
    forward(**with_plan(x))
    assert make_plan(x["config"], scores=x["scores"]).count[0, :, 0].tolist() == [1, 2, 3, 4, 4, 4]
    with pytest.raises(ValueError) as info:
        forward(**mutate(valid(score="external")))
    assert_names_rule(info.value, arg, "DLA-9.10")


def test_plan_coarsening_at_t0_is_checked_against_the_carried_cache():
    """DLA-6.4: at ``t = 0`` a plan coarsens the carried partition, or the empty one.

    The plan of a continued call (starts ``0 .. 4`` after 4 carried tokens) is
    well-formed with its cache; injected into a fresh call it opens states at
    positions that do not exist yet, and is refused.
    """
    x = with_cache(valid(score="external"))
    plan = make_plan(x["config"], scores=x["scores"], initial_cache=x["initial_cache"])
    assert (plan.count[0, 0] > 1).all()
    forward(**x, plan=plan)  # well-formed with its cache
    with pytest.raises(ValueError) as info:
        forward(**valid(score="external"), plan=plan)
    assert_names_rule(info.value, "plan.starts", "DLA-9.10")


# ----------------------------------------------------------------- DLA-7.4 well-formed cache
#: (id, mutation, argument named): each breaks one rule of DLA-7.4 not covered by CASES.
CACHE_RULES = [
    ("count-negative", cache_field("count", lambda a: a * 0 - 1), "initial_cache.count"),
    ("position-negative", cache_field("position", lambda a: a * 0 - 1), "initial_cache.position"),
    ("oldest-start-not-0", cache_field("starts", lambda a: a + 1), "initial_cache.starts"),
    ("label-out-of-range", cache_field("labels", lambda a: _set(a, (0, 1, 2), C)),
     "initial_cache.labels"),
    ("used-label-negative", cache_field("labels", lambda a: _set(a, (0, 0, 0), -1)),
     "initial_cache.labels"),
    ("unused-slot-info", lambda x: unused_slot_keeps_only_info(x), "initial_cache.states"),
]


def unused_slot_keeps_only_info(x: dict) -> dict:
    """``forget_newest_slot`` with the slot's matrix zeroed: only its information is left."""
    c = forget_newest_slot(x)["initial_cache"]
    assert c.info[..., C - 1].all()
    x["initial_cache"] = dataclasses.replace(c, states=_set(c.states, (..., C - 1, slice(None),
                                                                       slice(None)), 0.0))
    return x


@pytest.mark.parametrize(("mutate", "arg"), [c[1:] for c in CACHE_RULES],
                         ids=[c[0] for c in CACHE_RULES])
def test_a_cache_breaking_a_well_formedness_rule_is_refused(mutate, arg):
    """DLA-7.4 (raised as DLA-9.9): ``count >= 0``, ``position >= 0``, starts from 0, used labels
    in ``[0, C - 1]``, unused slots padded with zeros; ``forward`` and ``make_plan`` refuse it."""
    x = mutate(valid())
    with pytest.raises(ValueError) as info:
        forward(**x)
    assert_names_rule(info.value, arg, "DLA-9.9")
    with pytest.raises(ValueError) as info:
        make_plan(x["config"], k=x["k"], initial_cache=x["initial_cache"])
    assert_names_rule(info.value, arg, "DLA-9.9")


@pytest.mark.parametrize("setup", [{}, {"base": "delta"}, {"score": "external"},
                                   {"policy": "fenwick"}])
def test_returned_caches_are_well_formed(setup):
    """DLA-7.4: every final cache the reference returns passes the shared cache check,
    after 0, some and all tokens, and continues without error."""
    from dla.reference.validation import check_cache

    x = valid(**setup)
    cfg = x.pop("config")
    for cut in (0, 1, T):
        _, cache = forward(**{n: a[:, :cut] for n, a in x.items()}, config=cfg,
                           output_final_cache=True)
        check_cache(cache, B, H, C, K, V)
        assert (cache.position == cut).all()
