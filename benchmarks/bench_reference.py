"""Wall-clock of the float64 reference (``dla.reference``), printed as a table.

    python benchmarks/bench_reference.py [--T 2048] [--repeat 3]

The default shape is the one the reference's speed target is stated for:
``B = 1, H = 2, T = 2048, K = V = 64, C = 8`` (the fenwick policy needs
``C >= bit_length(T - 1) + 1`` levels, so its row uses that capacity instead).
Each row reports the best of ``--repeat`` runs, after one warm-up run.
This is a measurement, not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable

import numpy as np

import dla
from dla.reference import forward, make_plan
from dla.reference.policies import fenwick_capacity


def inputs(B: int, T: int, H: int, K: int, V: int, C: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    k = rng.standard_normal((B, T, H, K))
    return {
        "q": rng.standard_normal((B, T, H, K)),
        "k": k / np.linalg.norm(k, axis=-1, keepdims=True),
        "v": rng.standard_normal((B, T, H, V)),
        "g": -rng.uniform(0.0, 0.1, (B, T, H)),
        "lam": rng.uniform(0.0, 1.0, (B, T, H, C)),
        "beta": rng.uniform(0.0, 1.0, (B, T, H)),
    }


def best_of(fn: Callable[[], object], repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def cases(B: int, T: int, H: int, K: int, V: int, C: int) -> list[tuple[str, int, Callable]]:
    x = inputs(B, T, H, K, V, C)
    gla = {n: a for n, a in x.items() if n != "beta"}
    Cf = max(C, fenwick_capacity(T))
    xf = {**gla, "lam": inputs(B, T, H, K, V, Cf)["lam"]}
    cfg = dla.Config(capacity=C, tau=0.9)
    delta = dla.Config(capacity=C, tau=0.9, base="delta")
    fen = dla.Config(capacity=Cf, policy="fenwick")
    return [
        ("make_plan  dla key_cosine", C, lambda: make_plan(cfg, k=x["k"])),
        ("forward    dla gla recurrent", C, lambda: forward(**gla, config=cfg)),
        ("forward    dla gla masked", C, lambda: forward(**gla, config=cfg, masked=True)),
        ("forward    dla delta recurrent", C, lambda: forward(**x, config=delta)),
        ("forward    fenwick gla recurrent", Cf, lambda: forward(**xf, config=fen)),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--B", type=int, default=1)
    ap.add_argument("--T", type=int, default=2048)
    ap.add_argument("--H", type=int, default=2)
    ap.add_argument("--K", type=int, default=64)
    ap.add_argument("--V", type=int, default=64)
    ap.add_argument("--C", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    print(f"dla.reference, numpy {np.__version__}, python {platform.python_version()}, "
          f"{platform.machine()}; B={a.B} T={a.T} H={a.H} K={a.K} V={a.V}")
    print(f"{'case':36s} {'C':>3s} {'seconds':>9s} {'tokens/s':>10s}")
    for name, C, fn in cases(a.B, a.T, a.H, a.K, a.V, a.C):
        s = best_of(fn, a.repeat)
        print(f"{name:36s} {C:3d} {s:9.3f} {a.B * a.T * a.H / s:10.0f}")


if __name__ == "__main__":
    main()
