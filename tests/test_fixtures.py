"""Golden fixtures (issue 4, DLA-12.7): committed files verify, tampering is caught, the schema
holds, every spec clause is covered, generation is deterministic, and the reference reproduces
every case read through ``iter_cases``."""

from __future__ import annotations

import json
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from dla import Config
from dla.conformance import golden
from dla.conformance import golden_cases as gc
from dla.conformance.tolerance import compare, compare_cache, compare_gradient
from dla.reference import forward, make_plan

ROOT = golden.default_dir()
SPEC = Path(__file__).resolve().parents[1] / "spec" / "SPEC.md"
FORWARD_NAMES = {"q", "k", "v", "g", "lam", "beta", "scores", "cu_seqlens"}
# Clauses no golden case can exercise, with the reason (the report states them too).
NOT_EXERCISABLE = {
    "DLA-11.4": "how the engine is told which implementation to load; no array file tests it",
    "DLA-1.7": "inputs left unmodified: the robustness level watches live calls",
    "DLA-1.8": "strides and bytes outside views: the robustness level builds the views",
    "DLA-1.9": "determinism: repeated live calls (robustness level)",
    "DLA-9.14": "refusals outside an implementation's claims: the claims level probes them",
    "DLA-11.6": "the claims protocol: read from the implementation, not from files",
    "DLA-12.9": "the claims level itself",
    "DLA-12.10": "the robustness level itself",
    "DLA-12.12": "how outcomes are reported",
}
SMALL_CASES = ["gla_dla_basic", "dyadic_ties", "stream_continue", "varlen_initial_cache",
               "gradients_delta", "plan_count_zero"]


def _manifests(root: Path = ROOT) -> dict[str, dict]:
    index = json.loads((root / "index.json").read_text())
    return {e["name"]: json.loads((root / e["manifest"]).read_text()) for e in index["cases"]}


@pytest.fixture(scope="module")
def committed_report() -> golden.VerifyReport:
    return golden.verify()


@pytest.fixture()
def copy(tmp_path: Path) -> Path:
    dst = tmp_path / "fixtures"
    shutil.copytree(ROOT, dst, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    return dst


# ----------------------------------------------------------------- verify


def test_committed_fixtures_verify(committed_report: golden.VerifyReport) -> None:
    assert committed_report.ok, str(committed_report)
    assert {c.name for c in committed_report.cases} == {s.name for s in gc.catalogue()}
    assert "OK" in str(committed_report).splitlines()[0]


@pytest.mark.parametrize("file", ["inputs.npz", "expected.npz", "margins.npz"])
def test_one_tampered_byte_fails_and_names_the_file(copy: Path, file: str) -> None:
    path = copy / "cases" / "dyadic_ties" / file
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    report = golden.verify(copy, names=["dyadic_ties", "single_token"])
    assert not report.ok
    assert f"cases/dyadic_ties/{file}: SHA-256 mismatch" in str(report)
    assert [c.name for c in report.cases if not c.ok] == ["dyadic_ties"]


def test_tampered_manifest_fails_against_the_index(copy: Path) -> None:
    path = copy / "cases" / "single_token" / "manifest.json"
    path.write_text(path.read_text().replace('"seed": 2', '"seed": 3'))
    report = golden.verify(copy, names=["single_token"])
    assert not report.ok
    assert "cases/single_token/manifest.json: SHA-256 differs from index.json" in str(report)


def test_missing_file_and_unlisted_directory_are_reported(copy: Path) -> None:
    (copy / "cases" / "varlen" / "margins.npz").unlink()
    (copy / "cases" / "stray_case").mkdir()
    report = golden.verify(copy, names=["varlen"])
    assert "cases/varlen/margins.npz: missing" in str(report)
    assert "cases/stray_case: directory not listed in index.json" in str(report)


def _rewrite(root: Path, case: str, file: str, edit) -> None:
    """Change one array and re-sign the case, so only regeneration can notice."""
    case_dir = root / "cases" / case
    arrays = golden.read_npz(case_dir / file)
    edit(arrays)
    data = golden.npz_bytes(arrays)
    (case_dir / file).write_bytes(data)
    manifest = json.loads((case_dir / "manifest.json").read_text())
    manifest["files"][file]["sha256"] = golden.sha256(data)
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    (case_dir / "manifest.json").write_text(text)
    index = json.loads((root / "index.json").read_text())
    for e in index["cases"]:
        if e["name"] == case:
            e["sha256"] = golden.sha256(text.encode())
    (root / "index.json").write_text(json.dumps(index, indent=2))


def test_re_signed_output_drift_is_caught_by_regeneration(copy: Path) -> None:
    def nudge(a: dict) -> None:
        a["o"] = a["o"].copy()
        a["o"][0, 5, 1, 2] += 1e-7

    _rewrite(copy, "gla_dla_basic", "expected.npz", nudge)
    report = golden.verify(copy, names=["gla_dla_basic"])
    assert not report.ok
    assert "expected.npz:o: drift beyond the float64 tolerance" in str(report)


def test_re_signed_input_change_is_caught_bit_exactly(copy: Path) -> None:
    def last_bit(a: dict) -> None:
        a["q"] = a["q"].copy()
        a["q"][0, 0, 0, 0] = np.nextafter(a["q"][0, 0, 0, 0], 2.0)

    _rewrite(copy, "single_token", "inputs.npz", last_bit)
    report = golden.verify(copy, names=["single_token"])
    assert "inputs.npz:q:" in str(report) and not report.ok


def test_re_signed_plan_change_is_caught_exactly(copy: Path) -> None:
    def relabel(a: dict) -> None:
        a["plan.labels"] = a["plan.labels"].copy()
        a["plan.labels"][0, -1, 0, 0] += 1

    _rewrite(copy, "dyadic_ties", "expected.npz", relabel)
    report = golden.verify(copy, names=["dyadic_ties"])
    assert "expected.npz:plan.labels" in str(report) and not report.ok


# ----------------------------------------------------------------- schema and format


def test_every_manifest_matches_the_schema() -> None:
    import jsonschema

    validator = jsonschema.Draft202012Validator(json.loads((ROOT / golden.SCHEMA_NAME).read_text()))
    validator.check_schema(validator.schema)
    for name, m in _manifests().items():
        errors = list(validator.iter_errors(m))
        assert not errors, (name, [e.message for e in errors])


@pytest.mark.parametrize("breakage", ["drop_seed", "bad_kind", "bad_sha", "valid_with_error",
                                      "bad_clause", "extra_key"])
def test_schema_rejects_a_broken_manifest(breakage: str) -> None:
    import jsonschema

    validator = jsonschema.Draft202012Validator(json.loads((ROOT / golden.SCHEMA_NAME).read_text()))
    m = _manifests()["gla_dla_basic"]
    if breakage == "drop_seed":
        del m["seed"]
    elif breakage == "bad_kind":
        m["kind"] = "maybe"
    elif breakage == "bad_sha":
        m["files"]["inputs.npz"]["sha256"] = "xyz"
    elif breakage == "valid_with_error":
        m["error"] = {"type": "ValueError", "clause": "DLA-9.4", "argument": "v",
                      "stage": "forward"}
    elif breakage == "bad_clause":
        m["clauses"].append("DLA-three")
    else:
        m["surprise"] = 1
    assert list(validator.iter_errors(m))


def test_npz_files_are_plain_uncompressed_zips_of_npy() -> None:
    """Other languages read them with a zip reader and an .npy parser; no pickles, no deflate."""
    files = sorted(ROOT.glob("cases/*/*.npz"))
    assert files
    for path in files:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                assert info.compress_type == zipfile.ZIP_STORED, path
                assert info.filename.endswith(".npy")
                with z.open(info) as f:
                    np.lib.format.read_array(f, allow_pickle=False)


def test_fixtures_stay_small() -> None:
    total = sum(p.stat().st_size for p in ROOT.rglob("*") if p.is_file())
    assert total < 5 * 2**20, f"fixtures take {total / 2**20:.2f} MiB (budget 5 MiB)"


# ----------------------------------------------------------------- coverage


def test_every_spec_clause_appears_in_some_manifest() -> None:
    ids = set(re.findall(r"DLA-\d+\.\d+", SPEC.read_text()))
    cited = {c for m in _manifests().values() for c in m["clauses"]}
    assert cited <= ids, f"manifests cite clauses the spec lacks: {sorted(cited - ids)}"
    missing = ids - cited - set(NOT_EXERCISABLE)
    assert not missing, f"clauses no golden case exercises: {sorted(missing)}"


def test_the_required_kinds_of_case_are_present() -> None:
    m = _manifests()
    shapes = {n: x["shapes"] for n, x in m.items() if x["kind"] == "valid"}
    assert any(s["T"] == 1 for s in shapes.values())
    assert any(s["C"] == 1 for s in shapes.values())
    assert any(s["T"] >= 8192 for s in shapes.values())
    assert any(x["forward"]["initial_cache"] and x["kind"] == "valid" for x in m.values())
    assert any(x["forward"]["cu_seqlens"] and x["kind"] == "valid" for x in m.values())
    assert any(x["forward"]["plan_injected"] and x["kind"] == "valid" for x in m.values())
    assert {x["base"] for x in m.values()} >= {"gla", "delta"}
    assert {x["policy"] for x in m.values()} >= {"dla", "fenwick"}
    errors = {x["error"]["clause"] for x in m.values() if x["error"]}
    assert errors >= {f"DLA-9.{i}" for i in range(1, 13)}
    assert {x["error"]["type"] for x in m.values() if x["error"]} == {"ValueError", "TypeError"}
    assert any(x["min_margin"] == 0 for x in m.values()), "no exact tie recorded"


def test_margins_in_manifest_match_margins_file() -> None:
    for name, m in _manifests().items():
        if m["kind"] != "valid":
            continue
        mg = golden.read_npz(ROOT / "cases" / name / "margins.npz")
        both = np.concatenate([mg["boundary"].ravel(), mg["merge"].ravel()])
        smallest = float(both.min()) if both.size else float("inf")
        assert (m["min_margin"] is None) == np.isinf(smallest), name
        if m["min_margin"] is not None:
            assert m["min_margin"] == smallest, name
        if m["margin_floor"] is not None:
            assert smallest >= m["margin_floor"], name


# ----------------------------------------------------------------- determinism


def test_generate_is_deterministic(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    golden.generate(a, names=SMALL_CASES)
    golden.generate(b, names=SMALL_CASES)
    for name in SMALL_CASES:
        ia, ib = (golden.read_npz(r / "cases" / name / "inputs.npz") for r in (a, b))
        derived = json.loads((a / "cases" / name / "manifest.json").read_text())["derived_inputs"]
        assert ia.keys() == ib.keys()
        for key in set(ia) - set(derived):
            assert ia[key].tobytes() == ib[key].tobytes(), (name, key)
        if (a / "cases" / name / "expected.npz").exists():
            ea, eb = (golden.read_npz(r / "cases" / name / "expected.npz") for r in (a, b))
            for key in ea:
                if key.startswith("plan."):
                    assert np.array_equal(ea[key], eb[key]), (name, key)
            assert compare(ea["o"], eb["o"], "float64").passed
    report = golden.verify(a, names=SMALL_CASES)
    assert report.ok, str(report)


def test_drawn_inputs_match_the_committed_bytes(tmp_path: Path) -> None:
    """The PCG64 draws and exact arithmetic give the committed input bits again."""
    golden.generate(tmp_path, names=["gla_dla_basic", "dyadic_ties", "long_accumulation"])
    for name in ("gla_dla_basic", "dyadic_ties", "long_accumulation"):
        new = golden.read_npz(tmp_path / "cases" / name / "inputs.npz")
        old = golden.read_npz(ROOT / "cases" / name / "inputs.npz")
        assert new.keys() == old.keys()
        for key in new:
            assert new[key].dtype == old[key].dtype and new[key].tobytes() == old[key].tobytes()


def test_draws_are_exact_and_on_the_float32_grid() -> None:
    d = gc.Draws(7)
    u = gc.Draws(7).unit((1000,))
    raw = np.random.PCG64(7).random_raw(1000)
    assert np.array_equal(u, (raw >> np.uint64(11)).astype(np.float64) / 2.0**53)
    x = d.uniform((1000,))
    assert np.array_equal(x, x.astype(np.float32).astype(np.float64))
    assert x.min() >= -1 and x.max() <= 1


# ----------------------------------------------------------------- iter_cases and the reference


@pytest.fixture(scope="module")
def cases() -> list[golden.GoldenCase]:
    return list(golden.iter_cases())


def test_iter_cases_yields_what_common_promises(cases: list[golden.GoldenCase]) -> None:
    m = _manifests()
    config_stage = {n for n, x in m.items() if x["error"] and x["error"]["stage"] == "config"}
    assert [c.name for c in cases] == [n for n in m if n not in config_stage]
    for c in cases:
        assert c.kind in ("valid", "invalid") and isinstance(c.config, Config)
        assert {"q", "k", "v", "g", "lam"} <= set(c.inputs) <= FORWARD_NAMES
        assert all(isinstance(a, np.ndarray) for a in c.inputs.values())
        assert c.clauses == tuple(m[c.name]["clauses"]) and isinstance(c.min_margin, float)
        if c.kind == "valid":
            assert c.expected_o is not None and c.expected_plan is not None
            assert c.error is None and c.error_clause is None
            assert (c.expected_cache is not None) == c.output_final_cache
        else:
            assert c.expected_o is None and c.expected_plan is None and c.expected_cache is None
            assert c.error in ("ValueError", "TypeError") and c.error_clause.startswith("DLA-9.")


def _run(c: golden.GoldenCase):
    return forward(**c.inputs, config=c.config, plan=c.plan, initial_cache=c.initial_cache,
                   output_final_cache=c.output_final_cache)


def test_reference_reproduces_every_valid_case(cases: list[golden.GoldenCase]) -> None:
    for c in (c for c in cases if c.kind == "valid"):
        o, cache = _run(c)
        assert compare(o, c.expected_o, "float64").passed, c.name
        kw = {n: c.inputs[n] for n in ("k", "scores", "cu_seqlens") if n in c.inputs}
        plan = make_plan(c.config, initial_cache=c.initial_cache, **kw)
        assert plan.equals(c.expected_plan), c.name
        if c.expected_cache is not None:
            assert compare_cache(cache, c.expected_cache, "float64").passed, c.name


def test_gradient_case_matches_fresh_finite_differences(cases: list[golden.GoldenCase]) -> None:
    (c,) = [c for c in cases if c.expected_grads is not None]
    built = gc.Built(c.inputs, plan=c.plan, grad_output=c.grad_output)
    fresh = gc.fd_gradients(built, c.config)
    assert set(fresh) == set(c.expected_grads) >= {"q", "k", "v", "g", "lam", "beta"}
    for name, g in fresh.items():
        assert compare_gradient(g, c.expected_grads[name], "float64", name).passed, name


def test_reference_raises_the_named_error_for_every_invalid_case(
        cases: list[golden.GoldenCase]) -> None:
    for c in (c for c in cases if c.kind == "invalid"):
        argument = c.manifest["error"]["argument"]
        with pytest.raises((ValueError, TypeError)) as info:
            _run(c)
        assert type(info.value).__name__ == c.error, c.name
        assert str(info.value).startswith(argument) and c.error_clause in str(info.value), c.name


def test_config_stage_cases_are_refused_by_config() -> None:
    staged = [m for m in _manifests().values() if m["error"] and m["error"]["stage"] == "config"]
    assert staged
    for m in staged:
        with pytest.raises(ValueError, match=f"^{m['error']['argument']}"):
            Config(**m["config"])


def test_readme_lists_every_case_and_the_commands() -> None:
    text = (ROOT / "README.md").read_text()
    for name in _manifests():
        assert f"| `{name}` |" in text, name
    assert "dla-conformance fixtures generate" in text
    assert "python -m dla.conformance.golden" in text


def test_verify_compares_every_manifest_field() -> None:
    """A new manifest field must be added to the regeneration comparison too."""
    schema = json.loads((ROOT / golden.SCHEMA_NAME).read_text())
    assert set(schema["required"]) - {"files", "min_margin"} == set(golden._EXACT_MANIFEST_KEYS)
