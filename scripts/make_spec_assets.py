"""Generate the spec's worked example and figure from the float64 reference.

    python scripts/make_spec_assets.py            # writes spec/worked_example.md,
                                                  # the block in spec/SPEC.md, spec/partition.png
    python scripts/make_spec_assets.py --check    # exit 1 if the committed text is stale

Everything printed comes from ``dla.reference`` (``make_plan``,
``plan_with_margins``, ``forward``); the script only formats it, and checks
the few quantities it derives for display (merge costs, the merged pair, one
readout by hand) against the reference. Numbers use 7 significant digits so
the text is identical on every machine. The worked example illustrates
DLA-3.1 to DLA-3.5, DLA-4.1, DLA-4.2, DLA-5.3 and DLA-6.3.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dla import Config, Plan
from dla.reference import forward, make_plan, plan_with_margins

ROOT = Path(__file__).resolve().parents[1]
SPEC_DIR = ROOT / "spec"
BEGIN = "<!-- worked-example:begin -->"
END = "<!-- worked-example:end -->"

# ----------------------------------------------------------------- the worked example inputs
#: External scores on the dyadic grid (multiples of 1/4), exact in every float dtype.
SCORES = (0.5, 0.75, 0.25, 1.0, 0.75, 0.5, 1.0, 0.25)
TAU = 0.5
K_ROWS = ((1, 0), (0, 1), (1, 0), (1, 1), (0, 1), (1, 0), (0, 1), (1, -1))
V_ROWS = ((1, 0), (0, 1), (1, 1), (2, 0), (0, 2), (1, -1), (1, 0), (0, 1))
Q_ROW = (1, 1)
DLA_CAPACITY = 3
FENWICK_CAPACITY = 4


@dataclass(frozen=True)
class Example:
    """The inputs of one worked example, in the ``[B, T, H, ...]`` layout with ``B = H = 1``."""

    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    g: np.ndarray
    scores: np.ndarray

    @property
    def T(self) -> int:
        return int(self.q.shape[1])

    def lam(self, C: int) -> np.ndarray:
        """Readout weights ``lam_t[l] = 2 ** -l`` at every ``t``."""
        return np.broadcast_to(0.5 ** np.arange(C), (1, self.T, 1, C)).copy()


def example_inputs() -> Example:
    T = len(SCORES)
    k = np.asarray(K_ROWS, np.float64)[None, :, None, :]
    v = np.asarray(V_ROWS, np.float64)[None, :, None, :]
    q = np.broadcast_to(np.asarray(Q_ROW, np.float64), (1, T, 1, 2)).copy()
    g = np.full((1, T, 1), np.log(0.5))  # exp(g_t) = 1/2 exactly
    s = np.asarray(SCORES, np.float64)[None, :, None]
    return Example(q=q, k=k, v=v, g=g, scores=s)


def example_config(policy: str, capacity: int) -> Config:
    return Config(capacity=capacity, tau=TAU, score="external", policy=policy, base="gla",
                  scale=1.0)


# ----------------------------------------------------------------- formatting
def num(x: float) -> str:
    """7 significant digits; rounding noise below 1e-12 prints as 0."""
    x = float(x)
    if abs(x) < 1e-12:
        x = 0.0
    return f"{x:.7g}"


def vec(xs) -> str:
    return "(" + ", ".join(num(x) for x in xs) + ")"


def segments(plan: Plan, t: int) -> list[tuple[int, int, int]]:
    """``(first, last, label)`` of every state at readout ``t`` (row 0, head 0)."""
    n = int(plan.count[0, t, 0])
    starts = [int(s) for s in plan.starts[0, t, 0, :n]]
    ends = [*starts[1:], t + 1]
    pairs = enumerate(zip(starts, ends, strict=True))
    return [(a, b - 1, int(plan.labels[0, t, 0, j])) for j, (a, b) in pairs]


def seg_text(segs: list[tuple[int, int, int]]) -> str:
    parts = [f"[{a}]:{lab}" if a == b else f"[{a}-{b}]:{lab}" for a, b, lab in segs]
    return " ".join(parts)


def info_of(segs: list[tuple[int, int]], iota: np.ndarray) -> list[float]:
    """DLA-3.2: the information of each segment, the sum of its tokens' scores."""
    return [float(iota[a : b + 1].sum()) for a, b in segs]


# ----------------------------------------------------------------- the DLA table
def _merge_cell(plan: Plan, iota: np.ndarray, t: int, margin: float) -> tuple[str, str]:
    """The information before the merge and the merge decision at step ``t`` (DLA-3.4)."""
    prev = [(a, b) for a, b, _ in segments(plan, t - 1)] if t else []
    if bool(plan.boundary[0, t, 0]):
        before = [*prev, (t, t)]
    else:
        before = [*prev[:-1], (prev[-1][0], t)]
    info = info_of(before, iota)
    if len(before) <= DLA_CAPACITY:
        return vec(info), "none"
    cost = [info[i] + info[i + 1] for i in range(len(info) - 1)]
    best = int(np.argmin(cost))
    after = [(a, b) for a, b, _ in segments(plan, t)]
    expected = [*before[:best], (before[best][0], before[best + 1][1]), *before[best + 2 :]]
    assert after == expected, f"t={t}: reference merged {after}, cheapest pair gives {expected}"
    ranked = sorted(cost)
    assert abs((ranked[1] - ranked[0]) - margin) < 1e-12, "merge margin disagrees with DLA-6.3"
    ties = [f"({i}, {i + 1})" for i, c in enumerate(cost) if c == cost[best] and i != best]
    tie = f"; exact tie with pair {', '.join(ties)}, the older pair wins" if ties else ""
    return vec(info), f"costs {vec(cost)}: pair ({best}, {best + 1}){tie}; margin {num(margin)}"


def dla_table(ex: Example) -> tuple[str, Plan, np.ndarray]:
    cfg = example_config("dla", DLA_CAPACITY)
    plan, margins = plan_with_margins(cfg, scores=ex.scores)
    o, _ = forward(ex.q, ex.k, ex.v, ex.g, ex.lam(DLA_CAPACITY), cfg, scores=ex.scores)
    iota = ex.scores[0, :, 0]
    rows = [
        "| t | iota_t | boundary (margin) | information before merge | merge (DLA-3.4) "
        "| partition at readout t, [segment]:label | o_t |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in range(ex.T):
        bnd = "yes" if plan.boundary[0, t, 0] else "no"
        bm = margins.boundary[0, t, 0]
        bcell = f"{bnd} (forced)" if np.isinf(bm) else f"{bnd} ({num(bm)})"
        info, merge = _merge_cell(plan, iota, t, float(margins.merge[0, t, 0]))
        rows.append(f"| {t} | {num(iota[t])} | {bcell} | {info} | {merge} | "
                    f"{seg_text(segments(plan, t))} | {vec(o[0, t, 0])} |")
    return "\n".join(rows), plan, o


def _decay(n: int) -> str:
    return "" if n == 0 else f"2^-{n} * "


def hand_check(ex: Example, plan: Plan, o: np.ndarray, t: int) -> str:
    """One readout recomputed from the masked form (DLA-5.4) segment by segment."""
    G = np.cumsum(ex.g[0, :, 0])
    lam = ex.lam(DLA_CAPACITY)[0, t, 0]
    q = ex.q[0, t, 0]
    lines, total = [], np.zeros(2)
    for a, b, lab in segments(plan, t):
        part = sum(np.exp(G[t] - G[s]) * (q @ ex.k[0, s, 0]) * ex.v[0, s, 0]
                   for s in range(a, b + 1))
        terms = " + ".join(f"{_decay(t - s)}{num(q @ ex.k[0, s, 0])} * {vec(ex.v[0, s, 0])}"
                           for s in range(a, b + 1))
        lines.append(f"- segment [{a}-{b}], label {lab}, weight lam_{t}[{lab}] = {num(lam[lab])}: "
                     f"q_{t}^T S = {terms} = {vec(part)}")
        total = total + lam[lab] * part
    assert np.allclose(total, o[0, t, 0], rtol=0, atol=1e-12), "hand check disagrees with forward"
    lines.append(f"- o_{t} = sum of weight * q^T S = {vec(total)}, as in the table.")
    return "\n".join(lines)


def _check_prose(plan: Plan) -> None:
    """The sentences under the table describe these decisions; fail loudly if they change."""
    boundary = [bool(b) for b in plan.boundary[0, :, 0]]
    assert boundary == [True, True, False, True, True, False, True, False], boundary
    assert [int(c) for c in plan.count[0, :, 0]] == [1, 2, 2, 3, 3, 3, 3, 3]
    assert [int(s) for s in plan.starts[0, 6, 0]] == [0, 3, 6], "t = 6 must merge pair (1, 2)"


# ----------------------------------------------------------------- the Fenwick table
def fenwick_table(ex: Example) -> str:
    cfg = example_config("fenwick", FENWICK_CAPACITY)
    plan = make_plan(cfg, scores=ex.scores)
    o, _ = forward(ex.q, ex.k, ex.v, ex.g, ex.lam(FENWICK_CAPACITY), cfg, scores=ex.scores)
    rows = ["| t | t in binary | partition at readout t, [segment]:level | o_t |",
            "|---|---|---|---|"]
    for t in range(ex.T):
        rows.append(f"| {t} | {t:03b} | {seg_text(segments(plan, t))} | {vec(o[0, t, 0])} |")
    return "\n".join(rows)


def fenwick_capacity_error(ex: Example) -> str:
    try:
        make_plan(example_config("fenwick", DLA_CAPACITY), scores=ex.scores)
    except ValueError as exc:
        return f"`ValueError: {exc}`"
    raise AssertionError("the fenwick policy accepted C = 3 for T = 8 (DLA-4.2)")


# ----------------------------------------------------------------- the text
def inputs_table(ex: Example) -> str:
    rows = ["| t | scores_t | k_t | v_t | q_t | g_t |", "|---|---|---|---|---|---|"]
    for t in range(ex.T):
        rows.append(f"| {t} | {num(ex.scores[0, t, 0])} | {vec(ex.k[0, t, 0])} | "
                    f"{vec(ex.v[0, t, 0])} | {vec(ex.q[0, t, 0])} | ln(1/2) |")
    return "\n".join(rows)


def worked_example_text() -> str:
    """The Markdown of the worked example, computed by the reference."""
    ex = example_inputs()
    dla_rows, plan, o = dla_table(ex)
    _check_prose(plan)
    return f"""\
Generated by `python scripts/make_spec_assets.py` from `dla.reference`; do not edit by hand.

Inputs: `B = H = 1`, `T = 8`, `K = V = 2`, `tau = {num(TAU)}`, `score = "external"`,
`base = "gla"`, `scale = 1`. The scores are multiples of 1/4 (exact in every
float dtype, DLA-10.3). `g_t = ln(1/2)`, so every transition halves every state
(DLA-5.1) and `exp(G_t - G_s) = 2^-(t-s)`. Readout weights `lam_t[l] = 2^-l`
(label 0, the newest state or level 0, gets weight 1).

{inputs_table(ex)}

**Policy `dla`, `C = {DLA_CAPACITY}`.** Pairs are numbered from the oldest
(pair `(i, i+1)` joins slots `i` and `i+1`); the information column lists the
`C + 1` or fewer states after step 3 of DLA-3.3, oldest first.

{dla_rows}

What the table shows: token 0 opens the first state unconditionally
(DLA-3.1); tokens 2 and 7 stay in the newest state (`iota_t <= tau`), and so
does token 5, whose score equals `tau` (the boundary test is strict); token 4
opens a fourth state and the cheapest pair `(0, 1)` merges; at token 6 pairs
`(1, 2)` and `(2, 3)` cost exactly the same, and the tie-break merges the
older pair `(1, 2)` (DLA-3.4), with merge margin 0 (DLA-6.3).

Readout at `t = 4` by hand (DLA-5.3 in the masked form of DLA-5.4):

{hand_check(ex, plan, o, 4)}

**Policy `fenwick`, same inputs, `C = {FENWICK_CAPACITY}`.** The partition depends on
positions only (DLA-4.1); the label is the level `bit_length(t XOR s)`.
Position 7 needs `C >= bit_length(7) + 1 = 4` (DLA-4.2); with `C = 3` the
reference refuses the call:
{fenwick_capacity_error(ex)}

{fenwick_table(ex)}
"""


def replace_block(spec_text: str, block: str) -> str:
    """``spec_text`` with the text between the worked-example markers replaced by ``block``."""
    i, j = spec_text.find(BEGIN), spec_text.find(END)
    if i < 0 or j < i:
        raise ValueError(f"SPEC.md: markers {BEGIN!r} ... {END!r} not found in order")
    return spec_text[: i + len(BEGIN)] + "\n" + block + spec_text[j:]


def extract_block(spec_text: str) -> str:
    i, j = spec_text.find(BEGIN), spec_text.find(END)
    if i < 0 or j < i:
        raise ValueError(f"SPEC.md: markers {BEGIN!r} ... {END!r} not found in order")
    return spec_text[i + len(BEGIN) + 1 : j]


# ----------------------------------------------------------------- the figure
FIG_T = 32
FIG_CAPACITY = 6
FIG_SEED = 5


def figure_scores() -> np.ndarray:
    """A fixed-seed score sequence on the grid of 1/8: mostly calm, with occasional transitions."""
    rng = np.random.default_rng(FIG_SEED)
    calm = rng.integers(0, 4, FIG_T) / 8.0  # 0 .. 0.375
    jump = rng.random(FIG_T) < 0.3
    high = rng.integers(5, 13, FIG_T) / 8.0  # 0.625 .. 1.5
    return np.where(jump, high, calm)[None, :, None]


def partition_image(plan: Plan) -> np.ndarray:
    """``label[t, s]`` of the state holding ``s`` at readout ``t`` (NaN for ``s > t``)."""
    T = plan.count.shape[1]
    img = np.full((T, T), np.nan)
    for t in range(T):
        for a, b, lab in segments(plan, t):
            img[t, a : b + 1] = lab
    return img


def make_figure(path: Path) -> Path:
    """spec/partition.png: the partition of the past at every readout, dla next to fenwick."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import BoundaryNorm, ListedColormap
    from matplotlib.patches import Rectangle

    scores = figure_scores()
    iota = scores[0, :, 0]
    fig, axes = plt.subplots(1, 3, figsize=(12, 5.6), sharey=True, constrained_layout=True,
                             gridspec_kw={"width_ratios": [1.1, 5, 5]})
    ax_iota, panels = axes[0], axes[1:]
    ax_iota.barh(np.arange(FIG_T), iota, height=0.8, color="0.45")
    ax_iota.axvline(TAU, color="red", linewidth=1)
    ax_iota.set_xlabel("iota_t")
    ax_iota.set_ylabel("readout t")
    ax_iota.set_title("scores (red: tau)", fontsize=10)
    cmap = ListedColormap(plt.get_cmap("viridis")(np.linspace(0.0, 0.95, FIG_CAPACITY)))
    norm = BoundaryNorm(np.arange(FIG_CAPACITY + 1) - 0.5, FIG_CAPACITY)
    for ax, policy in zip(panels, ("dla", "fenwick"), strict=True):
        plan = make_plan(Config(capacity=FIG_CAPACITY, tau=TAU, score="external", policy=policy),
                         scores=scores)
        img = ax.imshow(partition_image(plan), cmap=cmap, norm=norm, origin="upper", aspect="auto",
                        interpolation="nearest", extent=(-0.5, FIG_T - 0.5, FIG_T - 0.5, -0.5))
        for t in range(FIG_T):
            for a, b, _ in segments(plan, t):
                ax.add_patch(Rectangle((a - 0.5, t - 0.5), b - a + 1, 1, fill=False,
                                       edgecolor="white", linewidth=0.6))
        if policy == "dla":
            for t in np.flatnonzero(plan.boundary[0, :, 0] & (iota > TAU)):
                ax.plot(t, t, marker=">", color="red", markersize=3.5, linestyle="none")
        title = (f"dla (C = {FIG_CAPACITY}, tau = {TAU}): label = recency rank; red: boundary"
                 if policy == "dla" else f"fenwick (C = {FIG_CAPACITY}): label = level")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("past position s")
        ax.set_xticks(range(0, FIG_T, 4))
    ax_iota.set_yticks(range(0, FIG_T, 4))
    ax_iota.set_ylim(FIG_T - 0.5, -0.5)
    cbar = fig.colorbar(img, ax=panels, ticks=range(FIG_CAPACITY), shrink=0.8)
    cbar.set_label("label of the state holding s at readout t")
    fig.suptitle(f"Partition of [0, t] at every readout t, both policies on the same external "
                 f"scores (grid of 1/8, seed {FIG_SEED})", fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return path


# ----------------------------------------------------------------- entry point
def write_assets(spec_dir: Path, *, figure: bool = True) -> list[Path]:
    """Write worked_example.md, the block in SPEC.md and (optionally) partition.png."""
    text = worked_example_text()
    example = spec_dir / "worked_example.md"
    example.write_text(text)
    spec = spec_dir / "SPEC.md"
    spec.write_text(replace_block(spec.read_text(), text))
    written = [example, spec]
    if figure:
        written.append(make_figure(spec_dir / "partition.png"))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec-dir", type=Path, default=SPEC_DIR)
    parser.add_argument("--check", action="store_true",
                        help="only check that the committed worked example is up to date")
    args = parser.parse_args(argv)
    if args.check:
        text = worked_example_text()
        spec = (args.spec_dir / "SPEC.md").read_text()
        file_text = (args.spec_dir / "worked_example.md").read_text()
        stale = file_text != text or extract_block(spec) != text
        print("worked example is stale; run scripts/make_spec_assets.py" if stale else "up to date")
        return 1 if stale else 0
    for p in write_assets(args.spec_dir):
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
