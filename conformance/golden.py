"""Golden fixtures (``fixtures/README.md``): generate, verify and read the versioned golden cases.

Layout of a fixtures directory::

    index.json                  spec version, format, every case with its manifest's SHA-256
    manifest.schema.json        JSON Schema (draft 2020-12) of a manifest
    cases/<name>/manifest.json  config, shapes, seed, clauses, margins, error, SHA-256 per file
    cases/<name>/inputs.npz     forward's arrays; initial_cache.* and plan.* when passed
    cases/<name>/expected.npz   o, plan.* (make_plan of the inputs), final_cache.* (valid cases)
    cases/<name>/margins.npz    boundary and merge margins of DLA-6.3 (valid cases)

Every ``.npz`` is an uncompressed zip of ``.npy`` files written with fixed
timestamps, so equal arrays give equal bytes. Inputs and plans are compared
bit-exactly on regeneration; float outputs with the float64 tolerance of
:mod:`dla.conformance.tolerance` (DLA-10), since summation order may move
the last bits from one machine to another.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import shutil
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

import dla
from dla.cache import CACHE_FIELDS, Cache
from dla.config import Config
from dla.conformance import golden_cases as gc
from dla.conformance.tolerance import compare, compare_exact, compare_gradient
from dla.plan import PLAN_FIELDS, Plan
from dla.reference import forward, plan_with_margins

FORMAT_VERSION = 1
SCHEMA_NAME = "manifest.schema.json"
INDEX_NAME = "index.json"
CASES_DIR = "cases"
REGENERATE = ("dla-conformance fixtures generate --in-place  "
              "(or: python -m dla.conformance.golden generate --in-place)")
FORWARD_ARRAYS = ("q", "k", "v", "g", "lam", "beta", "scores", "cu_seqlens")


def default_dir() -> Path:
    """The installed ``dla.fixtures`` package directory (the repository's ``fixtures/``)."""
    import dla.fixtures

    return Path(dla.fixtures.__file__).parent


# ----------------------------------------------------------------- deterministic npz


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An uncompressed ``.npz`` whose bytes depend only on the arrays (fixed zip timestamps)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, a in arrays.items():
            npy = io.BytesIO()
            np.lib.format.write_array(npy, np.ascontiguousarray(a), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, npy.getvalue())
    return buf.getvalue()


def read_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {n: z[n] for n in z.files}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------- realizing a case


@dataclass(frozen=True)
class Realized:
    """A case run through the reference: its files' arrays and its manifest (without hashes)."""

    spec: gc.CaseSpec
    seed: int
    arrays: dict[str, dict[str, np.ndarray]]
    manifest: dict[str, Any]


def _plan_arrays(prefix: str, plan: Plan) -> dict[str, np.ndarray]:
    return {f"{prefix}.{f}": np.asarray(getattr(plan, f)) for f in PLAN_FIELDS}


def _cache_arrays(prefix: str, cache: Cache) -> dict[str, np.ndarray]:
    return {f"{prefix}.{f}": np.asarray(getattr(cache, f)) for f in CACHE_FIELDS}


def _input_arrays(built: gc.Built) -> dict[str, np.ndarray]:
    out = {n: built.inputs[n] for n in FORWARD_ARRAYS if n in built.inputs}
    if built.initial_cache is not None:
        out.update(_cache_arrays("initial_cache", built.initial_cache))
    if built.plan is not None:
        out.update(_plan_arrays("plan", built.plan))
    if built.grad_output is not None:
        out["grad_output"] = built.grad_output
    return out


def _run_reference(spec: gc.CaseSpec, built: gc.Built) -> gc.Outcome:
    cfg = spec.make_config()
    x = built.inputs
    plan, margins = plan_with_margins(
        cfg,
        k=x["k"],
        scores=x.get("scores"),
        initial_cache=built.initial_cache,
        cu_seqlens=x.get("cu_seqlens"),
    )
    o, cache = forward(
        **x,
        config=cfg,
        plan=built.plan,
        initial_cache=built.initial_cache,
        output_final_cache=spec.output_final_cache,
    )
    return gc.Outcome(spec, built, cfg, o, plan, cache, margins.boundary, margins.merge)


def _min_margin(out: gc.Outcome) -> float:
    m = np.concatenate([out.boundary_margin.ravel(), out.merge_margin.ravel()])
    return float(m.min()) if m.size else math.inf


def _realize_valid(spec: gc.CaseSpec) -> tuple[int, gc.Outcome]:
    """Run the case; with a margin floor, from the first seed ``>= spec.seed`` that meets it."""
    tries = 64 if spec.margin_floor is not None else 1
    for seed in range(spec.seed, spec.seed + tries):
        out = _run_reference(spec, spec.build(gc.Draws(seed), spec))
        if spec.margin_floor is None or _min_margin(out) >= spec.margin_floor:
            if spec.check is not None:
                spec.check(out)
            return seed, out
    raise RuntimeError(
        f"{spec.name}: no seed in [{spec.seed}, {spec.seed + tries}) has a margin "
        f">= {spec.margin_floor}"
    )


def _check_error(spec: gc.CaseSpec, built: gc.Built) -> None:
    """The reference must raise exactly the case's error, with a message naming the argument."""
    err = spec.error
    assert err is not None
    try:
        cfg = spec.make_config()
        if err.stage == "forward":
            forward(**built.inputs, config=cfg, plan=built.plan, initial_cache=built.initial_cache)
    except (ValueError, TypeError) as e:
        msg = str(e)
        if type(e).__name__ != err.type or not msg.startswith(err.argument):
            raise RuntimeError(
                f"{spec.name}: expected {err.type} starting with {err.argument!r}, got "
                f"{type(e).__name__}: {e}"
            ) from e
        if err.stage == "forward" and err.clause not in msg:  # DLA-9.13: the message cites it
            raise RuntimeError(f"{spec.name}: the message does not cite {err.clause}: {msg}") from e
        return
    raise RuntimeError(f"{spec.name}: the reference accepted the input; expected {err.type}")


def _describe_arrays(arrays: dict[str, dict[str, np.ndarray]]) -> dict[str, Any]:
    return {
        file: {n: {"shape": list(a.shape), "dtype": str(a.dtype)} for n, a in content.items()}
        for file, content in arrays.items()
    }


def _levels(built: gc.Built, spec: gc.CaseSpec) -> list[str]:
    """The conformance levels (DLA-11.2) an implementation must claim to run this case."""
    levels = ["golden"]
    if built.initial_cache is not None or spec.output_final_cache:
        levels.append("streaming")
    if "cu_seqlens" in built.inputs:
        levels.append("varlen")
    if spec.gradients:
        levels.append("gradients")
    return levels


def realize(spec: gc.CaseSpec) -> Realized:
    """Everything a case's files hold, computed from the catalogue and the reference alone."""
    seed, built, out = spec.seed, None, None
    if spec.error is None:
        seed, out = _realize_valid(spec)
        built = out.built
    else:
        built = spec.build(gc.Draws(seed), spec)
        _check_error(spec, built)
    arrays: dict[str, dict[str, np.ndarray]] = {"inputs.npz": _input_arrays(built)}
    min_margin: float | None = None
    if out is not None:
        expected = {"o": out.o, **_plan_arrays("plan", out.plan)}
        if out.cache is not None:
            expected.update(_cache_arrays("final_cache", out.cache))
        if spec.gradients:
            grads = gc.fd_gradients(built, out.config)
            expected.update({f"grad.{n}": g for n, g in grads.items()})
        arrays["expected.npz"] = expected
        arrays["margins.npz"] = {"boundary": out.boundary_margin, "merge": out.merge_margin}
        m = _min_margin(out)
        min_margin = None if math.isinf(m) else m
    levels = _levels(built, spec)
    extra = {"DLA-11.2"} if len(levels) > 1 else set()
    clauses = sorted(set(spec.clauses) | extra, key=gc.clause_key)
    manifest = _manifest(spec, seed, built, arrays, clauses, levels, min_margin)
    return Realized(spec, seed, arrays, manifest)


def _manifest(
    spec: gc.CaseSpec,
    seed: int,
    built: gc.Built,
    arrays: dict[str, Any],
    clauses: list[str],
    levels: list[str],
    min_margin: float | None,
) -> dict[str, Any]:
    d = spec.dims
    x = built.inputs
    n_seq = len(x["cu_seqlens"]) - 1 if "cu_seqlens" in x else d.B
    err = spec.error
    return {
        "spec_version": dla.SPEC_VERSION,
        "format_version": FORMAT_VERSION,
        "name": spec.name,
        "kind": spec.kind,
        "description": spec.description,
        "policy": spec.config.get("policy", "dla"),
        "base": spec.config.get("base", "gla"),
        "config": {**_config_defaults(), **spec.config},
        "shapes": {
            "B": d.B,
            "T": d.T,
            "H": d.H,
            "K": d.K,
            "V": d.V,
            "C": spec.config["capacity"],
            "N": n_seq,
        },
        "dtype": "float64",
        "seed": seed,
        "rng": "numpy.random.default_rng(seed).bit_generator (PCG64) raw outputs; "
        "uniform = (raw >> 11) * 2**-53, rounded to float32",
        "clauses": clauses,
        "target": spec.target,
        "levels": levels,
        "min_margin": min_margin,
        "margin_floor": spec.margin_floor,
        "forward": {
            "cu_seqlens": "cu_seqlens" in x,
            "initial_cache": built.initial_cache is not None,
            "output_final_cache": spec.output_final_cache,
            "plan_injected": built.plan is not None,
            "beta": "beta" in x,
            "scores": "scores" in x,
        },
        "derived_inputs": list(built.derived),
        "error": None
        if err is None
        else {"type": err.type, "clause": err.clause, "argument": err.argument, "stage": err.stage},
        "arrays": _describe_arrays(arrays),
        "regenerate": REGENERATE,
    }


def _config_defaults() -> dict[str, Any]:
    return {f.name: f.default for f in fields(Config) if f.name != "capacity"}


# ----------------------------------------------------------------- generate


def _write_case(root: Path, r: Realized) -> dict[str, Any]:
    case_dir = root / CASES_DIR / r.spec.name
    case_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, content in r.arrays.items():
        data = npz_bytes(content)
        (case_dir / name).write_bytes(data)
        files[name] = {"sha256": sha256(data), "bytes": len(data)}
    manifest = {**r.manifest, "files": files}
    text = json.dumps(manifest, indent=2, sort_keys=True, allow_nan=False) + "\n"
    (case_dir / "manifest.json").write_text(text)
    return {
        "name": r.spec.name,
        "kind": r.spec.kind,
        "manifest": f"{CASES_DIR}/{r.spec.name}/manifest.json",
        "sha256": sha256(text.encode()),
    }


def generate(out_dir: Path | None = None, *, names: list[str] | None = None) -> list[Path]:
    """Write every golden case (or those in ``names``) under ``out_dir`` (default: dla.fixtures).

    ``cases/`` is rewritten from scratch, ``index.json`` lists the cases with
    the SHA-256 of each manifest, and the schema is copied next to them when
    ``out_dir`` is not the package directory. Returns the written paths.
    """
    root = Path(out_dir) if out_dir is not None else default_dir()
    root.mkdir(parents=True, exist_ok=True)
    specs = [s for s in gc.catalogue() if names is None or s.name in names]
    if (root / CASES_DIR).exists():
        shutil.rmtree(root / CASES_DIR)
    schema = default_dir() / SCHEMA_NAME
    if root.resolve() != default_dir().resolve():
        shutil.copyfile(schema, root / SCHEMA_NAME)
    entries = [_write_case(root, realize(s)) for s in specs]
    index = {
        "spec_version": dla.SPEC_VERSION,
        "format_version": FORMAT_VERSION,
        "schema": {"path": SCHEMA_NAME, "sha256": sha256(schema.read_bytes())},
        "regenerate": REGENERATE,
        "cases": entries,
    }
    (root / INDEX_NAME).write_text(json.dumps(index, indent=2, allow_nan=False) + "\n")
    written = [root / INDEX_NAME]
    for e in entries:
        case_dir = root / CASES_DIR / e["name"]
        written += sorted(case_dir.iterdir())
    return written


# ----------------------------------------------------------------- verify


@dataclass
class CaseVerdict:
    """What verification found for one case; ``problems`` empty means it passed."""

    name: str
    problems: list[str] = field(default_factory=list)
    drift: dict[str, float] = field(default_factory=dict)  # relative RMS drift per float array

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class VerifyReport:
    """The outcome of :func:`verify`: global problems and one verdict per case."""

    root: Path
    problems: list[str] = field(default_factory=list)
    cases: list[CaseVerdict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and all(c.ok for c in self.cases)

    def __str__(self) -> str:
        n_bad = sum(not c.ok for c in self.cases)
        head = (
            f"golden fixtures in {self.root}: {len(self.cases)} cases, {n_bad} failing, "
            f"{len(self.problems)} index problems -> {'OK' if self.ok else 'FAILED'}"
        )
        lines = [head, *(f"  index: {p}" for p in self.problems)]
        for c in self.cases:
            worst = max(c.drift.items(), key=lambda kv: kv[1], default=None)
            drift = "" if worst is None else f"  (largest float drift {worst[1]:.2g} in {worst[0]})"
            lines.append(f"  {'ok  ' if c.ok else 'FAIL'} {c.name}{drift if c.ok else ''}")
            lines += [f"       {p}" for p in c.problems]
        return "\n".join(lines)


def _load_json(path: Path, problems: list[str]) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        problems.append(f"{path.name}: cannot be read as JSON ({e})")
        return None


def _schema_validator(root: Path) -> Any:
    import jsonschema

    schema = json.loads((root / SCHEMA_NAME).read_text())
    return jsonschema.Draft202012Validator(schema)


def _check_index(root: Path, report: VerifyReport, names: list[str] | None
                 ) -> list[dict[str, Any]]:
    index = _load_json(root / INDEX_NAME, report.problems)
    if not isinstance(index, dict):
        return []
    if index.get("spec_version") != dla.SPEC_VERSION:
        report.problems.append(
            f"index.json: spec_version {index.get('spec_version')!r} != {dla.SPEC_VERSION!r}"
        )
    schema_sha = (
        sha256((root / SCHEMA_NAME).read_bytes()) if (root / SCHEMA_NAME).exists() else None
    )
    if schema_sha != index.get("schema", {}).get("sha256"):
        report.problems.append(f"{SCHEMA_NAME}: SHA-256 differs from index.json (or file missing)")
    entries = index.get("cases", [])
    listed = {e.get("name") for e in entries}
    known = {s.name for s in gc.catalogue() if names is None or s.name in names}
    present = (
        {p.name for p in (root / CASES_DIR).iterdir()} if (root / CASES_DIR).exists() else set()
    )
    for name in sorted(known - listed):
        report.problems.append(f"case {name}: in the catalogue but not in index.json")
    for name in sorted(present - listed):
        report.problems.append(f"cases/{name}: directory not listed in index.json")
    return entries


def _check_files(case_dir: Path, manifest: dict[str, Any], verdict: CaseVerdict) -> None:
    for name, meta in manifest.get("files", {}).items():
        path = case_dir / name
        if not path.exists():
            verdict.problems.append(f"{path.relative_to(case_dir.parent.parent)}: missing")
        elif sha256(path.read_bytes()) != meta.get("sha256"):
            verdict.problems.append(
                f"{path.relative_to(case_dir.parent.parent)}: SHA-256 mismatch "
                "(file changed since generation)"
            )


def _compare_arrays(
    file: str,
    stored: dict[str, np.ndarray],
    fresh: dict[str, np.ndarray],
    derived: tuple[str, ...],
    verdict: CaseVerdict,
) -> None:
    """Inputs and integers bit-exactly; reference-computed floats with the float64 tolerance."""
    if set(stored) != set(fresh):
        verdict.problems.append(f"{file}: arrays {sorted(stored)} != regenerated {sorted(fresh)}")
        return
    for n, a in fresh.items():
        s = stored[n]
        label = f"{file}:{n}"
        if s.dtype != a.dtype or s.shape != a.shape:
            verdict.problems.append(
                f"{label}: {s.dtype}{list(s.shape)} != regenerated {a.dtype}{list(a.shape)}"
            )
            continue
        exact = (file == "inputs.npz" and n not in derived) or not np.issubdtype(
            a.dtype, np.floating
        )
        if exact:
            if not np.array_equal(s, a, equal_nan=np.issubdtype(a.dtype, np.floating)):
                verdict.problems.append(f"{label}: " + compare_exact(s, a, label).message)
            continue
        _compare_floats(label, s, a, verdict)


def _compare_floats(label: str, s: np.ndarray, a: np.ndarray, verdict: CaseVerdict) -> None:
    """Non-finite entries (an invalid case's planted NaN or Inf) exactly, the rest by tolerance."""
    inf_s, inf_a = ~np.isfinite(s), ~np.isfinite(a)
    if not np.array_equal(inf_s, inf_a) or not np.array_equal(s[inf_s], a[inf_a],
                                                               equal_nan=True):
        verdict.problems.append(f"{label}: non-finite entries differ from the regenerated ones")
        return
    if label.endswith(":o"):  # [B, T, H, V]: the per-position model of DLA-10.2
        c = compare(s, a, "float64", name=label)
    elif ":grad." in label:  # finite differences amplify rounding: the gradient bound of DLA-10.5
        c = compare_gradient(s, a, "float64", label)
    else:  # margins, cache fields: every finite entry is a position, scaled by the whole array
        fin = ~inf_s
        c = compare(
            s[fin].reshape(-1, 1), a[fin].reshape(-1, 1), "float64", name=label, group_axes=(0, 1)
        )
    verdict.drift[label] = c.rel_rms if c.rel_rms is not None else math.inf
    if not c.passed:
        verdict.problems.append(f"{label}: drift beyond the float64 tolerance: {c.message}")


_EXACT_MANIFEST_KEYS = (
    "spec_version",
    "format_version",
    "name",
    "kind",
    "description",
    "target",
    "rng",
    "regenerate",
    "policy",
    "base",
    "config",
    "shapes",
    "dtype",
    "seed",
    "clauses",
    "levels",
    "forward",
    "error",
    "derived_inputs",
    "arrays",
    "margin_floor",
)


def _same_margin(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-8, abs_tol=1e-12)


def _compare_manifest(stored: dict[str, Any], fresh: dict[str, Any], verdict: CaseVerdict) -> None:
    for key in _EXACT_MANIFEST_KEYS:
        if stored.get(key) != json.loads(json.dumps(fresh.get(key))):
            verdict.problems.append(
                f"manifest.json: {key} {stored.get(key)!r} != regenerated {fresh.get(key)!r}"
            )
    a, b = stored.get("min_margin"), fresh.get("min_margin")
    if not _same_margin(a, b):
        verdict.problems.append(f"manifest.json: min_margin {a} != regenerated {b}")


def _verify_case(
    root: Path, entry: dict[str, Any], validator: Any, specs: dict[str, gc.CaseSpec]
) -> CaseVerdict:
    name = str(entry.get("name"))
    verdict = CaseVerdict(name)
    mpath = root / str(entry.get("manifest", f"{CASES_DIR}/{name}/manifest.json"))
    if not mpath.exists():
        verdict.problems.append(f"{CASES_DIR}/{name}/manifest.json: missing")
        return verdict
    if sha256(mpath.read_bytes()) != entry.get("sha256"):
        verdict.problems.append(
            f"{CASES_DIR}/{name}/manifest.json: SHA-256 differs from index.json"
        )
    manifest = _load_json(mpath, verdict.problems)
    if not isinstance(manifest, dict):
        return verdict
    errors = sorted(validator.iter_errors(manifest), key=str)
    verdict.problems += [
        f"manifest.json: schema: {e.message} at /{'/'.join(map(str, e.path))}" for e in errors
    ]
    _check_files(mpath.parent, manifest, verdict)
    if name not in specs:
        verdict.problems.append("not in the case catalogue: cannot be regenerated")
        return verdict
    if verdict.problems:
        return verdict
    fresh = realize(specs[name])
    _compare_manifest(manifest, fresh.manifest, verdict)
    for file, arrays in fresh.arrays.items():
        _compare_arrays(
            file,
            read_npz(mpath.parent / file),
            arrays,
            tuple(fresh.manifest["derived_inputs"]),
            verdict,
        )
    return verdict


def verify(fixtures_dir: Path | None = None, *, names: list[str] | None = None) -> VerifyReport:
    """Check checksums, schema and index, then regenerate every case and compare (module doc).

    ``names`` restricts the per-case checks (and the "every catalogue case is
    listed" check) to those cases, e.g. for a directory made by
    ``generate(names=...)``.
    """
    root = Path(fixtures_dir) if fixtures_dir is not None else default_dir()
    report = VerifyReport(root)
    if not (root / INDEX_NAME).exists():
        report.problems.append(f"{INDEX_NAME}: missing in {root}")
        return report
    entries = _check_index(root, report, names)
    if not (root / SCHEMA_NAME).exists():
        report.problems.append(f"{SCHEMA_NAME}: missing")
        return report
    validator = _schema_validator(root)
    specs = {s.name: s for s in gc.catalogue()}
    chosen = [e for e in entries if names is None or e.get("name") in names]
    report.cases = [_verify_case(root, e, validator, specs) for e in chosen]
    return report


# ----------------------------------------------------------------- reading cases


@dataclass(frozen=True)
class GoldenCase:
    """One golden case, as the conformance engine's golden level runs it.

    Call ``forward(**inputs, config=config, plan=plan, initial_cache=initial_cache,
    output_final_cache=output_final_cache)``: valid cases must give
    ``expected_o`` (and ``expected_cache``) within the tolerance model; invalid
    ones must raise ``error`` (a message starting with the argument named in
    ``manifest["error"]["argument"]``, DLA-9.13). ``levels`` are the conformance
    levels (DLA-11.2) an implementation must claim for the case to apply to it.
    The gradient case has ``grad_output`` (the cotangent of ``o``) and
    ``expected_grads`` (central finite differences of ``sum(grad_output * o)``
    with ``plan`` frozen, DLA-10.5), keyed by input name. ``expected_plan`` is
    ``make_plan`` of the inputs (with ``initial_cache`` and ``cu_seqlens``), to
    compare exactly; ``plan`` is an injected plan (DLA-6.2) when not ``None``.
    """

    name: str
    kind: str
    config: Config
    clauses: tuple[str, ...]
    inputs: dict[str, np.ndarray]
    initial_cache: Cache | None
    output_final_cache: bool
    expected_o: np.ndarray | None
    expected_plan: Plan | None
    expected_cache: Cache | None
    min_margin: float
    error: str | None
    error_clause: str | None
    plan: Plan | None = None
    levels: tuple[str, ...] = ("golden",)
    target: str = ""
    grad_output: np.ndarray | None = None
    expected_grads: dict[str, np.ndarray] | None = None
    manifest: dict[str, Any] = field(default_factory=dict, repr=False)


def _group(arrays: dict[str, np.ndarray], prefix: str, cls: type) -> Any:
    keys = {n[len(prefix) + 1 :]: a for n, a in arrays.items() if n.startswith(prefix + ".")}
    return cls(**keys) if keys else None


def _load_case(case_dir: Path) -> GoldenCase:
    manifest = json.loads((case_dir / "manifest.json").read_text())
    for name, meta in manifest["files"].items():
        if sha256((case_dir / name).read_bytes()) != meta["sha256"]:
            raise ValueError(
                f"{case_dir / name}: SHA-256 mismatch; run `dla-conformance fixtures "
                "verify` (the file changed since generation)"
            )
    inputs = read_npz(case_dir / "inputs.npz")
    exp = read_npz(case_dir / "expected.npz") if "expected.npz" in manifest["files"] else {}
    err = manifest["error"]
    mm = manifest["min_margin"]
    return GoldenCase(
        name=manifest["name"],
        kind=manifest["kind"],
        config=Config(**manifest["config"]),
        clauses=tuple(manifest["clauses"]),
        inputs={n: a for n, a in inputs.items() if n in FORWARD_ARRAYS},
        initial_cache=_group(inputs, "initial_cache", Cache),
        output_final_cache=manifest["forward"]["output_final_cache"],
        expected_o=exp.get("o"),
        expected_plan=_group(exp, "plan", Plan),
        expected_cache=_group(exp, "final_cache", Cache),
        min_margin=math.inf if mm is None else float(mm),
        error=None if err is None else err["type"],
        error_clause=None if err is None else err["clause"],
        plan=_group(inputs, "plan", Plan),
        grad_output=inputs.get("grad_output"),
        expected_grads={n[5:]: a for n, a in exp.items() if n.startswith("grad.")} or None,
        levels=tuple(manifest["levels"]),
        target=manifest.get("target") or (err["clause"] if err else manifest["clauses"][0]),
        manifest=manifest,
    )


def retarget(name: str, claims: Any) -> GoldenCase | None:
    """The invalid case ``name`` rebuilt under a configuration the claims cover (DLA-12.8).

    The config fields the case's rule depends on (``CaseSpec.requires``) are
    kept; the policy, base, score source and capacity otherwise move to what
    the implementation claims, and the inputs are drawn again for that
    configuration. ``None`` when the rule needs a configuration outside the
    claims, or when the reference no longer raises the case's error.
    """
    from dataclasses import replace as dc_replace

    from dla.reference.policies import fenwick_capacity

    spec = next((c for c in gc.catalogue() if c.name == name), None)
    if spec is None or spec.error is None or spec.error.stage != "forward":
        return None
    cfg = {**_config_defaults(), **spec.config}
    for fld, claimed in (("policy", claims.policies), ("base", claims.bases),
                         ("score", claims.scores)):
        if cfg[fld] not in claimed:
            if fld in spec.requires:
                return None
            cfg[fld] = claimed[0]
    if "capacity" not in spec.requires:
        if cfg["policy"] == "fenwick":
            cfg["capacity"] = fenwick_capacity(spec.dims.T)
        else:
            cfg["capacity"] = claims.fit("C", cfg["capacity"]) or cfg["capacity"]
    moved = dc_replace(spec, config=cfg)
    built = moved.build(gc.Draws(moved.seed), moved)
    try:
        _check_error(moved, built)
    except RuntimeError:
        return None
    err = moved.error
    assert err is not None
    return GoldenCase(
        name=f"{name} (as {cfg['policy']} {cfg['base']} {cfg['score']} C={cfg['capacity']})",
        kind="invalid", config=Config(**cfg), clauses=moved.clauses,
        inputs={n: a for n, a in built.inputs.items() if n in FORWARD_ARRAYS},
        initial_cache=built.initial_cache, output_final_cache=moved.output_final_cache,
        expected_o=None, expected_plan=None, expected_cache=None, min_margin=math.inf,
        error=err.type, error_clause=err.clause, plan=built.plan,
        levels=tuple(_levels(built, moved)), target=err.clause,
        manifest={"error": {"type": err.type, "clause": err.clause, "argument": err.argument,
                            "stage": err.stage}, "name": name},
    )


def iter_cases(fixtures_dir: Path | None = None) -> Iterator[GoldenCase]:
    """Every case of ``index.json`` whose error, if any, is raised by ``forward``.

    Cases of stage ``config`` (``dla.Config`` itself must refuse the
    configuration, DLA-9.2) have no ``Config`` to pass and are left out here;
    their manifests state the rule for implementations with their own config type.
    Files are checked against their SHA-256 before use.
    """
    root = Path(fixtures_dir) if fixtures_dir is not None else default_dir()
    index = json.loads((root / INDEX_NAME).read_text())
    for entry in index["cases"]:
        case_dir = (root / entry["manifest"]).parent
        manifest = json.loads((case_dir / "manifest.json").read_text())
        if manifest["error"] is not None and manifest["error"]["stage"] == "config":
            continue
        yield _load_case(case_dir)


# ----------------------------------------------------------------- command line


def coverage(fixtures_dir: Path | None = None) -> dict[str, list[str]]:
    """Clause id -> the cases whose manifest cites it, in clause order."""
    root = Path(fixtures_dir) if fixtures_dir is not None else default_dir()
    index = json.loads((root / INDEX_NAME).read_text())
    table: dict[str, list[str]] = {}
    for entry in index["cases"]:
        for clause in json.loads((root / entry["manifest"]).read_text())["clauses"]:
            table.setdefault(clause, []).append(entry["name"])
    return {c: table[c] for c in sorted(table, key=gc.clause_key)}


def main(argv: list[str] | None = None) -> int:
    """``python -m dla.conformance.golden generate [DIR] | verify [DIR] | coverage [DIR]``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in ("generate", "verify", "coverage"):
        print("usage: python -m dla.conformance.golden generate|verify|coverage [DIR]",
              file=sys.stderr)
        return 2
    target = Path(args[1]) if len(args) > 1 else None
    if args[0] == "coverage":
        for clause, names in coverage(target).items():
            print(f"{clause}: {', '.join(names)}")
        return 0
    if args[0] == "generate":
        if target is None:  # never rewrite the fixtures this package reads unless told to
            print("usage: python -m dla.conformance.golden generate DIR (or --in-place)",
                  file=sys.stderr)
            return 2
        if str(target) == "--in-place":
            target = default_dir()
        paths = generate(target)
        print(f"wrote {len(paths)} files under {target}")
        return 0
    report = verify(target)
    print(report)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
