"""One self-contained HTML file per certification: the certificate first, then every failure.

``dla-conformance run ... --html report.html`` and ``dla-conformance report
report.json --html report.html`` write it. The page is a function of the JSON
report alone (a report is rendered through its JSON, so both commands write
the same bytes), readable offline: images are inline base64 PNG, the style
is a small inline ``<style>``, there is no script, font or external link.

What it shows:

- the certificate: implementation, origin, versions, every claims key
  (DLA-11.2, DLA-11.6), the spec version, profile and seed, whether the run
  was complete, per level, dtype and device the checks run, passed, failed,
  not supported and working though not claimed (DLA-12.12), why checks were
  not supported, the clauses never exercised, the regimes run (DLA-12.11),
  the verdict and the command that reproduces the run;
- every failed check: the clause it is attributed to and those it cites,
  its detail, and a picture where the JSON allows one: for outputs, the
  error-to-bound ratio of DLA-10.2 against readout position and a
  (readout, head) heat map of the worst batch row; for plans (DLA-6.2,
  DLA-10.4), the expected and the actual partition at every readout in the
  style of the spec's figure (Appendix B) with the reference's decision at
  the first difference; for error rules (section 9, DLA-9.13), the error
  expected against the one raised; and the command that repeats the check.

matplotlib is optional (``pip install "dla-spec[plot]"``); it is imported
only while a page is written, never by the text or JSON reports.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dla.conformance.certificate import (
    OUTCOME_COLUMNS,
    claim_text,
    completeness,
    coverage,
    verdict,
)
from dla.conformance.report import (
    FAIL,
    NOT_SUPPORTED,
    PASS,
    WORKS_UNCLAIMED,
    ClauseResult,
    Report,
    check_label,
    json_default,
    sort_clauses,
)
from dla.conformance.tolerance import bound_ratio

INSTALL_HINT = 'pip install "dla-spec[plot]" (or pip install matplotlib)'

#: Failed checks beyond this many are described in text only (a page stays a few MB).
MAX_FIGURES = 50

#: ``ratio_by_readout`` is max-pooled to at most this many entries (``tolerance._pooled``).
PROFILE_MAX = 2048

#: Kernels' chunk sizes: the output picture marks their boundaries (16 only for short rows).
CHUNK, SMALL_CHUNK = 64, 16

#: A plan picture shows at most this many readouts, around the first difference.
PLAN_ROWS = 96

DPI = 100


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed, so no page can be drawn."""


def require_matplotlib() -> None:
    """Raise :class:`PlotUnavailable` with the install hint when matplotlib cannot be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise PlotUnavailable(f"--html needs matplotlib: {INSTALL_HINT}") from exc


# ----------------------------------------------------------------- small helpers
def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)



def normalized(report: Report) -> Report:
    """``report`` read back from its own JSON: the page depends on nothing else."""
    text = json.dumps(report.to_json(), default=json_default)
    return Report.from_json(json.loads(text))


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.6g}"
    return str(x)


def _values(x: Any, n: int = 8) -> str:
    if isinstance(x, list):
        body = ", ".join(_values(v, n) for v in x[:n])
        return f"[{body}{', ...' if len(x) > n else ''}]"
    return _fmt(x)


def _ratio(w: dict[str, Any]) -> float:
    try:
        return bound_ratio(w.get("error"), w.get("bound"), w.get("rel_rms"), w.get("rms_bound"))
    except (TypeError, ValueError):
        return float("nan")


def _readout_of(pos: Any) -> int | None:
    """The readout ``t`` of an output position ``(b, t, h)``."""
    if isinstance(pos, list) and len(pos) == 3 and all(isinstance(i, int) for i in pos):
        return int(pos[1])
    return None


def _status_class(status: str) -> str:
    return {PASS: "pass", FAIL: "fail", NOT_SUPPORTED: "ns", WORKS_UNCLAIMED: "works"}[status]


_STATUS_TEXT = {PASS: "pass", FAIL: "FAIL", NOT_SUPPORTED: "not supported",
                WORKS_UNCLAIMED: "works, not claimed"}


def check_command(report: Report, r: ClauseResult) -> str:
    """The report's reproduce command restricted to ``r``'s level, dtype and device.

    The values of ``--levels``, ``--dtype`` and ``--device`` in the report's command are
    replaced (appended when absent); environment assignments in front are kept.
    """
    base = report.reproduce()
    wanted = {"--levels": [r.level], "--dtype": [r.dtype] if r.dtype else None,
              "--device": [r.device] if r.device else None}
    try:
        tokens = shlex.split(base)
    except ValueError:
        extra = " ".join(f"{k} {' '.join(v)}" for k, v in wanted.items() if v)
        return f"{base} {extra}"
    out: list[str] = []
    skipping = False
    for tok in tokens:
        if tok.startswith("--"):
            vals = wanted.pop(tok, None)
            skipping = vals is not None
            if vals is not None:
                out += [tok, *vals]
                continue
        elif skipping:
            continue
        out.append(tok)
    for key, vals in wanted.items():
        if vals:
            out += [key, *vals]
    words: list[str] = []
    in_env = True  # leading NAME=value words are environment assignments: quote the value only
    for tok in out:
        m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", tok) if in_env else None
        in_env = m is not None
        words.append(f"{m.group(1)}={shlex.quote(m.group(2))}" if m else shlex.quote(tok))
    return " ".join(words)


# ----------------------------------------------------------------- figures
def _new_figure(width: float, height: float, **margins: float) -> Any:
    """A figure outside pyplot (no global state, no backend choice), with fixed margins in
    inches (a layout engine would double the time of each picture)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    m = {"left": 0.75, "right": 0.25, "bottom": 0.55, "top": 0.45, **margins}
    fig.subplots_adjust(left=m["left"] / width, right=1 - m["right"] / width,
                        bottom=m["bottom"] / height, top=1 - m["top"] / height)
    return fig


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def _profile_step(worst: dict[str, Any], n: int) -> tuple[int, bool]:
    """Readouts per entry of the pooled per-readout profile, and whether that is exact.

    The profile is max-pooled to :data:`PROFILE_MAX` entries; the JSON records no ``T``, so
    for a profile of exactly that length the step is inferred from the failing positions.
    """
    T = worst.get("readouts", worst.get("T"))
    if isinstance(T, int) and T > 0:
        return max(1, -(-T // n)), True
    if n < PROFILE_MAX:
        return 1, True
    reach = max((t for t in (_readout_of(worst.get("first")), _readout_of(worst.get("where")))
                 if t is not None), default=0) + 1
    return max(1, -(-reach // n)), reach <= n


def _chunk_marks(ax: Any, T: int) -> str:
    """Vertical marks at the kernels' chunk boundaries (every 64 readouts, and 16 if T <= 128)."""
    step = CHUNK
    while T // step > 256:  # very long rows: every other boundary, and so on
        step *= 2
    for x in range(step, T, step):
        ax.axvline(x - 0.5, color="0.55", linewidth=0.7, linestyle=":", zorder=1)
    note = f"dotted: every {step} readouts"
    if T <= 2 * CHUNK:
        for x in range(SMALL_CHUNK, T, SMALL_CHUNK):
            if x % step:
                ax.axvline(x - 0.5, color="0.8", linewidth=0.5, linestyle=":", zorder=1)
        note += f" (light: every {SMALL_CHUNK})"
    return note


def output_ratio_figure(worst: dict[str, Any], title: str) -> tuple[bytes, int | None, str]:
    """DLA-10.2's error / bound per readout (the largest over rows and heads), log scale.

    A line at ratio 1 (the bound), marks at the chunk boundaries, and the earliest failing
    readout (``worst["first"][1]``) marked and labelled. Returns the PNG, the readout marked
    and a caption.
    """
    import numpy as np
    from matplotlib.ticker import FuncFormatter, NullFormatter

    prof = np.asarray(worst["ratio_by_readout"], dtype=np.float64)
    n = int(prof.shape[0])
    k, exact = _profile_step(worst, n)
    T = n * k
    x = np.arange(n) * k + (k - 1) / 2.0
    finite = prof[np.isfinite(prof) & (prof > 0)]
    top = float(finite.max()) if finite.size else 1.0
    floor = min(float(finite.min()) if finite.size else 1.0, 1.0) / 10.0
    y = np.where(np.isfinite(prof), prof, top * 10.0)
    y = np.where(y > 0, y, floor)
    fig = _new_figure(9.0, 3.4, left=0.95)
    ax = fig.add_subplot()
    ax.set_yscale("log")
    # plain tick labels: the default mathtext ones are parsed per label and cost most of the time
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    note = _chunk_marks(ax, T)
    ax.plot(x, y, color="0.25", linewidth=0.9, drawstyle="steps-mid", zorder=2)
    bad = prof > 1
    ax.plot(x[bad], y[bad], linestyle="none", marker="o", markersize=3, color="red", zorder=3)
    ax.axhline(1.0, color="red", linewidth=1.0, linestyle="--", zorder=2)
    ax.text(1.0, 1.0, " bound (ratio 1)", color="red", fontsize=8, va="bottom", ha="right",
            transform=ax.get_yaxis_transform())
    first = _readout_of(worst.get("first"))
    if first is None and bad.any():
        first = int(np.flatnonzero(bad)[0]) * k
    if first is not None:
        i = min(first // k, n - 1)
        only_rms = not prof[i] > 1
        label = (f"earliest failing readout t = {first}" if not only_rms else
                 f"readout t = {first} (worst position; only the RMS criterion failed)")
        ax.axvline(first, color="crimson", linewidth=1.4, zorder=4)
        ax.annotate(label, xy=(first, y[i]), xytext=(8, -14), textcoords="offset points",
                    color="crimson", fontsize=9, zorder=5,
                    ha="left" if first < 0.7 * T else "right")
    ax.set_xlim(-0.5, T - 0.5)
    ax.set_ylim(floor * 0.8, max(top, 1.0) * 4)
    ax.set_xlabel("readout t" + ("" if k == 1 else f" (max over blocks of {k} readouts"
                                 + ("" if exact else ", block size inferred") + ")"))
    ax.set_ylabel("error / bound")
    ax.set_title(title, fontsize=9)
    caption = (f"max_v |o - r| / (atol + rtol * scale) at each readout, the largest over "
               f"batch rows and heads (DLA-10.2); above 1 fails (red dots). Exact readouts are "
               f"drawn at {floor:.1e}. Chunk boundaries {note}.")
    png = _png(fig)
    return png, first, caption


def output_heatmap_figure(worst: dict[str, Any], title: str) -> tuple[bytes, str] | None:
    """error / bound over (readout, head) for the worst batch row (log10, red above the bound)."""
    import numpy as np
    from matplotlib.colors import TwoSlopeNorm

    block = worst.get("ratio_by_readout_head")
    if not isinstance(block, dict) or not block.get("rows"):
        return None
    rows = np.asarray(block["rows"], dtype=np.float64)  # [H, n]
    if rows.ndim != 2 or rows.shape[1] == 0:
        return None
    H, n = rows.shape
    k, _ = _profile_step(worst, n)
    with np.errstate(divide="ignore", invalid="ignore"):
        logr = np.log10(np.where(rows > 0, rows, np.nan))
    fin = logr[np.isfinite(logr)]
    hi = float(fin.max()) if fin.size else 1.0
    logr = np.where(np.isposinf(logr), hi + 1, logr)
    lo = float(fin.min()) if fin.size else -1.0
    norm = TwoSlopeNorm(vcenter=0.0, vmin=min(lo, -1.0), vmax=max(hi + 1, 1.0))
    import matplotlib

    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="0.88")
    fig = _new_figure(9.0, min(1.8 + 0.22 * H, 7.0), right=0.1)
    ax = fig.add_subplot()
    img = ax.imshow(np.ma.masked_invalid(logr), cmap=cmap, norm=norm, aspect="auto",
                    interpolation="nearest", origin="upper",
                    extent=(-0.5, n * k - 0.5, H - 0.5, -0.5))
    b = block.get("batch_row")
    first = worst.get("first")
    marked = ""
    if isinstance(first, list) and len(first) == 3 and first[0] == b and first[2] < H:
        from matplotlib.patches import Rectangle

        ax.add_patch(Rectangle((first[1] - 0.5 * k, first[2] - 0.5), k, 1, fill=False,
                               edgecolor="black", linewidth=1.5))
        marked = f" Black box: the earliest failing position {tuple(first)}."
    elif isinstance(first, list) and len(first) == 3:
        marked = f" The earliest failing position {tuple(first)} is in another batch row."
    ax.set_xlabel("readout t")
    ax.set_ylabel("head h")
    if H <= 16:
        ax.set_yticks(range(H))
    ax.set_title(f"{title}: batch row {b}", fontsize=9)
    cbar = fig.colorbar(img, ax=ax, shrink=0.9)
    cbar.set_label("log10(error / bound)")
    png = _png(fig)
    caption = (f"error / bound (DLA-10.2) at every (readout, head) of batch row {b}, the row of "
               f"the worst position; red is above the bound, blue below, grey exact."
               + (f" Heads beyond the first {H} are not in the report." if H == 64 else "")
               + marked)
    return png, caption


def _segments(count: int, starts: Sequence[int], labels: Sequence[int],
              t: int) -> tuple[list[tuple[int, int, int]], bool]:
    """``(first, last, label)`` of each state at readout ``t``, and whether the row was
    well-formed (malformed segments of an implementation's plan are skipped)."""
    n = min(max(int(count), 0), len(starts))
    out: list[tuple[int, int, int]] = []
    ok = n == int(count) and n >= 1
    for j in range(n):
        a = int(starts[j])
        b = int(starts[j + 1]) - 1 if j + 1 < n else t
        lab = int(labels[j]) if j < len(labels) else -1
        if 0 <= a <= b <= t:
            out.append((a, b, lab))
        else:
            ok = False
    return out, ok


def segment_text(segs: list[tuple[int, int, int]]) -> str:
    """``[0-10]:1 [11]:0`` (the notation of the spec's worked example)."""
    return " ".join(f"[{a}]:{lab}" if a == b else f"[{a}-{b}]:{lab}" for a, b, lab in segs)


def _plan_rows(side: dict[str, Any], T: int) -> list[tuple[list[tuple[int, int, int]], bool]]:
    return [_segments(side["count"][t], side["starts"][t], side["labels"][t], t)
            for t in range(T)]


def plan_figure(worst: dict[str, Any], title: str) -> tuple[bytes, int, str, str] | None:
    """The expected and the actual partition of ``[0, t]`` at every readout, side by side.

    As in the spec's figure (Appendix B): each row ``t`` is the partition at readout ``t``,
    each cell ``(t, s)`` colored by the label of the state holding ``s``, white outlines
    around segments; the first differing readout is outlined in red. Returns the PNG, the
    readout marked, the caption and the two partitions at that readout as text.
    """
    import matplotlib
    import numpy as np
    from matplotlib.collections import PatchCollection
    from matplotlib.colors import BoundaryNorm, ListedColormap
    from matplotlib.patches import Rectangle
    from matplotlib.ticker import MaxNLocator

    row = worst.get("plan_row")
    if not isinstance(row, dict):
        return None
    exp, act = row.get("expected"), row.get("actual")
    if not isinstance(exp, dict) or not isinstance(act, dict):
        return None
    T = min(len(exp.get("count", [])), len(act.get("count", [])))
    if T == 0:
        return None
    t0 = int(row.get("t", 0))
    C = max([len(s) for s in exp["starts"][:T]] + [len(s) for s in act["starts"][:T]] + [1])
    rows = {"expected": _plan_rows(exp, T), "actual": _plan_rows(act, T)}
    differ = [t for t in range(T) if (exp["count"][t], exp["starts"][t], exp["labels"][t])
              != (act["count"][t], act["starts"][t], act["labels"][t])]
    if T <= PLAN_ROWS:
        lo, hi = 0, T
    else:
        lo = max(0, min(t0 - PLAN_ROWS // 2, T - PLAN_ROWS))
        hi = lo + PLAN_ROWS
    ncol = hi
    base = matplotlib.colormaps["viridis"]
    cmap = ListedColormap(base(np.linspace(0.0, 0.95, C))).with_extremes(
        under="black", over="magenta", bad="white")
    norm = BoundaryNorm(np.arange(C + 1) - 0.5, C)
    nrows = hi - lo
    height = min(max(2.2 + 0.075 * nrows, 4.2), 9.0)
    fig = _new_figure(11.0, height, top=0.75, right=0.1, left=0.7)
    axes = fig.subplots(1, 2, sharey=True)
    lw = 0.6 if ncol <= 64 else max(0.15, 0.6 * 64 / ncol)
    img = None
    for ax, side in zip(axes, ("expected", "actual"), strict=True):
        pic = np.full((nrows, ncol), np.nan)
        rects = []
        for t in range(lo, hi):
            for a, b, lab in rows[side][t][0]:
                pic[t - lo, a:b + 1] = lab
                rects.append(Rectangle((a - 0.5, t - 0.5), b - a + 1, 1))
        img = ax.imshow(pic, cmap=cmap, norm=norm, origin="upper", aspect="auto",
                        interpolation="nearest", extent=(-0.5, ncol - 0.5, hi - 0.5, lo - 0.5))
        ax.add_collection(PatchCollection(rects, facecolor="none", edgecolor="white",
                                          linewidth=lw))
        bad_rows = [t for t in range(lo, hi) if not rows[side][t][1]]
        if bad_rows:
            ax.plot([-0.5] * len(bad_rows), bad_rows, linestyle="none", marker="x",
                    color="magenta", markersize=4, clip_on=False)
        if lo <= t0 < hi:
            ax.add_patch(Rectangle((-0.5, t0 - 0.5), t0 + 1, 1, fill=False, edgecolor="red",
                                   linewidth=1.6, zorder=5))
            ax.plot([ncol - 0.5], [t0], marker="<", color="red", markersize=6,
                    clip_on=False, zorder=5)
        others = [t for t in differ if lo <= t < hi and t != t0]
        if others:
            ax.plot([ncol - 0.5] * len(others), others, linestyle="none", marker="<",
                    color="salmon", markersize=3, clip_on=False)
        who = "reference" if side == "expected" else "implementation"
        ax.set_title(f"{side} ({who})", fontsize=10)
        ax.set_xlabel("past position s")
        ax.set_xlim(-0.5, ncol - 0.5)
        ax.set_ylim(hi - 0.5, lo - 0.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_ylabel("readout t")
    cbar = fig.colorbar(img, ax=list(axes), ticks=range(C), shrink=0.85)
    cbar.set_label("label of the state holding s at readout t")
    fig.suptitle(f"{title}\nbatch row {row.get('b')}, head {row.get('h')}: first difference "
                 f"at readout t = {t0} (red)", fontsize=9)
    png = _png(fig)
    window = "" if (lo, hi) == (0, T) else f" Readouts {lo} to {hi - 1} of the {T} recorded."
    caption = (f"Each row t is the partition of [0, t] at readout t (DLA-6.1): cells colored by "
               f"the label of the state holding s, white outlines around segments. Red box and "
               f"arrow: the first differing readout t = {t0}; light red arrows: the other "
               f"{len(differ) - (t0 in differ)} readouts that differ; magenta x: a malformed "
               f"row (skipped segments), black or magenta cells: labels out of range.{window}")
    if t0 < T:
        at = (f"expected: {segment_text(rows['expected'][t0][0]) or '(none)'}\n"
              f"actual:   {segment_text(rows['actual'][t0][0]) or '(none)'}"
              + ("" if rows["actual"][t0][1] else "   (malformed row)"))
    else:
        at = f"(readout {t0} is beyond the {T} readouts the report records)"
    return png, t0, caption, at


# ----------------------------------------------------------------- error checks
_PROBLEM = re.compile(r"^(expected \w+|the message must .*)$")


def parse_error_detail(detail: str) -> dict[str, str]:
    """The expected error and what was raised, from a DLA-10.4 / DLA-9.13 comparison message
    (``no error raised; expected ValueError`` or ``raised T: message; problem; ...``)."""
    out = {"raised": "", "message": "", "expected": "", "problems": "", "argument": ""}
    m_exp = re.findall(r"expected (ValueError|TypeError|[A-Z]\w*Error)\b", detail)
    if "no error raised" in detail:
        out["raised"] = "nothing: the call returned"
    m = re.search(r"raised ([A-Za-z_][\w.]*): (.*)$", detail, flags=re.S)
    if m:
        out["raised"] = m.group(1)
        parts = m.group(2).split("; ")
        problems: list[str] = []
        while len(parts) > 1 and _PROBLEM.match(parts[-1]):
            problems.insert(0, parts.pop())
        out["message"] = "; ".join(parts)
        out["problems"] = "; ".join(problems)
    out["expected"] = m_exp[-1] if m_exp else (out["raised"] if m else "")
    arg = re.search(r"must start with the argument (\S+) \(", detail)
    out["argument"] = arg.group(1) if arg else ""
    return out


def is_error_check(r: ClauseResult) -> bool:
    """A check of an error rule (section 9): compares the exception raised (DLA-10.4)."""
    w = r.worst or {}
    return w.get("field") == "error" or bool(
        re.search(r"\bexpected (ValueError|TypeError)\b", r.detail))


# ----------------------------------------------------------------- the page
_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif;
       margin: 1.5em auto; max-width: 72em; padding: 0 1em; color: #1b1b1b; line-height: 1.4; }
h1 { font-size: 1.5em; } h2 { font-size: 1.25em; border-bottom: 1px solid #ccc;
       margin-top: 2em; } h3 { font-size: 1.05em; margin-top: 1.4em; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.55em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
       font-size: 0.9em; }
pre { background: #f6f6f6; border: 1px solid #ddd; padding: 0.5em; white-space: pre-wrap;
       word-break: break-word; }
.verdict { font-size: 1.3em; font-weight: bold; padding: 0.2em 0.6em; display: inline-block; }
.pass, .ok { color: #13612b; } .fail { color: #b00020; } .ns { color: #666; }
.works { color: #8a5a00; } .verdict.pass { background: #e3f4e7; }
.verdict.fail { background: #fde7ea; color: #b00020; }
section.failure { border-left: 4px solid #b00020; padding-left: 1em; margin: 2em 0; }
figure { margin: 0.8em 0; } figcaption { font-size: 0.85em; color: #444; max-width: 60em; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
.muted { color: #666; font-size: 0.9em; }
"""


class _Page:
    """A tiny HTML writer: every text goes through :func:`_e`."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def add(self, raw: str) -> None:
        self.parts.append(raw)

    def tag(self, name: str, text: Any, **attrs: Any) -> None:
        self.parts.append(f"<{name}{_attrs(attrs)}>{_e(text)}</{name}>")

    def table(self, header: Sequence[str], rows: Sequence[Sequence[Any]],
              numeric: Sequence[int] = (), raw: Sequence[int] = ()) -> None:
        out = ["<table>", "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>"]
        for row in rows:
            cells = []
            for i, c in enumerate(row):
                cls = ' class="n"' if i in numeric else ""
                cells.append(f"<td{cls}>{c if i in raw else _e(c)}</td>")
            out.append("<tr>" + "".join(cells) + "</tr>")
        out.append("</table>")
        self.parts.append("\n".join(out))

    def kv(self, rows: Sequence[tuple[str, Any]], raw: Sequence[str] = ()) -> None:
        out = ["<table>"]
        for k, v in rows:
            out.append(f"<tr><th>{_e(k)}</th><td>{v if k in raw else _e(v)}</td></tr>")
        out.append("</table>")
        self.parts.append("\n".join(out))

    def text(self) -> str:
        return "\n".join(self.parts)


def _attrs(attrs: dict[str, Any]) -> str:
    return "".join(f' {k.rstrip("_").replace("_", "-")}="{_e(v)}"' for k, v in attrs.items()
                   if v is not None)


def _img(png: bytes, alt: str, caption: str, **data: Any) -> str:
    src = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    extra = _attrs({f"data_{k}": v for k, v in data.items()})
    return (f'<figure><img src="{src}" alt="{_e(alt)}"{extra}>'
            f"<figcaption>{_e(caption)}</figcaption></figure>")



def _error_cell(r: ClauseResult) -> str:
    w = r.worst
    if not w:
        return "" if r.passed else "error"
    if w.get("field") == "error":
        return "raises as required" if r.passed else "wrong or no error"
    if w.get("rel_rms") is None:
        return "exact" if r.passed else f"{w.get('field')}: {_fmt(w.get('error'))} differ"
    return f"{_fmt(w.get('error'))} / {_fmt(w.get('bound'))} (ratio {_fmt(_ratio(w))})"


def _certificate(page: _Page, report: Report) -> None:
    ok = report.passed
    page.add('<section id="certificate">')
    page.tag("h2", "Certificate")
    page.add(f'<p><span class="verdict {"pass" if ok else "fail"}">{_e(verdict(report))}'
             f"</span></p>")
    if not report.complete:
        page.tag("p", "Partial run (DLA-12.12): restricted by --levels, --dtype or --device, "
                      "so this is not a certificate of the whole claims.", class_="fail")
    v = report.versions
    page.kv([
        ("implementation", report.implementation),
        ("origin", report.origin or "unknown"),
        ("spec version", v.get("spec") or "unknown"),
        ("suite version", f"dla {v.get('dla') or 'unknown'}"),
        ("profile, seed", f"{report.profile}, {report.seed}"),
        ("run", completeness(report)),
        ("levels run", ", ".join(report.levels)),
        ("dtypes, devices", f"{', '.join(report.dtypes)}; {', '.join(report.devices)}"),
        ("duration", f"{round(report.duration_s, 3):.1f} s"),
        ("verdict", verdict(report)),
        ("reproduce", f"<code>{_e(report.reproduce())}</code>"),
    ], raw=("reproduce",))
    page.tag("h3", "Versions")
    page.table(("software", "version"), [(k, val or "not installed")
                                         for k, val in v.items()])
    page.tag("h3", "Claims (DLA-11.2, DLA-11.6)")
    page.table(("key", "value"), [(k, claim_text(val)) for k, val in
                                  report.claims.to_json().items()])
    page.tag("h3", "Checks per level, dtype and device (DLA-12.12)")
    rows = []
    totals = {s: 0 for s, _ in OUTCOME_COLUMNS}
    for row in coverage(report):
        for s, _ in OUTCOME_COLUMNS:
            totals[s] += row.counts[s]
        mark = ('<span class="ok">ok</span>' if row.level_passed else
                '<span class="fail">FAIL</span>')
        rows.append((_e(row.level), _e(row.dtype or "-"), _e(row.device or "-"),
                     *(row.counts[s] for s, _ in OUTCOME_COLUMNS), mark))
    rows.append(("<b>all</b>", "", "", *(f"<b>{totals[s]}</b>" for s, _ in OUTCOME_COLUMNS),
                 f'<b class="{"ok" if ok else "fail"}">{"PASSED" if ok else "FAILED"}</b>'))
    n = len(OUTCOME_COLUMNS)
    page.table(("level", "dtype", "device", *(label for _, label in OUTCOME_COLUMNS),
                "level verdict"), rows, numeric=range(3, 3 + n), raw=range(4 + n))
    failed = sort_clauses(report.failed_clauses())
    page.tag("h3", f"Failed clauses ({len(failed)})")
    page.tag("p", ", ".join(failed) if failed else "none", class_="fail" if failed else "ok")
    reasons = report.not_supported_reasons()
    page.tag("h3", "Not supported (outside the claims, DLA-11.2)")
    if reasons:
        page.table(("reason", "checks"), list(reasons.items()), numeric=(1,))
    else:
        page.tag("p", "none")
    works = [r for r in report.results if r.status == WORKS_UNCLAIMED]
    page.tag("h3", f"Works, not claimed ({len(works)})")
    if works:
        page.add("<ul>" + "".join(f"<li>{_e(check_label(r))}</li>" for r in works) + "</ul>")
    else:
        page.tag("p", "none")
    missing = report.unexercised_clauses()
    page.tag("h3", f"Clauses never exercised ({len(missing)})")
    page.tag("p", ", ".join(missing) if missing else "none: every clause was exercised")
    regimes = report.regimes()
    page.tag("h3", "Regimes run (DLA-12.11)")
    if regimes:
        page.table(("regime", "checks"), list(regimes.items()), numeric=(1,))
    else:
        page.tag("p", "none")
    worst = report.worst_errors()
    if any(worst.values()):
        page.tag("h3", "Closest to the bound, per level")
        page.table(("level", "check", "clause", "error / bound"), [
            (lvl, w["check"], w["clause"], _fmt(w["ratio"])) for lvl, w in worst.items() if w
        ], numeric=(3,))
    page.add("</section>")


def _numbers(page: _Page, w: dict[str, Any]) -> None:
    rows: list[tuple[str, str]] = [("field", str(w.get("field")))]
    if w.get("rel_rms") is not None:
        rows.append(("relative RMS / bound", f"{_fmt(w.get('rel_rms'))} / "
                                             f"{_fmt(w.get('rms_bound'))}"))
        rows.append(("worst error / bound", f"{_fmt(w.get('error'))} / {_fmt(w.get('bound'))}"))
    elif w.get("field") != "error" and w.get("error"):
        rows.append(("differing entries", _fmt(w.get("error"))))
    for key, label in (("first", "earliest failing"), ("where", "worst")):
        if w.get(key) is None:
            continue
        got, exp = w.get(f"{key}_got"), w.get(f"{key}_expected")
        if key == "where" and w.get("first") == w["where"] and got is None and exp is None:
            continue
        text = f"at {tuple(w[key])}"
        if got is not None or exp is not None:
            text += f": got {_values(got)}, expected {_values(exp)}"
        rows.append((label, text))
    if len(rows) > 1:
        page.kv(rows)


def _failure(page: _Page, report: Report, index: int, r: ClauseResult,
             figures: bool) -> None:
    w = r.worst or {}
    title = f"{r.level} {r.target}: {check_label(r)}"
    page.add(f'<section class="failure" id="result-{index}" data-level="{_e(r.level)}" '
             f'data-dtype="{_e(r.dtype)}" data-device="{_e(r.device)}">')
    page.tag("h3", f"FAIL {title}")
    page.kv([("attributed to", r.target or "-"), ("cites", r.clause or "-"),
             ("level", r.level), ("check", r.check), ("dtype, device",
                                                      f"{r.dtype or '-'}, {r.device or '-'}"),
             ("regime", r.regime or "-")])
    page.tag("pre", r.detail or "(no detail)")
    if is_error_check(r):
        p = parse_error_detail(r.detail)
        argument = f" ({p['argument']})" if p["argument"] else ""
        page.tag("h4", "Error rule (section 9, DLA-9.13, DLA-10.4)")
        page.kv([
            ("check", r.check),
            ("expected", f"{p['expected'] or 'an error'} whose message starts with the "
                         f"offending argument's name{argument} and cites the rule's clause id "
                         "(DLA-9.13)"),
            ("raised", p["raised"] or "?"),
            ("raised message", p["message"] or "-"),
            ("what is wrong", p["problems"] or ("no error was raised" if "no error raised"
                                                in r.detail else "-")),
        ])
    elif w:
        _numbers(page, w)
    elif r.detail.startswith("raised "):
        page.tag("p", "The implementation raised an exception where the check expected a "
                      "result (a crash).", class_="muted")
    if figures and w.get("field") == "o" and w.get("ratio_by_readout"):
        png, marked, caption = output_ratio_figure(w, title)
        page.add(_img(png, f"error / bound per readout of {r.check}", caption,
                      kind="output-ratio", first_failing=marked))
        heat = output_heatmap_figure(w, title)
        if heat is not None:
            page.add(_img(heat[0], f"error / bound per readout and head of {r.check}", heat[1],
                          kind="output-heatmap"))
    elif figures and isinstance(w.get("plan_row"), dict):
        drawn = plan_figure(w, title)
        if drawn is not None:
            png, t0, caption, at = drawn
            page.add(_img(png, f"expected and actual partitions of {r.check}", caption,
                          kind="plan", first_differing=t0))
            page.tag("h4", f"At readout t = {t0}")
            page.tag("pre", at)
    elif not figures and (w.get("ratio_by_readout") or w.get("plan_row")):
        page.tag("p", f"(no picture: only the first {MAX_FIGURES} failures are drawn)",
                 class_="muted")
    if w.get("context"):
        page.tag("h4", "The reference's decision there")
        page.tag("pre", w["context"])
    page.tag("h4", "Reproduce")
    page.tag("pre", check_command(report, r))
    page.tag("p", f"There is no per-check filter: this runs the {r.level} level in "
                  f"{r.dtype or 'every dtype'} on {r.device or 'every device'}; look for the "
                  f"check \u201c{r.check}\u201d in its output.", class_="muted")
    page.add("</section>")


def _all_checks(page: _Page, report: Report) -> None:
    page.add('<section id="checks">')
    page.tag("h2", f"All checks ({len(report.results)})")
    page.add("<details><summary>every check, in the order run</summary>")
    rows = []
    for i, r in enumerate(report.results):
        status = (f'<span class="{_status_class(r.status)}">{_e(_STATUS_TEXT[r.status])}'
                  f"</span>")
        if r.status == FAIL:
            status = f'<a href="#result-{i}">{status}</a>'
        rows.append((_e(r.level), _e(r.target), _e(check_label(r)), status,
                     _e(_error_cell(r)), _e(r.regime)))
    page.table(("level", "clause", "check", "result", "error / bound", "regime"), rows,
               raw=range(6))
    page.add("</details>")
    page.add("</section>")


def render(report: Report, *, max_figures: int = MAX_FIGURES) -> str:
    """The page of ``report`` (see the module doc); needs matplotlib when a check failed."""
    report = normalized(report)
    failures = [(i, r) for i, r in enumerate(report.results) if r.status == FAIL]
    if failures:
        require_matplotlib()
    page = _Page()
    title = f"DLA conformance: {report.implementation}: {verdict(report)}"
    page.add("<!DOCTYPE html>")
    page.add('<html lang="en">')
    page.add("<head>")
    page.add('<meta charset="utf-8">')
    page.add('<meta name="viewport" content="width=device-width, initial-scale=1">')
    page.tag("title", title)
    page.add(f"<style>{_STYLE}</style>")
    page.add("</head>")
    page.add("<body>")
    page.tag("h1", f"DLA conformance report: {report.implementation}")
    page.add('<p class="muted">Sections: <a href="#certificate">certificate</a> | '
             f'<a href="#failures">failures ({len(failures)})</a> | '
             '<a href="#checks">all checks</a></p>')
    _certificate(page, report)
    page.add('<section id="failures">')
    page.tag("h2", f"Failures ({len(failures)})")
    if failures:
        items = "".join(f'<li><a href="#result-{i}">{_e(r.level)} {_e(r.target)}: '
                        f"{_e(check_label(r))}</a></li>" for i, r in failures)
        page.add(f"<ol>{items}</ol>")
        if len(failures) > max_figures:
            page.tag("p", f"Pictures are drawn for the first {max_figures} failures; the "
                          "others are described in text.", class_="muted")
    else:
        page.tag("p", "No check failed.", class_="ok")
    for n, (i, r) in enumerate(failures):
        _failure(page, report, i, r, figures=n < max_figures)
    page.add("</section>")
    _all_checks(page, report)
    page.tag("p", f"Written by dla-conformance (dla {report.versions.get('dla') or '?'}) from "
                  f"the JSON report; self-contained, no external resources.", class_="muted")
    page.add("</body>")
    page.add("</html>")
    return page.text() + "\n"


def write(report: Report, path: Path, *, max_figures: int = MAX_FIGURES) -> Path:
    """Write :func:`render`'s page to ``path`` (parents created)."""
    text = render(report, max_figures=max_figures)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


__all__ = ["INSTALL_HINT", "PlotUnavailable", "check_command", "output_heatmap_figure",
           "output_ratio_figure", "parse_error_detail", "plan_figure", "render",
           "require_matplotlib", "write"]
