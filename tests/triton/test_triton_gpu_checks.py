"""Validation of ``dla.impls.triton_gpu.forward`` with one device read (DLA-9, DLA-11.7).

The value rules of the float inputs run as one Triton reduction read once
(:mod:`dla.impls.triton_gpu.checks`); structure is checked on the host, and every
error a caller sees is the one the shared validation raises. These tests hold the
shortcut to that: the same errors on malformed calls, no per-tensor scan of the
shared module on a plain call, nothing outside the views read (DLA-1.8), and on a
GPU no implicit device sync at all.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import dla
import dla.impls.triton_gpu as triton_gpu
from dla.impls.triton_gpu import api, checks
from dla.reference import validation as val


def _x(device: str, B: int = 1, T: int = 20, H: int = 2, K: int = 4, C: int = 3,
       external: bool = False) -> dict:
    rng = np.random.default_rng(0)
    x = {"q": rng.standard_normal((B, T, H, K)), "k": rng.standard_normal((B, T, H, K)),
         "v": rng.standard_normal((B, T, H, K)), "g": -rng.uniform(0, 0.2, (B, T, H)),
         "lam": rng.uniform(0.5, 1.5, (B, T, H, C))}
    if external:
        x["scores"] = rng.uniform(0, 1, (B, T, H))
    return {n: torch.tensor(a, dtype=torch.float32, device=device) for n, a in x.items()}


def _shared_error(x: dict, cfg: dla.Config, **kw) -> BaseException:
    args = [x.get(n) for n in ("q", "k", "v", "g", "lam")]
    with pytest.raises((ValueError, TypeError)) as e:
        val.check_forward_call(*args, cfg, kind="torch", scores=x.get("scores"), **kw)
    return e.value


def _assert_same_error(x: dict, cfg: dla.Config, **kw) -> None:
    want = _shared_error(x, cfg, **kw)
    with pytest.raises(type(want)) as e:
        api.forward(**x, config=cfg, **kw)
    assert str(e.value) == str(want)


@pytest.mark.parametrize(("name", "value"), [("q", float("nan")), ("k", float("inf")),
                                             ("v", float("-inf")), ("g", float("nan")),
                                             ("g", 0.5), ("g", float("-inf")),
                                             ("lam", float("nan")), ("scores", float("nan")),
                                             ("scores", -0.25)])
def test_value_rules_raise_the_shared_error(name, value, device):
    """DLA-9.4 to DLA-9.6: a bad value anywhere (here the last token) raises exactly the
    shared validation's error."""
    x = _x(device, external=True)
    x[name][0, -1, 1] = value
    _assert_same_error(x, dla.Config(capacity=3, score="external"))


@pytest.mark.parametrize("case", ["shape", "dtype", "lam_width", "unused_scores", "no_scores",
                                  "beta", "numpy", "cu_seqlens"])
def test_structure_errors_are_the_shared_ones(case, device):
    """DLA-9.1, 9.3, 9.7, 9.8, 9.12: malformed calls raise the shared module's errors."""
    x = _x(device)
    cfg = dla.Config(capacity=3)
    kw: dict = {}
    if case == "shape":
        x["k"] = x["k"][:, :-1]
    elif case == "dtype":
        x["v"] = x["v"].half()
    elif case == "lam_width":
        x["lam"] = x["lam"][..., :2]
    elif case == "unused_scores":
        x["scores"] = torch.zeros_like(x["g"])
    elif case == "no_scores":
        cfg = dla.Config(capacity=3, score="external")
    elif case == "beta":
        kw["beta"] = torch.ones_like(x["g"])
    elif case == "numpy":
        x["g"] = x["g"].cpu().numpy()
    else:
        kw["cu_seqlens"] = torch.tensor([0, 7, 30], device=device)
    _assert_same_error(x, cfg, **kw)


def test_plain_call_runs_no_per_tensor_scan(device, monkeypatch):
    """A plain call never reaches the shared per-tensor value scans (one sync each on a
    GPU); a bad value does, and then the shared error is raised."""
    calls = []
    real = val._all_finite

    def counted(t):
        calls.append(t.shape)
        return real(t)

    monkeypatch.setattr(val, "_all_finite", counted)
    x = _x(device)
    cfg = dla.Config(capacity=3)
    o, _ = api.forward(**x, config=cfg, chunk=16)
    assert not calls and torch.isfinite(o).all()
    x["lam"][0, 3, 0] = float("nan")
    with pytest.raises(ValueError, match=r"^lam: .*DLA-9\.4"):
        api.forward(**x, config=cfg, chunk=16)
    assert calls


def test_nothing_outside_the_views_is_checked(device):
    """DLA-1.8: NaN in the buffer around strided views of every input raises nothing."""
    x = _x(device)
    big = {}
    for n, a in x.items():
        buf = torch.full((*a.shape[:-1], 2 * a.shape[-1]) if a.ndim == 4 else
                         (*a.shape, 2), float("nan"), device=device)
        if a.ndim == 4:
            buf[..., ::2] = a
            big[n] = buf[..., ::2]
        else:
            buf[..., 0] = a
            big[n] = buf[..., 0]
    cfg = dla.Config(capacity=3)
    want, _ = api.forward(**x, config=cfg, chunk=16)
    got, _ = api.forward(**big, config=cfg, chunk=16)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_carried_states_view_in_nan_padding(device):
    """DLA-1.8: carried states given as a strided view into a NaN buffer are read through
    the view (forward and backward)."""
    cfg = dla.Config(capacity=3)
    x = _x(device, T=40)
    _, cache = api.forward(**{n: a[:, :9] for n, a in x.items()}, config=cfg,
                           output_final_cache=True, chunk=16)
    rest = {n: a[:, 9:] for n, a in x.items()}
    want, _ = api.forward(**rest, config=cfg, initial_cache=cache, chunk=16)
    buf = torch.full((*cache.states.shape, 2), float("nan"), device=device)
    buf[..., 0] = cache.states
    view = buf[..., 0].requires_grad_()
    got, _ = triton_gpu.forward(**rest, config=cfg, chunk=16,
                                initial_cache=dataclasses.replace(cache, states=view))
    torch.testing.assert_close(got.detach(), want, rtol=0, atol=0)
    got.sum().backward()
    assert view.grad is not None and torch.isfinite(view.grad).all()


def test_value_flags_name_each_rule(device):
    """The flag word has one bit per input and rule (float64 scores beyond float32's range
    are finite, not flagged)."""
    x = _x(device, external=True)
    x["scores"] = x["scores"].double()
    x["scores"][0, 0, 0] = 1e300
    x["g"][0, 1, 0] = 0.25
    x["v"][0, 2, 1] = float("nan")
    f = checks.value_flags(*(x[n].reshape(20, 2, -1).contiguous()
                             for n in ("q", "k", "v", "g", "lam", "scores")))
    assert int(f[0]) == checks.POSITIVE_G | checks.NONFINITE_V


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("policy", ["dla", "fenwick"])
def test_forward_has_no_implicit_device_sync(policy):
    """No implicit sync (``.item()``, a host copy, a boolean mask) on the forward path of a
    plain call, in either policy: torch raises on one in sync-debug mode ``error``."""
    x = _x("cuda", T=200, C=9)
    cfg = dla.Config(capacity=9, policy=policy)
    api.forward(**x, config=cfg)  # compile first
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        o, _ = api.forward(**x, config=cfg)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(o).all()
