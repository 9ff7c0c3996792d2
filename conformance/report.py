"""Conformance results per spec clause, as JSON and as a terminal table."""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass, field
from typing import Any

from dla.conformance.tolerance import Comparison, bound_ratio

REPORT_FORMAT = "dla-conformance-report/1"


@dataclass
class ClauseResult:
    """One check of one level, tagged with the spec clause it certifies.

    ``worst`` is the worst comparison (``Comparison.to_json()``: field,
    rel_rms, where, error, bound) or ``None`` when nothing numeric was compared.
    """

    level: str
    clause: str
    check: str
    passed: bool
    detail: str = ""
    worst: dict[str, Any] | None = None
    dtype: str = ""
    device: str = ""
    seconds: float = 0.0

    @classmethod
    def from_comparison(
        cls, level: str, clause: str, check: str, comp: Comparison, **kw: Any
    ) -> ClauseResult:
        return cls(level, clause, check, comp.passed, comp.message, comp.to_json(), **kw)

    def clauses(self) -> list[str]:
        """The clause ids this result certifies (a golden case may cite several)."""
        return [c.strip() for c in self.clause.split(",") if c.strip()]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def versions() -> dict[str, str | None]:
    """Versions of the software a report was produced with (reproducibility)."""
    import numpy

    import dla

    out: dict[str, str | None] = {
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "dla": dla.__version__,
        "spec": dla.SPEC_VERSION,
    }
    for mod in ("torch", "triton"):
        out[mod] = _version_if_imported(mod)
    return out


def _version_if_imported(name: str) -> str | None:
    """The version of ``name`` if installed (read from metadata: importing torch is slow)."""
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


@dataclass
class Report:
    """The certification of one implementation (what ``certify`` returns)."""

    implementation: str
    claims: dict[str, Any]
    levels: list[str]
    dtypes: list[str]
    devices: list[str]
    profile: str
    seed: int
    results: list[ClauseResult] = field(default_factory=list)
    duration_s: float = 0.0
    versions: dict[str, str | None] = field(default_factory=versions)

    @property
    def passed(self) -> bool:
        """Every check passed, and every level run has at least one check (DLA-12).

        A claimed level that ran no check certifies nothing, so it fails.
        """
        return (bool(self.results) and all(r.passed for r in self.results)
                and all(self.level_passed().values()))

    def failed_clauses(self) -> set[str]:
        return {c for r in self.results if not r.passed for c in r.clauses()}

    def level_passed(self) -> dict[str, bool]:
        return {
            lvl: all(r.passed for r in self.results if r.level == lvl)
            and any(r.level == lvl for r in self.results)
            for lvl in self.levels
        }

    def worst_errors(self) -> dict[str, dict[str, Any] | None]:
        """Per level, the comparison closest to (or furthest past) its bound."""
        out: dict[str, dict[str, Any] | None] = {}
        for lvl in self.levels:
            best: tuple[float, dict[str, Any]] | None = None
            for r in self.results:
                if r.level != lvl or not r.worst:
                    continue
                ratio = _ratio(r.worst)
                if best is None or ratio > best[0]:
                    info = {"check": r.check, "clause": r.clause, "ratio": ratio, **r.worst}
                    best = (ratio, info)
            out[lvl] = None if best is None else best[1]
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "format": REPORT_FORMAT,
            "implementation": self.implementation,
            "passed": self.passed,
            "claims": {k: list(v) if isinstance(v, tuple) else v for k, v in self.claims.items()},
            "levels": self.levels,
            "level_passed": self.level_passed(),
            "dtypes": self.dtypes,
            "devices": self.devices,
            "profile": self.profile,
            "seed": self.seed,
            "reproduce": (
                f"dla-conformance run --impl {self.implementation} --levels "
                f"{' '.join(self.levels)} --profile {self.profile} --seed {self.seed}"
            ),
            "versions": self.versions,
            "duration_s": round(self.duration_s, 3),
            "failed_clauses": sorted(self.failed_clauses()),
            "worst_errors": self.worst_errors(),
            "results": [r.to_json() for r in self.results],
        }

    def table(self, *, only_failures: bool = False) -> str:
        """A readable table: level | clause | check | result | worst error / bound | where."""
        rows = [("level", "clause", "check", "result", "worst error / bound", "where")]
        for r in self.results:
            if only_failures and r.passed:
                continue
            rows.append(
                (
                    r.level,
                    _clause_cell(r),
                    _check_label(r),
                    "PASS" if r.passed else "FAIL",
                    _error_cell(r),
                    _where_cell(r),
                )
            )
        if only_failures and len(rows) == 1:
            return "no failed checks"
        widths = [min(max(len(row[i]) for row in rows), 72) for i in range(len(rows[0]))]
        lines = [
            " | ".join(c[:72].ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            for row in rows
        ]
        lines.insert(1, "-+-".join("-" * w for w in widths))
        return "\n".join(lines)

    def summary(self) -> str:
        n_fail = sum(not r.passed for r in self.results)
        verdict = "PASSED" if self.passed else "FAILED"
        per_level = ", ".join(
            f"{lvl} {'ok' if ok else 'FAIL'}" for lvl, ok in self.level_passed().items()
        )
        lines = [
            f"{self.implementation}: {verdict} ({len(self.results)} checks, {n_fail} failed; "
            f"{self.duration_s:.1f} s; profile {self.profile}, seed {self.seed})",
            f"levels: {per_level}",
        ]
        failed = [r for r in self.results if not r.passed]
        for r in failed[:20]:
            lines.append(f"  FAIL {r.level} {r.clause} {_check_label(r)}: {r.detail}")
        if len(failed) > 20:
            lines.append(f"  ... and {len(failed) - 20} more failures")
        return "\n".join(lines)


def _ratio(worst: dict[str, Any]) -> float:
    return bound_ratio(
        worst.get("error"), worst.get("bound"), worst.get("rel_rms"), worst.get("rms_bound")
    )


def _clause_cell(r: ClauseResult) -> str:
    cs = r.clauses()
    return ", ".join(cs) if len(cs) <= 2 else f"{cs[0]}, {cs[1]} +{len(cs) - 2}"


def _check_label(r: ClauseResult) -> str:
    tags = "/".join(t for t in (r.dtype, r.device) if t)
    return f"{r.check} [{tags}]" if tags else r.check


def _error_cell(r: ClauseResult) -> str:
    w = r.worst
    if not w:
        return ""
    if w.get("field") == "error":
        return "raises as required" if r.passed else "wrong or no error"
    if w.get("rel_rms") is None:
        return "exact" if r.passed else f"{w.get('field')}: {w.get('error', 0):.0f} differ"
    rms = f" (rms {w['rel_rms']:.1e} / {w['rms_bound']:.0e})" if w.get("rms_bound") else ""
    return f"{w.get('error', 0.0):.2e} / {w.get('bound', 0.0):.2e}{rms}"


def _where_cell(r: ClauseResult) -> str:
    w = r.worst
    if not w or w.get("where") is None or (r.passed and not w.get("error")):
        return ""
    return f"{w.get('field')}{tuple(w['where'])}"
