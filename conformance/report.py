"""Conformance results per spec clause, as JSON and as a terminal table.

Every check ends in one of four outcomes (the closed vocabulary of
``STATUSES``, after the ONNX backend tests and the Khronos CTS): ``pass``,
``fail``, ``not_supported`` (outside the implementation's claims, DLA-11.2;
either not run, or refused in the form DLA-11.2 asks for when probed) and
``works_unclaimed`` (a probe outside the claims gave the right answer).
"""

from __future__ import annotations

import platform
import shlex
from dataclasses import asdict, dataclass, field
from typing import Any

from dla.claims import Claims
from dla.conformance.clauses import CLAUSES, NOT_PER_IMPLEMENTATION, clause_key
from dla.conformance.tolerance import Comparison, bound_ratio

REPORT_FORMAT = "dla-conformance-report/2"

PASS, FAIL, NOT_SUPPORTED, WORKS_UNCLAIMED = "pass", "fail", "not_supported", "works_unclaimed"
STATUSES = (PASS, FAIL, NOT_SUPPORTED, WORKS_UNCLAIMED)


@dataclass
class ClauseResult:
    """One check of one level, tagged with the spec clauses it cites.

    ``target`` is the clause the check is about, the one a failure is
    attributed to; ``clause`` lists every clause it cites. ``worst`` is the
    worst comparison (``Comparison.to_json()``) or ``None`` when nothing
    numeric was compared. ``status`` is one of :data:`STATUSES`; ``passed``
    is false only for ``fail``.
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
    status: str = ""
    target: str = ""
    regime: str = ""
    probe: bool = False  # a claims probe: it ran, even when its outcome is not supported

    def __post_init__(self) -> None:
        if not self.status:
            self.status = PASS if self.passed else FAIL
        if self.status not in STATUSES:
            raise ValueError(f"status: expected one of {STATUSES}, got {self.status!r}")
        self.passed = self.status != FAIL
        if not self.target:
            cs = self.clauses()
            self.target = cs[0] if cs else ""

    @classmethod
    def from_comparison(
        cls, level: str, clause: str, check: str, comp: Comparison, **kw: Any
    ) -> ClauseResult:
        return cls(level, clause, check, comp.passed, comp.message, comp.to_json(), **kw)

    def clauses(self) -> list[str]:
        """The clause ids this result cites (a golden case may cite several)."""
        return [c.strip() for c in self.clause.split(",") if c.strip()]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ClauseResult:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


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
    for mod in ("torch", "triton", "fla-core"):
        out[mod] = _version_if_imported(mod)
    return out


def _version_if_imported(name: str) -> str | None:
    """The version of ``name`` if installed (read from metadata: importing torch is slow)."""
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def sort_clauses(ids: set[str] | list[str]) -> list[str]:
    """Clause ids in spec order (DLA-3.3 before DLA-10.3)."""
    return sorted(set(ids), key=clause_key)


@dataclass
class Report:
    """The certification of one implementation (what ``certify`` returns).

    ``command`` holds what reproduces the run (``reproduce`` in the JSON):
    the arguments of ``dla-conformance run`` and the folder to put on
    ``PYTHONPATH`` when the implementation was found there.
    """

    implementation: str
    claims: Claims
    levels: list[str]
    dtypes: list[str]
    devices: list[str]
    profile: str
    seed: int
    results: list[ClauseResult] = field(default_factory=list)
    duration_s: float = 0.0
    versions: dict[str, str | None] = field(default_factory=versions)
    complete: bool = True  # every claimed level, dtype and device ran (not a restricted run)
    origin: str | None = None  # the file the implementation was loaded from
    search_path: str | None = None  # the sys.path entry that found it, if not installed
    reproduce_args: list[str] = field(default_factory=list)
    reproduce_text: str | None = None  # kept from a report read back from JSON
    date: str = ""  # when the run ended, UTC ISO 8601
    planned: int = 0  # checks listed for the run
    interrupted: bool = False  # stopped before every listed check ran (a partial report)
    implementation_version: str | None = None  # its git commit or package version, at run time

    # ------------------------------------------------------------ verdicts
    @property
    def passed(self) -> bool:
        """No check failed, and every claimed level that ran passed at least one check (DLA-12).

        A claimed level whose checks were all not supported certifies nothing, so it fails.
        """
        return (bool(self.results) and not self.interrupted
                and all(self.level_passed().values()))

    def failed_clauses(self) -> set[str]:
        """The clauses failed checks target (not every clause they cite)."""
        return {r.target for r in self.results if not r.passed}

    def level_counts(self) -> dict[str, dict[str, int]]:
        """Per level, the number of results of each status, and ``run`` (pass + fail)."""
        out: dict[str, dict[str, int]] = {}
        for lvl in self.levels:
            rs = [r for r in self.results if r.level == lvl]
            counts = {s: sum(r.status == s for r in rs) for s in STATUSES}
            counts["run"] = counts[PASS] + counts[FAIL]
            out[lvl] = counts
        return out

    def level_passed(self) -> dict[str, bool]:
        from dla.conformance.loader import ALWAYS_LEVELS

        out = {}
        for lvl, n in self.level_counts().items():
            nothing_ran = n[PASS] == 0 and lvl not in ALWAYS_LEVELS
            out[lvl] = n[FAIL] == 0 and not nothing_ran
        return out

    def exercised_clauses(self) -> set[str]:
        """Clauses cited by a check that ran (not merely listed as outside the claims)."""
        return {c for r in self.results if r.status != NOT_SUPPORTED or r.probe
                for c in r.clauses()}

    def unexercised_clauses(self) -> list[str]:
        """Normative clauses of the spec no check exercised for this implementation."""
        return sort_clauses(set(CLAUSES) - NOT_PER_IMPLEMENTATION - self.exercised_clauses())

    def not_supported_reasons(self) -> dict[str, int]:
        """Why checks were not supported (the claim each fell outside), with counts; probes of
        the claims level that were refused are grouped as such, by what was probed."""
        out: dict[str, int] = {}
        for r in self.results:
            if r.status != NOT_SUPPORTED:
                continue
            if r.probe:
                reason = f"refused when probed: {r.check.removeprefix('unclaimed ')}"
            else:
                reason = r.detail.split(";")[0].removeprefix("outside the claims: ")
            out[reason] = out.get(reason, 0) + 1
        return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))

    def worst_errors(self) -> dict[str, dict[str, Any] | None]:
        """Per level, the comparison closest to (or furthest past) its bound."""
        out: dict[str, dict[str, Any] | None] = {}
        for lvl in self.levels:
            best: tuple[float, dict[str, Any]] | None = None
            for r in self.results:
                if r.level != lvl or not r.worst or r.status not in (PASS, FAIL):
                    continue
                ratio = _ratio(r.worst)
                if best is None or ratio > best[0]:
                    info = {"check": r.check, "clause": r.target, "ratio": ratio, **r.worst}
                    best = (ratio, info)
            out[lvl] = None if best is None else best[1]
        return out

    def regimes(self) -> dict[str, int]:
        """The regimes (``dla.conformance.regimes``) whose checks ran, with counts."""
        out: dict[str, int] = {}
        for r in self.results:
            if r.regime and r.status in (PASS, FAIL):
                out[r.regime] = out.get(r.regime, 0) + 1
        return dict(sorted(out.items()))

    def reproduce(self) -> str:
        """The command that repeats this run exactly."""
        if self.reproduce_text:
            return self.reproduce_text
        args = self.reproduce_args or [
            "--impl", self.implementation, "--levels", *self.levels, "--dtype", *self.dtypes,
            "--device", *self.devices, "--profile", self.profile, "--seed", str(self.seed)]
        cmd = "dla-conformance run " + " ".join(shlex.quote(a) for a in args)
        if self.search_path:
            cmd = f"PYTHONPATH={shlex.quote(self.search_path)} {cmd}"
        return cmd

    # ------------------------------------------------------------ output
    def to_json(self) -> dict[str, Any]:
        return {
            "format": REPORT_FORMAT,
            "implementation": self.implementation,
            "origin": self.origin,
            "passed": self.passed,
            "complete": self.complete and not self.interrupted,
            "interrupted": self.interrupted,
            "checks_planned": self.planned,
            "claims": self.claims.to_json(),
            "levels": self.levels,
            "level_passed": self.level_passed(),
            "level_counts": self.level_counts(),
            "dtypes": self.dtypes,
            "devices": self.devices,
            "profile": self.profile,
            "seed": self.seed,
            "reproduce": self.reproduce(),
            "versions": self.versions,
            "implementation_version": self.implementation_version,
            "date": self.date,
            "duration_s": round(self.duration_s, 3),
            "failed_clauses": sort_clauses(self.failed_clauses()),
            "unexercised_clauses": self.unexercised_clauses(),
            "not_supported": self.not_supported_reasons(),
            "regimes": self.regimes(),
            "worst_errors": self.worst_errors(),
            "results": [r.to_json() for r in self.results],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Report:
        """A report read back from its JSON (``dla-conformance report``)."""
        from dla.claims import resolve

        return cls(
            implementation=d["implementation"], claims=resolve(d["claims"]),
            levels=list(d["levels"]), dtypes=list(d["dtypes"]), devices=list(d["devices"]),
            profile=d["profile"], seed=int(d["seed"]),
            results=[ClauseResult.from_json(r) for r in d["results"]],
            duration_s=float(d.get("duration_s", 0.0)), versions=dict(d.get("versions", {})),
            complete=bool(d.get("complete", True)), origin=d.get("origin"),
            reproduce_text=d.get("reproduce"), date=str(d.get("date") or ""),
            planned=int(d.get("checks_planned") or 0),
            interrupted=bool(d.get("interrupted", False)),
            implementation_version=d.get("implementation_version"),
        )

    def table(self, *, only_failures: bool = False, show_unsupported: bool = False) -> str:
        """One row per check that ran: level | target clause | check | result | error | where.

        Checks outside the claims are summarized per level (``show_unsupported``
        lists them too); the full detail of each failure is in :meth:`failures`.
        """
        rows = [("level", "clause", "check", "result", "worst error / bound", "where")]
        for r in self.results:
            if only_failures and r.passed:
                continue
            if r.status == NOT_SUPPORTED and not show_unsupported and not r.worst:
                if not r.detail.startswith("refused"):
                    continue
            rows.append((r.level, r.target, check_label(r), _STATUS_CELL[r.status],
                         _error_cell(r), _where_cell(r)))
        if only_failures and len(rows) == 1:
            return "no failed checks"
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        widths[2] = min(widths[2], 80)
        lines = [" | ".join(_cell(c, w, i == 2) for i, (c, w) in
                            enumerate(zip(row, widths, strict=True))).rstrip() for row in rows]
        lines.insert(1, "-+-".join("-" * w for w in widths))
        return "\n".join(lines)

    def failures(self) -> str:
        """Every failed check with its full detail (empty when none failed)."""
        out = []
        for r in self.results:
            if r.passed:
                continue
            out.append(f"FAIL {r.level} {r.target} {check_label(r)}")
            out.append(f"  cites: {r.clause}")
            out.extend(f"  {line}" for line in _failure_lines(r))
        return "\n".join(out)

    def summary(self) -> str:
        counts = self.level_counts()
        n_fail = sum(n[FAIL] for n in counts.values())
        verdict = "PASSED" if self.passed else "FAILED"
        run = sum(n["run"] for n in counts.values())
        ns = sum(n[NOT_SUPPORTED] for n in counts.values())
        lines = [
            f"{self.implementation}: {verdict} ({run} checks run, {n_fail} failed, "
            f"{ns} not supported; {self.duration_s:.1f} s; profile {self.profile}, "
            f"seed {self.seed})",
        ]
        if self.interrupted:
            lines.append(f"INTERRUPTED after {len(self.results)} of {self.planned} checks: "
                         "a partial report, which certifies nothing")
        if not self.complete:
            lines.append("partial run (--levels, --dtype or --device restricted it): "
                         "not a certificate of the whole claims")
        lines.append("levels:")
        ok = self.level_passed()
        for lvl, n in counts.items():
            extra = "".join(f", {n[s]} {s.replace('_', ' ')}" for s in (NOT_SUPPORTED,
                                                                        WORKS_UNCLAIMED) if n[s])
            lines.append(f"  {lvl:<11} {'ok' if ok[lvl] else 'FAIL':<4} {n['run']} run, "
                         f"{n[PASS]} passed{extra}")
        reasons = self.not_supported_reasons()
        if reasons:
            lines.append("not supported (outside the claims):")
            lines.extend(f"  {n:4d} x {why}" for why, n in list(reasons.items())[:8])
            if len(reasons) > 8:
                lines.append(f"  ... and {len(reasons) - 8} more reasons")
        works = [r for r in self.results if r.status == WORKS_UNCLAIMED]
        if works:
            lines.append("works, not claimed: " + "; ".join(r.check for r in works))
        missing = self.unexercised_clauses()
        if missing:
            lines.append(f"clauses not exercised for this implementation ({len(missing)}): "
                         + ", ".join(missing))
        if self.regimes():
            lines.append("regimes run: " + ", ".join(f"{k} ({v})" for k, v in
                                                     self.regimes().items()))
        if n_fail:
            lines.append("failed clauses: " + ", ".join(sort_clauses(self.failed_clauses())))
        lines.append(f"reproduce: {self.reproduce()}")
        return "\n".join(lines)


_STATUS_CELL = {PASS: "PASS", FAIL: "FAIL", NOT_SUPPORTED: "n/s", WORKS_UNCLAIMED: "works*"}


def _cell(text: str, width: int, cut: bool) -> str:
    if cut and len(text) > width:
        text = text[: width - 3] + "..."
    return text.ljust(width)


def _ratio(worst: dict[str, Any]) -> float:
    return bound_ratio(
        worst.get("error"), worst.get("bound"), worst.get("rel_rms"), worst.get("rms_bound")
    )


def check_label(r: ClauseResult) -> str:
    """A check's name with its dtype and device, as the table and the HTML page show it."""
    tags = "/".join(t for t in (r.dtype, r.device) if t)
    return f"{r.check} [{tags}]" if tags else r.check


def json_default(x: Any) -> Any:
    """``json.dumps`` fallback for NumPy and torch scalars and arrays in a report."""
    if hasattr(x, "item"):
        return x.item()
    if hasattr(x, "tolist"):
        return x.tolist()
    return str(x)


def _error_cell(r: ClauseResult) -> str:
    w = r.worst
    if not w:
        return "" if r.passed else "error"
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
    first = w.get("first")
    if first is not None and list(first) != list(w["where"]):
        return f"{w.get('field')} first {tuple(first)}, worst {tuple(w['where'])}"
    return f"{w.get('field')}{tuple(w['where'])}"


def _failure_lines(r: ClauseResult) -> list[str]:
    lines = [r.detail]
    w = r.worst or {}
    for key, label in (("first", "earliest failing"), ("where", "worst")):
        if w.get(key) is None:
            continue
        got, exp = w.get(f"{key}_got"), w.get(f"{key}_expected")
        if got is None and exp is None:
            continue
        lines.append(f"{label} at {tuple(w[key])}: got {_short(got)}, expected {_short(exp)}")
    ctx = w.get("context")
    if ctx and ctx not in r.detail:
        lines.append(f"context: {ctx}")
    return lines


def _short(x: Any, n: int = 6) -> str:
    if isinstance(x, list):
        body = ", ".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in x[:n])
        return f"[{body}{', ...' if len(x) > n else ''}]"
    return f"{x:.6g}" if isinstance(x, float) else str(x)
