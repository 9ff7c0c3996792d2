"""certify(): the reference passes every level it claims, and each level can fail.

The small implementations here wrap the reference (NumPy) or re-derive the
masked form in torch (for the gradients level), then break one thing, so each
test shows that a level notices what it certifies.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Any, ClassVar

import numpy as np
import pytest

import dla.reference as ref
from dla import Config, Plan
from dla.conformance import certify
from dla.conformance.levels import resolve_levels


def test_reference_certifies_on_every_level_it_claims() -> None:
    """DLA-12.1 to DLA-12.5, DLA-12.7: the reference passes every claimed level, in every
    claimed dtype, and every check reports the clause it tests (section 12)."""
    levels = list(ref.CLAIMS["levels"])
    report = certify("reference", levels=levels, profile="ci", seed=0)
    failures = [
        f"{r.level} {r.clause} {r.check}: {r.detail}" for r in report.results if not r.passed
    ]
    assert report.passed, "\n".join(failures)
    assert report.failed_clauses() == set()
    assert report.dtypes == list(ref.CLAIMS["dtypes"])
    ran = {r.level for r in report.results}
    assert ran == set(levels)
    for level in levels:  # every claimed level ran real checks in every claimed dtype
        for dtype in ref.CLAIMS["dtypes"]:
            assert any(r.level == level and r.dtype == dtype for r in report.results)
    assert all(r.clause.startswith("DLA-") for r in report.results)


def test_default_levels_are_the_claims_plus_properties() -> None:
    """DLA-12.8: the properties run for every implementation, claimed levels or not."""
    from dla.claims import resolve

    assert resolve_levels(None, resolve({"levels": ("execute", "plan")})) == [
        "plan",
        "execute",
        "properties",
        "claims",
        "robustness",
    ]
    with pytest.raises(ValueError, match="levels"):
        resolve_levels(["plan", "speed"], resolve({"levels": ("plan",)}))


def test_thorough_profile_draws_more_and_larger_cases() -> None:
    ci = certify("reference", levels=["plan"], dtype="float32", profile="ci")
    th = certify("reference", levels=["plan"], dtype="float32", profile="thorough")
    assert ci.passed and th.passed, th.summary()
    assert len(th.results) > 2 * len(ci.results)
    assert th.to_json()["profile"] == "thorough"


def _stable(report: Any) -> str:
    d = report.to_json()
    for k in ("duration_s", "versions", "date"):
        d.pop(k)
    for r in d["results"]:
        r.pop("seconds")
    return json.dumps(d, sort_keys=True, default=str)


def test_deterministic_given_seed_and_profile() -> None:
    kw = {"levels": ["streaming", "varlen"], "dtype": "float32"}
    a = certify("reference", seed=3, **kw)
    b = certify("reference", seed=3, **kw)
    c = certify("reference", seed=4, **kw)
    assert _stable(a) == _stable(b)
    assert _stable(a) != _stable(c)  # the seed changes the draws (piece lengths appear in details)
    assert a.to_json()["seed"] == 3 and a.to_json()["profile"] == "ci"


# ------------------------------------------------------------ broken wrappers of the reference
class _Wrapped:
    """The reference, with hooks to break one thing."""

    CLAIMS: ClassVar[dict] = dict(ref.CLAIMS)

    def forward(self, *args: Any, **kw: Any):
        return ref.forward(*args, **kw)

    def make_plan(self, config: Config, **kw: Any) -> Plan:
        return ref.make_plan(config, **kw)


class _OneWrongToken(_Wrapped):
    def forward(self, *args: Any, **kw: Any):
        o, c = ref.forward(*args, **kw)
        o = o.copy()
        if o.shape[1] > 5:
            o[0, 5, 0] *= 1.001
        return o, c


class _IgnoresInjectedPlan(_Wrapped):
    def forward(self, *args: Any, **kw: Any):
        kw.pop("plan", None)
        return ref.forward(*args, **kw)


class _OldestLabelZero(_Wrapped):
    """Labels by age instead of recency (DLA-3.5 violated)."""

    def make_plan(self, config: Config, **kw: Any) -> Plan:
        p = ref.make_plan(config, **kw)
        used = p.labels >= 0
        return dataclasses.replace(p, labels=np.where(used, p.count[..., None] - 1 - p.labels, -1))


class _ForgetsCache(_Wrapped):
    def forward(self, *args: Any, **kw: Any):
        kw.pop("initial_cache", None)
        return ref.forward(*args, **kw)


class _IgnoresCuSeqlens(_Wrapped):
    def forward(self, *args: Any, **kw: Any):
        if kw.pop("cu_seqlens", None) is not None and kw.get("output_final_cache"):
            raise ValueError("not supported")
        return ref.forward(*args, **kw)


class _Crashes(_Wrapped):
    def forward(self, *args: Any, **kw: Any):
        raise RuntimeError("kernel exploded")


@pytest.mark.parametrize(
    ("impl", "level", "clause"),
    [
        (_OneWrongToken(), "execute", "DLA-5.1"),
        (_IgnoresInjectedPlan(), "execute", "DLA-6.2"),
        (_OldestLabelZero(), "plan", "DLA-3.5"),
        (_ForgetsCache(), "streaming", "DLA-7.2"),
        (_IgnoresCuSeqlens(), "varlen", "DLA-8.1"),
        (_Crashes(), "end_to_end", "DLA-3.3"),
    ],
)
def test_each_level_catches_what_it_certifies(impl: Any, level: str, clause: str) -> None:
    """DLA-12.1 (plan), DLA-12.2 (execute), DLA-12.3 (end_to_end), DLA-12.4 (streaming),
    DLA-12.5 (varlen): each level fails an implementation breaking what it certifies."""
    report = certify(impl, levels=[level], dtype="float32")
    assert not report.passed
    assert clause in report.failed_clauses()
    assert report.level_passed() == {level: False}
    # and the reference passes the very same checks
    assert certify("reference", levels=[level], dtype="float32").passed


#: What section 12 says each level covers, as words its check names must contain.
LEVEL_COVERS = {
    "plan": ["dla ", "fenwick", "key_cosine", "external", "carried cache", "margin>", "dyadic"],
    "execute": ["gla", "delta", "dla ", "fenwick", "plan injected", "near-tie"],
    "end_to_end": ["gla", "delta", "dla ", "fenwick", "margin>", "dyadic"],
    "streaming": ["in pieces == one pass", "reference cache -> implementation",
                  "implementation cache -> reference", "empty cache"],
    "varlen": ["packed == separate calls", "carried cache", "malformed cu_seqlens"],
}


@pytest.mark.parametrize("level", sorted(LEVEL_COVERS))
def test_each_level_covers_what_its_clause_lists(level: str) -> None:
    """DLA-12.1: plan parity for both policies, both score sources, with and without a carried
    cache, on margin-bounded or dyadic inputs; DLA-12.2: execute for both bases and policies,
    near ties included; DLA-12.3: end_to_end on margin-bounded and dyadic inputs; DLA-12.4:
    pieces vs one pass, caches both ways, the empty cache; DLA-12.5: packed vs separate,
    N-row cache, malformed ``cu_seqlens``. Every check of a level cites its clause."""
    from dla.conformance.levels import LEVEL_CLAUSE, collect
    from dla.conformance.loader import load

    _, _, work = collect(load("reference"), [level], "float32", None, "ci", 0)
    names = " | ".join(check.name for _, check in work)
    missing = [w for w in LEVEL_COVERS[level] if w not in names]
    assert not missing, f"{level} has no check for {missing}: {names}"
    assert all(LEVEL_CLAUSE[level] in check.clause for _, check in work)
    if level == "streaming":  # the empty-cache clause (built here so this test does not cite it)
        assert any("DLA-7." + "3" in check.clause for _, check in work)


def test_a_wrong_token_is_located() -> None:
    report = certify(_OneWrongToken(), levels=["execute"], dtype="float64")
    bad = [r for r in report.results if not r.passed and r.worst and r.worst["field"] == "o"]
    assert bad and all(tuple(r.worst["where"]) == (0, 5, 0) for r in bad)


def test_missing_golden_module_fails_the_level_without_crashing(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "dla.conformance.golden", None)  # import raises ImportError
    report = certify("reference", levels=["golden", "plan"], dtype="float32")
    golden = [r for r in report.results if r.level == "golden"]
    assert len(golden) == 1 and not golden[0].passed and "not available" in golden[0].detail
    assert report.level_passed() == {"plan": True, "golden": False}


class _GlaOnly(_Wrapped):
    """Declares no delta base (CLAIMS['bases']) and refuses it as DLA-9.14 asks."""

    CLAIMS: ClassVar[dict] = {**ref.CLAIMS, "bases": ("gla",)}

    def forward(self, q, k, v, g, lam, config, **kw: Any):
        if config.base == "delta":
            raise ValueError("config.base: 'delta' is not supported here (DLA-11.2)")
        return ref.forward(q, k, v, g, lam, config, **kw)


class _GlaOnlyCrashes(_GlaOnly):
    """The same, but it crashes on the delta base instead of refusing it."""

    def forward(self, q, k, v, g, lam, config, **kw: Any):
        if config.base == "delta":
            raise NotImplementedError("delta")
        return ref.forward(q, k, v, g, lam, config, **kw)


def test_unclaimed_bases_are_not_supported_not_failed() -> None:
    """DLA-11.2, DLA-12.12: checks outside the claims are reported as not supported (never
    run), and the claims level (DLA-12.9) checks that the implementation refuses them in the
    right form."""
    report = certify(_GlaOnly(), levels=["execute", "end_to_end", "golden", "claims"],
                     dtype="float32")
    assert report.passed, report.summary()
    delta = [r for r in report.results if "delta" in r.check and r.level != "claims"]
    assert delta and all(r.status == "not_supported" for r in delta)
    probe = [r for r in report.results if r.level == "claims" and "delta" in r.check]
    assert probe and probe[0].status == "not_supported" and probe[0].probe
    crashing = certify(_GlaOnlyCrashes(), levels=["claims"], dtype="float32")
    failed = [r for r in crashing.results if not r.passed]
    assert not crashing.passed and len(failed) == 1 and "delta" in failed[0].check
    assert "DLA-11.2" in failed[0].detail and "NotImplementedError" in failed[0].detail


def test_gradients_level_needs_torch_arrays() -> None:
    report = certify("reference", levels=["gradients"], dtype="float64")
    assert not report.passed
    assert "torch" in report.results[0].detail


# ------------------------------------------------------------------ a small torch implementation
torch = pytest.importorskip("torch")


def _label_matrix(plan: Plan) -> np.ndarray:
    """``L[b, h, t, s]``: label of the state holding token ``s`` at readout ``t`` (-1: s > t)."""
    p = plan.to_numpy()
    B, T, H = p.count.shape
    L = np.full((B, H, T, T), -1, np.int64)
    for b, h, t in np.ndindex(B, H, T):
        n = int(p.count[b, t, h])
        starts = [int(x) for x in p.starts[b, t, h, :n]] + [t + 1]
        for j in range(n):
            L[b, h, t, starts[j] : starts[j + 1]] = p.labels[b, t, h, j]
    return L


class TorchMaskedGLA:
    """The masked form (DLA-5.4) in torch, differentiable; gla base, no cache, no varlen."""

    CLAIMS: ClassVar[dict] = {
        "levels": ("execute", "end_to_end", "gradients"),
        "dtypes": ("float64", "float32"),
        "array": "torch",
        "bases": ("gla",),
    }

    def __init__(self, detach_v: bool = False) -> None:
        self.detach_v = detach_v

    def make_plan(
        self, config: Config, *, k=None, scores=None, initial_cache=None, cu_seqlens=None
    ):
        p = ref.make_plan(
            config,
            k=None if k is None else k.detach().double().numpy(),
            scores=None if scores is None else scores.detach().double().numpy(),
        )
        return Plan(
            **{
                f: torch.from_numpy(getattr(p, f))
                for f in ("boundary", "count", "starts", "labels")
            }
        )

    def forward(
        self,
        q,
        k,
        v,
        g,
        lam,
        config,
        *,
        beta=None,
        scores=None,
        plan=None,
        initial_cache=None,
        output_final_cache=False,
        cu_seqlens=None,
    ):
        if plan is None:
            plan = self.make_plan(config, k=k, scores=scores)
        if self.detach_v:
            v = v.detach()
        L = torch.from_numpy(_label_matrix(plan))
        mask = L >= 0
        lam_bhtc = lam.permute(0, 2, 1, 3)
        w = torch.gather(lam_bhtc, 3, L.clamp(min=0)) * mask
        G = torch.cumsum(g, dim=1).permute(0, 2, 1)  # [B, H, T]
        diff = (G[..., :, None] - G[..., None, :]).masked_fill(~mask, 0.0)
        decay = torch.exp(diff) * mask
        A = torch.einsum("bthk,bshk->bhts", q, k) * config.resolved_scale(q.shape[-1])
        o = torch.einsum("bhts,bshv->bthv", w * decay * A, v)
        return o, None


def test_a_torch_implementation_certifies_including_gradients() -> None:
    """DLA-12.6, DLA-10.5: autograd gradients vs finite differences of the float64 reference
    (plan frozen) pass within ``GRADIENT_RMS`` in float64 and float32."""
    report = certify(
        TorchMaskedGLA(),
        dtype=["float64", "float32"],
        levels=["execute", "end_to_end", "gradients"],
    )
    failures = [
        f"{r.level} {r.check} [{r.dtype}]: {r.detail}" for r in report.results if not r.passed
    ]
    assert report.passed, "\n".join(failures)
    grads = [r for r in report.results if r.level == "gradients"]
    assert {r.dtype for r in grads} == {"float64", "float32"}
    ran = [r for r in grads if r.status == "pass"]
    assert ran and all(r.worst and r.worst["rel_rms"] < r.worst["rms_bound"] for r in ran)


def test_the_gradients_level_catches_a_missing_gradient() -> None:
    """DLA-12.6, DLA-10.5: a gradient that does not reach ``v`` fails the relative-RMS test."""
    report = certify(TorchMaskedGLA(detach_v=True), levels=["gradients"], dtype="float64")
    assert not report.passed
    assert any("grad v" in r.detail for r in report.results if not r.passed)


def test_a_level_that_ran_no_check_fails_the_report() -> None:
    """DLA-12: a claimed level with no check certifies nothing, so the run must not pass."""
    from dla.claims import resolve
    from dla.conformance.report import ClauseResult, Report

    ran = ClauseResult("plan", "DLA-12.1", "one plan check", True)
    skipped = ClauseResult("execute", "DLA-12.2", "outside", True, status="not_supported")
    claims = resolve(None)
    report = Report("x", claims, ["plan", "execute"], ["float64"], ["cpu"], "ci", 0,
                    [ran, skipped])
    assert report.level_passed() == {"plan": True, "execute": False}
    assert not report.passed
    assert Report("x", claims, ["plan"], ["float64"], ["cpu"], "ci", 0, [ran]).passed


class _DeltaOnlyReference:
    """The reference, claiming the delta base only: plans do not depend on the base."""

    CLAIMS: ClassVar[dict] = dict(ref.CLAIMS, levels=("plan",), dtypes=("float64",),
                                  bases=("delta",))
    forward = staticmethod(ref.forward)
    make_plan = staticmethod(ref.make_plan)


def test_plan_checks_run_whatever_base_is_claimed() -> None:
    """DLA-12.1: the plan level is certified for an implementation without the gla base."""
    report = certify(_DeltaOnlyReference(), levels=["plan"], profile="ci")
    assert report.passed
    assert len([r for r in report.results if r.level == "plan"]) >= 5


class _FloatPlanReference:
    """The reference, returning its plan in float64: integers in disguise (DLA-6.1)."""

    CLAIMS: ClassVar[dict] = dict(ref.CLAIMS, levels=("plan",), dtypes=("float64",))
    forward = staticmethod(ref.forward)

    @staticmethod
    def make_plan(config, **kw):
        p = ref.make_plan(config, **kw)
        return Plan(boundary=p.boundary, count=p.count + 0.4, starts=p.starts.astype(float),
                    labels=p.labels.astype(float))


def test_a_plan_returned_with_float_fields_fails() -> None:
    """DLA-6.1: plan fields must be integers (bool for boundary); they are not cast to pass."""
    report = certify(_FloatPlanReference(), levels=["plan"], profile="ci")
    assert not report.passed
    assert any("plan.count" in r.detail and "float64" in r.detail
               for r in report.results if not r.passed)


class _VagueErrorsReference:
    """The reference, but its errors neither name the argument nor cite a clause."""

    CLAIMS: ClassVar[dict] = dict(ref.CLAIMS, levels=("varlen", "golden"), dtypes=("float64",))
    make_plan = staticmethod(ref.make_plan)

    @staticmethod
    def forward(*args, **kw):
        try:
            return ref.forward(*args, **kw)
        except (TypeError, ValueError) as exc:
            raise type(exc)("bad input") from None


def test_errors_must_name_the_argument_and_cite_the_clause() -> None:
    """DLA-9.13: the right exception type alone does not pass an error check."""
    report = certify(_VagueErrorsReference(), levels=["varlen", "golden"], profile="ci")
    failed = [r for r in report.results if not r.passed]
    assert failed and not report.passed
    assert all("DLA-9.13" in r.detail for r in failed)
    assert {r.level for r in failed} == {"varlen", "golden"}


def test_error_rules_hold_without_a_golden_claim() -> None:
    """DLA-12.8: the invalid golden cases run in the properties level when golden is unclaimed."""

    class Vague(_VagueErrorsReference):
        CLAIMS: ClassVar[dict] = dict(ref.CLAIMS, levels=("execute",), dtypes=("float64",))

    report = certify(Vague(), levels=["properties"], profile="ci")
    invalid = [r for r in report.results if r.check.startswith("invalid ")
               and r.status != "not_supported"]  # cu_seqlens cases: varlen is not claimed
    assert invalid and all(not r.passed and "DLA-9.13" in r.detail for r in invalid)
    assert not report.passed
    honest = certify(_DeltaOnlyReference(), levels=["properties"], profile="ci")
    assert honest.passed and any(r.check.startswith("invalid ") for r in honest.results)
