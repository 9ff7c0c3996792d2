"""Loading implementations by name, 'module:attribute' or object, and resolving CLAIMS (DLA-11)."""

from __future__ import annotations

import sys
import types
from typing import ClassVar

import pytest

import dla.reference as ref
from dla.claims import DEFAULTS
from dla.conformance.loader import LoadError, load, resolve_claims


class _Impl:
    """An object implementation (an instance with forward / make_plan)."""

    CLAIMS: ClassVar[dict] = {"levels": ("plan",), "array": "numpy"}

    def forward(self, *args, **kw):
        return ref.forward(*args, **kw)

    def make_plan(self, *args, **kw):
        return ref.make_plan(*args, **kw)


@pytest.fixture
def fake_module(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    mod = types.ModuleType("dla_test_fake_impls")
    mod.instance = _Impl()  # type: ignore[attr-defined]
    mod.nested = types.SimpleNamespace(inner=_Impl())  # type: ignore[attr-defined]
    mod.no_plan = types.SimpleNamespace(forward=ref.forward)  # type: ignore[attr-defined]
    mod.bad_claims = types.SimpleNamespace(  # type: ignore[attr-defined]
        forward=ref.forward, make_plan=ref.make_plan, CLAIMS={"levels": ("plan", "fast")}
    )
    mod.forward, mod.make_plan = ref.forward, ref.make_plan  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    return mod


def test_registered_name_loads_the_reference_with_its_claims() -> None:
    loaded = load("reference")
    assert loaded.obj is ref
    assert loaded.claims.array == "numpy"
    assert loaded.claims.levels == tuple(ref.CLAIMS["levels"])


def test_module_attribute_forms(fake_module: types.ModuleType) -> None:
    assert load("dla_test_fake_impls:instance").obj is fake_module.instance
    assert load("dla_test_fake_impls:nested.inner").obj is fake_module.nested.inner
    assert load("dla.reference:api").obj is ref.api  # the attribute may be a module
    assert load("dla_test_fake_impls").obj is fake_module  # a bare module path
    assert load(fake_module.instance).claims.levels == ("plan",)


def test_missing_claims_get_the_defaults(fake_module: types.ModuleType) -> None:
    claims = load("dla_test_fake_impls").claims
    assert claims.levels == DEFAULTS["levels"] == ("plan", "execute", "end_to_end")
    assert claims.dtypes_on("cpu") == ("float32",) and claims.devices == ("cpu",)
    assert claims.array == "torch" and claims.bases == ("gla", "delta")
    assert claims.policies == ("dla", "fenwick") and claims.plans == "any"


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("no_such_name", "neither a registered name"),
        ("dla_no_such_module:impl", "cannot import module 'dla_no_such_module'"),
        ("dla_test_fake_impls:missing", "has no attribute 'missing'"),
        ("dla_test_fake_impls:", "module:attribute"),
        ("dla_test_fake_impls:no_plan", "lacks make_plan"),
        ("dla_test_fake_impls:bad_claims", r"CLAIMS\['levels'\]"),
    ],
)
def test_clear_errors(fake_module: types.ModuleType, spec: str, match: str) -> None:
    with pytest.raises(LoadError, match=match):
        load(spec)


def test_an_object_without_the_interface_is_rejected() -> None:
    with pytest.raises(LoadError, match="forward, make_plan"):
        load(object())


@pytest.mark.parametrize(
    "claims",
    [
        {"array": "jax"},
        {"dtypes": "float32"},
        {"devices": ()},
        {"speed": "fast"},
        {"bases": ("gla", "rwkv")},
        {"cu_seqlens_dtype": "int8"},
        {"plans": "some"},
        {"scores": ("cosine",)},
        {"sizes": {"D": {"max": 4}}},
        {"sizes": {"K": {"max": 32, "multiple_of": 64}}},
        {"sizes": {"C": {"maximum": 1}}},
        {"dtypes": {"cuda": ("float32",)}},
        {"levels": ("plan", "plan")},
    ],
)
def test_invalid_claims_are_named(claims: dict) -> None:
    obj = types.SimpleNamespace(forward=ref.forward, make_plan=ref.make_plan, CLAIMS=claims)
    with pytest.raises(LoadError, match="CLAIMS"):
        resolve_claims(obj)


def test_a_syntax_error_in_an_adapter_is_one_line_with_file_and_line(tmp_path, monkeypatch) -> None:
    """DLA-11.4: an adapter that fails to import is named with the file and line that failed."""
    (tmp_path / "dla_broken_syntax_adapter.py").write_text("CLAIMS = {\n  'levels': (\n")
    (tmp_path / "dla_raising_adapter.py").write_text("x = 1\nraise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(LoadError) as info:
        load("dla_broken_syntax_adapter")
    msg = str(info.value)
    assert "\n" not in msg and "dla_broken_syntax_adapter.py:" in msg and "SyntaxError" in msg
    with pytest.raises(LoadError) as info:
        load("dla_raising_adapter")
    assert "dla_raising_adapter.py:2" in str(info.value) and "RuntimeError: boom" in str(info.value)
