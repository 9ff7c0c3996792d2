"""The ``dla-conformance`` command line (also ``python -m dla.conformance``).

- ``run --impl NAME_OR_PATH [--levels ...] [--dtype ...] [--device ...]
  [--profile ci|thorough] [--seed N] [--report out.json]``: certify an
  implementation; exit 0 only when every level run passes, 1 otherwise,
  2 on usage errors. ``--html out.html`` also writes a self-contained HTML
  page (needs matplotlib), ``--certificate CERT.md`` a Markdown certificate.
- ``report report.json [--html out.html] [--certificate CERT.md]``: the same
  page and certificate from a saved JSON report; exit code as for ``run``.
- ``fixtures generate [--out DIR]`` / ``fixtures verify [--dir DIR]``: the golden
  fixtures (``dla.conformance.golden``).
- ``list``: the registered implementations and their claims.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EXIT_PASS, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def _split_words(values: Sequence[str] | None) -> list[str] | None:
    """``["plan,execute", "varlen"]`` -> ``["plan", "execute", "varlen"]``."""
    if values is None:
        return None
    return [w for v in values for w in v.replace(",", " ").split() if w]


def build_parser() -> argparse.ArgumentParser:
    from dla.conformance.checks import PROFILES
    from dla.conformance.loader import ALL_LEVELS

    p = argparse.ArgumentParser(
        prog="dla-conformance",
        description="Certify a DLA implementation against the DLA-v1 reference, clause by clause.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="certify an implementation")
    run.add_argument(
        "--impl",
        required=True,
        help="registered name (see `list`), 'module:attribute' or a module path",
    )
    run.add_argument(
        "--levels",
        nargs="+",
        metavar="LEVEL",
        help=f"levels to run (default: the claimed ones + properties): {', '.join(ALL_LEVELS)}",
    )
    run.add_argument("--dtype", nargs="+", help="dtypes to run in (default: the claimed ones)")
    run.add_argument("--device", nargs="+", help="devices to run on (default: the claimed ones)")
    run.add_argument(
        "--profile",
        default="ci",
        choices=sorted(PROFILES),
        help="ci: fast; thorough: more cases, larger shapes",
    )
    run.add_argument("--seed", type=int, default=0, help="seed of every draw (default 0)")
    run.add_argument("--threads", type=int, default=1,
                     help="torch intra-op threads during the run (default 1: the cases are "
                          "small; 0 leaves torch's setting alone)")
    run.add_argument("--report", type=Path, help="write the JSON report to this file")
    run.add_argument(
        "--only-failures", action="store_true", help="table rows of failed checks only"
    )
    _add_outputs(run)
    run.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (default: when stderr is a terminal)",
    )
    fx = sub.add_parser("fixtures", help="golden fixtures").add_subparsers(
        dest="action", required=True
    )
    gen = fx.add_parser("generate", help="regenerate the golden fixtures from the reference")
    where = gen.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", type=Path, help="output directory")
    where.add_argument("--in-place", action="store_true",
                       help="rewrite the fixtures this package reads (a development checkout)")
    ver = fx.add_parser(
        "verify", help="check the fixtures' checksums and that the reference reproduces them"
    )
    ver.add_argument("--dir", type=Path, help="fixtures directory (default: the packaged fixtures)")
    sub.add_parser("list", help="registered implementations and their claims")
    rep = sub.add_parser("report", help="write the HTML page or the certificate of a saved "
                                        "JSON report (exit 0 if it passed, 1 if not)")
    rep.add_argument("json", type=Path, metavar="REPORT_JSON",
                     help="a report written by `run --report`")
    _add_outputs(rep)
    return p


def _add_outputs(p: argparse.ArgumentParser) -> None:
    """``--html`` and ``--certificate``, shared by ``run`` and ``report``."""
    p.add_argument("--html", type=Path, metavar="OUT.html",
                   help="write a self-contained HTML report (certificate, then every failure "
                        "with pictures); needs matplotlib: pip install \"dla-spec[plot]\"")
    p.add_argument("--certificate", type=Path, metavar="CERT.md",
                   help="write a short Markdown certificate (implementation version, spec, "
                        "suite and fixtures checksum, claims, coverage, result)")


def _need_plots(args: argparse.Namespace) -> None:
    """Before any work: ``--html`` without matplotlib is a usage error (exit 2)."""
    if getattr(args, "html", None) is None:
        return
    from dla.conformance import html_report

    try:
        html_report.require_matplotlib()
    except html_report.PlotUnavailable as exc:
        raise _UsageError(str(exc)) from None


def _write_outputs(report: Any, args: argparse.Namespace, *, date: Any = None,
                   date_note: str = "end of the run") -> list[str]:
    """Write ``--html`` and ``--certificate`` if asked; the lines saying where they went."""
    lines = []
    if args.html is not None:
        from dla.conformance import html_report

        html_report.write(report, args.html)
        lines.append(f"HTML report written to {args.html}")
    if args.certificate is not None:
        from dla.conformance import certificate

        certificate.write(report, args.certificate, date=date, date_note=date_note)
        lines.append(f"certificate written to {args.certificate}")
    return lines


def _run(args: argparse.Namespace) -> int:
    from datetime import datetime, timezone

    from dla.conformance import certify

    _need_plots(args)
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    _terminate_as_interrupt()  # `timeout` sends SIGTERM: keep the results so far
    report = certify(
        args.impl,
        levels=_split_words(args.levels),
        dtype=_split_words(args.dtype),
        device=_split_words(args.device),
        profile=args.profile,
        seed=args.seed,
        progress=progress,
        threads=args.threads or None,
    )
    finished = datetime.now(timezone.utc)
    if args.report is not None:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        from dla.conformance.report import json_default

        args.report.write_text(json.dumps(report.to_json(), indent=2, default=json_default)
                               + "\n")
    written = _write_outputs(report, args, date=finished)
    try:
        print(report.table(only_failures=args.only_failures))
        print()
        failures = report.failures()
        if failures:
            print(failures)
            print()
        print(report.summary())
        if args.report is not None:
            print(f"report written to {args.report}")
        for line in written:
            print(line)
        sys.stdout.flush()
    except BrokenPipeError:  # e.g. piped into `head`: the verdict is still the exit code
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_PASS if report.passed else EXIT_FAIL


def _terminate_as_interrupt() -> None:
    """SIGTERM (e.g. from ``timeout``) stops the run like Ctrl-C: the checks that ran are
    reported, marked interrupted, instead of being lost."""
    import signal

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    if hasattr(signal, "SIGTERM"):
        signal.signal(signal.SIGTERM, stop)


def _report(args: argparse.Namespace) -> int:
    """``report REPORT_JSON``: the summary, and ``--html`` / ``--certificate`` from the JSON."""
    from datetime import datetime, timezone

    from dla.conformance.report import Report

    _need_plots(args)
    try:
        data = json.loads(args.json.read_text())
    except OSError as exc:
        raise _UsageError(f"report: cannot read {args.json}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise _UsageError(f"report: {args.json} is not JSON: {exc}") from None
    fmt = data.get("format", "") if isinstance(data, dict) else ""
    if not str(fmt).startswith("dla-conformance-report/"):
        raise _UsageError(f"report: {args.json} is not a dla-conformance report "
                          f"(format {fmt!r})")
    try:
        report = Report.from_json(data)
    except (KeyError, TypeError) as exc:
        raise _UsageError(f"report: {args.json} lacks {exc} (not a complete report)") from None
    if data.get("date"):
        date = datetime.fromisoformat(str(data["date"]).replace("Z", "+00:00"))
        note = "of the run, from the report"
    else:
        date = datetime.fromtimestamp(args.json.stat().st_mtime, timezone.utc)
        note = "when the JSON report was written: the report records no date"
    written = _write_outputs(report, args, date=date, date_note=note)
    print(report.summary())
    for line in written:
        print(line)
    return EXIT_PASS if report.passed else EXIT_FAIL



def _golden() -> Any:
    import importlib

    try:
        return importlib.import_module("dla.conformance.golden")
    except ImportError as exc:
        raise _UsageError(
            f"the golden fixtures module dla.conformance.golden is not available: {exc}"
        ) from exc


def _fixtures(args: argparse.Namespace) -> int:
    golden = _golden()
    if args.action == "generate":
        target = args.out if args.out is not None else golden.default_dir()
        paths = golden.generate(target)
        print(f"wrote {len(paths)} files under {target}")
        return EXIT_PASS
    result = golden.verify(args.dir)
    print(result)
    return EXIT_PASS if result.ok else EXIT_FAIL


def _list() -> int:
    from dla.conformance.loader import LoadError, load
    from dla.impls import REGISTRY

    for name, module in REGISTRY.items():
        try:
            claims = load(name).claims
        except LoadError as exc:
            print(f"{name} ({module}): unavailable: {exc}")
            continue
        print(f"{name} ({module})")
        for key, value in claims.to_json().items():
            if isinstance(value, list):
                shown = ", ".join(map(str, value))
            elif isinstance(value, dict):
                shown = "; ".join(f"{k}: {v}" for k, v in value.items()) or "-"
            else:
                shown = str(value)
            print(f"    {key}: {shown}")
    return EXIT_PASS


class _UsageError(Exception):
    pass


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (0 pass, 1 failure, 2 usage error)."""
    from dla.conformance.loader import LoadError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    # Like `python -m`, the command finds modules in the current directory, so
    # `dla-conformance run --impl my_adapter` works from where my_adapter.py lives.
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "fixtures":
            return _fixtures(args)
        if args.command == "report":
            return _report(args)
        return _list()
    except (LoadError, ValueError, _UsageError) as exc:
        print(f"dla-conformance: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
