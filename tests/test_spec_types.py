"""DLA-11.3 shared types: ``dla.Config``, ``dla.Plan`` and ``dla.Cache`` are frozen dataclasses
with the fields the spec gives them, shared by every implementation, and the import namespace
is ``dla``.
"""

from __future__ import annotations

import dataclasses
import importlib

import numpy as np
import pytest
from helpers import config, random_inputs

import dla
from dla.reference import forward, make_plan

SHARED = {
    dla.Config: ("capacity", "tau", "score", "policy", "base", "scale"),
    dla.Plan: ("boundary", "count", "starts", "labels"),
    dla.Cache: ("states", "info", "starts", "labels", "count", "prev_key", "position"),
}


@pytest.mark.parametrize("cls", list(SHARED), ids=lambda c: c.__name__)
def test_shared_types_are_frozen_dataclasses_with_the_spec_fields(cls):
    """DLA-11.3: field names in the order of DLA-1.2 / DLA-6.1 / DLA-7.1; assignment refused."""
    assert dataclasses.is_dataclass(cls)
    assert tuple(f.name for f in dataclasses.fields(cls)) == SHARED[cls]
    obj = dla.Config(2) if cls is dla.Config else cls(*range(len(SHARED[cls])))
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(obj, SHARED[cls][0], 1)


def test_config_defaults_are_those_of_the_spec():
    """DLA-1.2 via DLA-11.3: ``Config(capacity, tau=0.5, score="key_cosine", policy="dla",
    base="gla", scale=None)``."""
    c = dla.Config(3)
    assert (c.capacity, c.tau, c.score, c.policy, c.base, c.scale) == (
        3, 0.5, "key_cosine", "dla", "gla", None)


def _plan_and_cache():
    x = random_inputs(0, 2, 9, 2, 3, 2, 3)
    cfg = config(3, tau=0.3)
    _, cache = forward(**x, config=cfg, output_final_cache=True)
    return cfg, x, make_plan(cfg, k=x["k"]), cache


def test_plan_equals_is_exact():
    """DLA-11.3: ``Plan.equals`` compares every field exactly (one entry one off fails)."""
    _, _, plan, _ = _plan_and_cache()
    assert plan.equals(dataclasses.replace(plan))
    for f in SHARED[dla.Plan]:
        a = getattr(plan, f).copy()
        a[1, 8, 1, ...] = ~a[1, 8, 1] if f == "boundary" else a[1, 8, 1] + 1
        assert not plan.equals(dataclasses.replace(plan, **{f: a})), f
    shorter = dla.Plan(*(getattr(plan, f)[:, :-1] for f in SHARED[dla.Plan]))
    assert not plan.equals(shorter)


def test_to_numpy_moves_torch_fields_and_implementations_share_the_types():
    """DLA-11.3: ``to_numpy`` turns torch fields into NumPy; torch_cpu returns ``dla.Plan`` and
    ``dla.Cache`` whose NumPy form equals the reference's plan (exactly) and cache."""
    torch = pytest.importorskip("torch")
    from dla.impls import torch_cpu

    cfg, x, plan, cache = _plan_and_cache()
    t = {n: torch.from_numpy(a) for n, a in x.items()}
    tplan = torch_cpu.make_plan(cfg, k=t["k"])
    _, tcache = torch_cpu.forward(**t, config=cfg, output_final_cache=True)
    assert type(tplan) is dla.Plan and type(tcache) is dla.Cache
    assert isinstance(tplan.count, torch.Tensor)
    as_np = tplan.to_numpy()
    assert all(isinstance(getattr(as_np, f), np.ndarray) for f in SHARED[dla.Plan])
    assert as_np.equals(plan) and tplan.equals(plan)
    np_cache = tcache.to_numpy()
    for f in SHARED[dla.Cache]:
        got = getattr(np_cache, f)
        assert isinstance(got, np.ndarray), f
        np.testing.assert_allclose(got, getattr(cache, f), rtol=1e-10, atol=1e-12, err_msg=f)


@pytest.mark.parametrize("name", ["dla.reference", "dla.impls.torch_cpu", "dla.impls.triton_gpu",
                                  "dla.conformance"])
def test_the_import_namespace_is_dla(name):
    """DLA-11.3: every package lives under ``dla``; implementations offer the DLA-11.1 pair."""
    mod = importlib.import_module(name)
    if name != "dla.conformance":
        assert callable(mod.forward) and callable(mod.make_plan)
    else:
        assert callable(mod.certify)
