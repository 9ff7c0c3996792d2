"""A short Markdown certificate of a certification, for a kernel repository to commit.

``dla-conformance run ... --certificate CERT.md`` (or ``dla-conformance report
report.json --certificate CERT.md``) writes it: the implementation and its
version (git commit of the work tree its file lives in, else its package's
version), the spec, suite and fixtures it was certified against, its claims
(DLA-11.2, DLA-11.6), the coverage (checks per level, dtype and device with
the four outcomes of DLA-12.12, clauses not exercised, regimes of DLA-12.11),
the date, the result and the command that reproduces the run.

Nothing here imports matplotlib or torch: the certificate is plain text.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dla.conformance.report import (
    FAIL,
    NOT_SUPPORTED,
    PASS,
    WORKS_UNCLAIMED,
    Report,
    sort_clauses,
)

#: The outcome columns of DLA-12.12, in the order reports show them.
OUTCOME_COLUMNS = (("run", "run"), (PASS, "passed"), (FAIL, "failed"),
                   (NOT_SUPPORTED, "not supported"), (WORKS_UNCLAIMED, "works, not claimed"))


@dataclass(frozen=True)
class CoverageRow:
    """The checks of one level in one dtype on one device, counted by outcome (DLA-12.12)."""

    level: str
    dtype: str
    device: str
    counts: dict[str, int]
    level_passed: bool


def coverage(report: Report) -> list[CoverageRow]:
    """Per level (in report order), dtype and device: the checks run, passed, failed, not
    supported and working though not claimed; ``level_passed`` is the level's verdict."""
    ok = report.level_passed()
    rows: list[CoverageRow] = []
    for lvl in report.levels:
        keys: dict[tuple[str, str], dict[str, int]] = {}
        for r in report.results:
            if r.level != lvl:
                continue
            c = keys.setdefault((r.dtype, r.device), {s: 0 for s, _ in OUTCOME_COLUMNS})
            c[r.status] += 1
            if r.status in (PASS, FAIL):
                c["run"] += 1
        if not keys:  # a level that listed no check at all still appears
            keys[("", "")] = {s: 0 for s, _ in OUTCOME_COLUMNS}
        rows.extend(CoverageRow(lvl, dt, dv, c, ok.get(lvl, False))
                    for (dt, dv), c in keys.items())
    return rows


def verdict(report: Report) -> str:
    """``PASSED`` or ``FAILED`` (DLA-12.12: a level passes iff none of its checks fails and,
    when claimed, one passed), with ``(partial run)`` when ``--levels``, ``--dtype`` or
    ``--device`` restricted it."""
    word = "PASSED" if report.passed else "FAILED"
    return word if report.complete else f"{word} (partial run)"


def completeness(report: Report) -> str:
    """Whether the run covered the whole claims (DLA-12.12: only a complete run certifies)."""
    if report.complete:
        return "complete: every claimed level, dtype and device"
    return ("partial: restricted by --levels, --dtype or --device; "
            "not a certificate of the whole claims")


def claim_text(value: Any) -> str:
    """A claims value on one line: lists comma-separated, mappings as compact JSON."""
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value)) if value else "(none)"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True) if value else "(no limit)"
    return str(value)


# ----------------------------------------------------------------- provenance
@dataclass(frozen=True)
class ImplVersion:
    """Where the implementation's code comes from: a git commit (and whether the work tree had
    uncommitted changes to tracked files), a package version, or nothing known."""

    kind: str  # "git", "package" or "unknown"
    value: str  # the commit, "name version", or "unknown"
    dirty: bool = False
    path: str | None = None  # the origin file, relative to the work tree's top for "git"

    def text(self) -> str:
        if self.kind == "git":
            state = "dirty: uncommitted changes" if self.dirty else "clean"
            return f"git commit {self.value} ({state})"
        if self.kind == "package":
            return f"package {self.value}"
        return "unknown"


def _git(directory: str, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", directory, *args], capture_output=True, text=True,
                             timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _top_module(report: Report) -> str | None:
    """The top-level module of the implementation (``my_pkg`` of ``my_pkg.adapter:impl``)."""
    name = report.implementation
    try:
        from dla.impls import REGISTRY

        name = REGISTRY.get(name, name)
    except ImportError:
        pass
    top = name.split(":")[0].split(".")[0].strip()
    return top if top.isidentifier() else None


def _package_version(top: str | None) -> str | None:
    from importlib import metadata

    if not top:
        return None
    dists = metadata.packages_distributions().get(top, [])
    for dist in [*dists, top]:
        try:
            return f"{dist} {metadata.version(dist)}"
        except metadata.PackageNotFoundError:
            continue
    return None


def implementation_version(report: Report) -> ImplVersion:
    """The commit of the git work tree holding the implementation's origin file
    (``git rev-parse HEAD``, and whether tracked files have uncommitted changes), else the
    version of the distribution of its top module (``importlib.metadata``), else unknown.

    Read when the certificate is written, from the files on this machine.
    """
    origin = report.origin
    if origin and os.path.exists(origin):
        directory = os.path.dirname(os.path.abspath(origin))
        if _git(directory, "rev-parse", "--is-inside-work-tree") == "true":
            head = _git(directory, "rev-parse", "HEAD")
            if head:
                status = _git(directory, "status", "--porcelain", "--untracked-files=no")
                top = _git(directory, "rev-parse", "--show-toplevel")
                rel = os.path.relpath(os.path.abspath(origin), top) if top else origin
                return ImplVersion("git", head, dirty=bool(status), path=rel)
    pkg = _package_version(_top_module(report))
    if pkg:
        return ImplVersion("package", pkg, path=origin)
    return ImplVersion("unknown", "unknown", path=origin)


def fixtures_index() -> Path:
    """The installed golden fixtures' index (DLA-12.7): ``dla.fixtures``' ``index.json``."""
    from dla.conformance.golden import default_dir

    return Path(default_dir()) / "index.json"


def sha256_of(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


# ----------------------------------------------------------------- the Markdown
def _cell(text: Any) -> str:
    """A Markdown table cell: pipes escaped, one line."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out.extend("| " + " | ".join(_cell(c) for c in row) + " |" for row in rows)
    return out


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def render(report: Report, *, date: datetime | None = None,
           date_note: str = "end of the run") -> str:
    """The certificate of ``report`` as Markdown.

    ``date`` (default: now) is shown in UTC with ``date_note`` saying what it is the date of.
    """
    import dla

    date = (date or utc_now()).astimezone(timezone.utc)
    impl = implementation_version(report)
    index = fixtures_index()
    checksum = sha256_of(index)
    spec = report.versions.get("spec") or dla.SPEC_VERSION
    suite = report.versions.get("dla") or dla.__version__
    result = verdict(report)
    failed = sort_clauses(report.failed_clauses())
    lines = [f"# DLA conformance certificate: {report.implementation}", ""]
    summary = f"**Result: {result}**, {completeness(report)}."
    if failed:
        summary += " Failed clauses: " + ", ".join(failed) + "."
    lines += [summary, ""]
    origin = impl.path or report.origin or "unknown"
    versions = ", ".join(f"{k} {v}" for k, v in report.versions.items()
                         if v and k not in ("dla", "spec"))
    lines += _table(("field", "value"), [
        ("implementation", f"`{report.implementation}`"),
        ("origin", f"`{origin}`"),
        ("implementation version", report.implementation_version or impl.text()),
        ("spec version", spec),
        ("suite version", f"dla {suite}"),
        ("fixtures checksum", f"sha256 `{checksum or 'unavailable'}` of `fixtures/index.json`"),
        ("profile, seed", f"{report.profile}, {report.seed}"),
        ("levels run", ", ".join(report.levels)),
        ("dtypes, devices", f"{', '.join(report.dtypes)}; {', '.join(report.devices)}"),
        ("date (UTC)", f"{date.strftime('%Y-%m-%dT%H:%M:%SZ')} ({date_note})"),
        ("result", result),
        ("software", versions or "unknown"),
    ])
    lines += ["", "## Claims (DLA-11.2, DLA-11.6)", ""]
    lines += _table(("key", "value"), [(k, claim_text(v)) for k, v in
                                      report.claims.to_json().items()])
    lines += ["", "## Coverage (DLA-12, outcomes of DLA-12.12)", ""]
    header = ("level", "dtype", "device", *(label for _, label in OUTCOME_COLUMNS), "level")
    lines += _table(header, [
        (row.level, row.dtype or "-", row.device or "-",
         *(row.counts[s] for s, _ in OUTCOME_COLUMNS), "ok" if row.level_passed else "FAIL")
        for row in coverage(report)])
    missing = report.unexercised_clauses()
    lines += ["", f"Clauses not exercised ({len(missing)}): "
              + (", ".join(missing) if missing else "none") + "."]
    regimes = report.regimes()
    lines += ["", "Regimes run (DLA-12.11): " + (", ".join(f"{k} ({v})" for k, v in
                                                           regimes.items()) or "none") + "."]
    reasons = report.not_supported_reasons()
    if reasons:
        lines += ["", "Not supported (outside the claims): "
                  + "; ".join(f"{why} ({n})" for why, n in reasons.items()) + "."]
    lines += ["", "## Reproduce", "", "```bash", report.reproduce(), "```", ""]
    return "\n".join(lines)


def write(report: Report, path: Path, *, date: datetime | None = None,
          date_note: str = "end of the run") -> Path:
    """Write :func:`render`'s certificate to ``path`` (parents created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(report, date=date, date_note=date_note))
    return path
