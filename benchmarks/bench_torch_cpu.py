"""Benchmark of ``torch_cpu`` (a script printing Markdown tables; not a test).

Compares, over ``T``:

* ``torch_cpu`` DLA (``C`` states) vs the float64 NumPy reference, same inputs;
* ``torch_cpu`` DLA vs ``torch_cpu`` with ``C = 1`` (single-state gated linear
  attention through the same code), the overhead of multi-state memory;
* the chunk size: float32 error against the reference and speed.

Scores are external, uniform in ``[0, 1)``, so ``tau`` sets the boundary rate
(``tau = 0.9``: about 10% of tokens open a state; ``tau = 0.99``: about 1%).
Times are the best of ``--repeats`` runs (after one warm-up call). With
``--threads 1`` (the default) torch and NumPy's BLAS use one thread and the
time is process CPU time: on a machine shared with other jobs that is what
the run would take alone. With ``--threads N > 1`` both torch
(``torch.set_num_threads``) and NumPy's BLAS (the thread variables, set
before NumPy loads) get ``N`` threads and the time is wall-clock time, which
only means something on a quiet machine: the load average (1 minute) is
printed before and after each table.
Peak memory is measured in a fresh subprocess per cell: the peak resident
set size (Linux ``VmHWM``, reset just before the call) minus the resident
size after the inputs were built, so it counts everything the call
allocates (NumPy or torch).

Usage::

    python benchmarks/bench_torch_cpu.py [--T 512 2048 8192] [--ref-max-T 2048] [--repeats 3]
        [--threads 1] [--only speed]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable

# the thread count must reach NumPy's BLAS before NumPy loads, so it is read here
_THREADS = sys.argv[sys.argv.index("--threads") + 1] if "--threads" in sys.argv[:-1] else "1"
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, _THREADS)

import numpy as np  # noqa: E402  (after the thread variables)
import torch  # noqa: E402

from dla import Config  # noqa: E402
from dla.impls import torch_cpu as tc  # noqa: E402
from dla.reference import forward as ref_forward  # noqa: E402


def inputs(T: int, C: int, *, B: int = 1, H: int = 4, K: int = 64, V: int = 64,
           seed: int = 0, base: str = "gla") -> dict[str, np.ndarray]:
    """Keys of norm about 1 (so ``beta |k|^2 <= 2`` keeps the delta rule stable)."""
    rng = np.random.default_rng(seed)
    extra = {"beta": rng.uniform(0.0, 1.0, (B, T, H))} if base == "delta" else {}
    return extra | {
        "q": rng.standard_normal((B, T, H, K)),
        "k": rng.standard_normal((B, T, H, K)) / np.sqrt(K),
        "v": rng.standard_normal((B, T, H, V)),
        "g": -rng.uniform(0.0, 0.1, (B, T, H)),
        "lam": rng.uniform(0.0, 1.0, (B, T, H, C)),
        "scores": rng.uniform(0.0, 1.0, (B, T, H)),
    }


def torch_inputs(x: dict[str, np.ndarray], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    return {n: torch.from_numpy(a).to(dtype) for n, a in x.items()}


def best_time(fn: Callable[[], object], repeats: int) -> float:
    """Best-of-``repeats`` time of one call after a warm-up call: process CPU time with one
    thread (the run time without the time other jobs of a shared machine took the core),
    wall-clock time with more threads."""
    clock = time.process_time if torch.get_num_threads() == 1 else time.perf_counter
    fn()
    ts = []
    for _ in range(repeats):
        t0 = clock()
        fn()
        ts.append(clock() - t0)
    return min(ts)


def _status_mib(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    raise KeyError(key)


def reset_peak() -> None:
    """Reset the kernel's peak-RSS counter (Linux: VmHWM), so the next peak is the call's."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _call(impl: str, T: int, C: int, tau: float, chunk: int) -> Callable[[], object]:
    base = "delta" if impl.endswith("_delta") else "gla"
    impl = impl.removesuffix("_delta")
    cfg = Config(capacity=C, tau=tau, score="external", base=base)
    x = inputs(T, C, base=base)
    if impl == "reference":
        return lambda: ref_forward(**x, config=cfg)
    t = torch_inputs(x, torch.float32)
    if impl == "torch_cpu_backward":
        leaves = {n: t[n].requires_grad_(True) for n in ("q", "k", "v", "g", "lam")}

        def fwd_bwd() -> None:
            o, _ = tc.forward(**{**t, **leaves}, config=cfg, chunk_size=chunk)
            o.sum().backward()
        return fwd_bwd
    if impl == "torch_cpu_plan":
        return lambda: tc.make_plan(cfg, scores=t["scores"])
    return lambda: tc.forward(**t, config=cfg, chunk_size=chunk)


def peak_memory(impl: str, T: int, C: int, tau: float, chunk: int) -> float:
    """Peak extra resident memory (MiB) of one call, in a fresh interpreter."""
    out = subprocess.run(
        [sys.executable, __file__, "--memory-child",
         json.dumps([impl, T, C, tau, chunk])],
        capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def _memory_child(spec: str) -> None:
    impl, T, C, tau, chunk = json.loads(spec)
    torch.set_num_threads(1)
    fn = _call(impl, T, C, tau, chunk)
    reset_peak()
    base = _status_mib("VmRSS")
    fn()
    print(f"{max(_status_mib('VmHWM') - base, 0.0):.1f}")


def boundary_rate(T: int, tau: float) -> float:
    return float((inputs(T, 1)["scores"] > tau).mean())


def table_speed(Ts: list[int], C: int, taus: list[float], ref_max_T: int, repeats: int) -> None:
    print("| tau | boundaries | T | reference fwd (s) | torch_cpu fwd (ms) | speed-up vs reference "
          "| torch_cpu C=1 fwd (ms) | DLA / C=1 | plan only (ms) | fwd+bwd (ms) "
          "| delta base fwd (ms) | peak mem ref (MiB) | peak mem torch_cpu (MiB) |")
    print("|" + "---|" * 13)
    for tau in taus:
        for T in Ts:
            dla_t = best_time(_call("torch_cpu", T, C, tau, 64), repeats)
            one_t = best_time(_call("torch_cpu", T, 1, tau, 64), repeats)
            plan_t = best_time(_call("torch_cpu_plan", T, C, tau, 64), repeats)
            bwd_t = best_time(_call("torch_cpu_backward", T, C, tau, 64), max(1, repeats - 1))
            delta_t = best_time(_call("torch_cpu_delta", T, C, tau, 64), repeats)
            mem_t = peak_memory("torch_cpu", T, C, tau, 64)
            if T <= ref_max_T:
                ref_t = best_time(_call("reference", T, C, tau, 64), repeats if T <= 2048 else 1)
                mem_r = peak_memory("reference", T, C, tau, 64)
                ref_s, speed, mem_rs = f"{ref_t:.2f}", f"{ref_t / dla_t:.0f}x", f"{mem_r:.0f}"
            else:
                ref_s = speed = mem_rs = "-"
            print(f"| {tau} | {boundary_rate(T, tau):.1%} | {T} | {ref_s} | {dla_t * 1e3:.1f} "
                  f"| {speed} | {one_t * 1e3:.1f} | {dla_t / one_t:.2f}x | {plan_t * 1e3:.1f} "
                  f"| {bwd_t * 1e3:.0f} | {delta_t * 1e3:.1f} | {mem_rs} | {mem_t:.0f} |",
                  flush=True)


def table_chunks(T: int, C: int, tau: float, chunks: list[int], repeats: int) -> None:
    """Float32 error against the float64 reference (same float32-rounded inputs), and speed,
    per chunk size and base; the error is the relative RMS of DLA-10.2 (bound 3e-5)."""
    print("| base | chunk size L | rel. RMS error (float32) | max abs error | fwd (ms) |")
    print("|---|---|---|---|---|")
    for base in ("gla", "delta"):
        x = inputs(T, C, base=base)
        cfg = Config(capacity=C, tau=tau, score="external", base=base)
        x32 = {n: a.astype(np.float32).astype(np.float64) for n, a in x.items()}
        r, _ = ref_forward(**x32, config=cfg)
        norm = float(np.linalg.norm(r))
        t = torch_inputs(x32, torch.float32)
        for L in chunks:
            o, _ = tc.forward(**t, config=cfg, chunk_size=L)
            err = np.abs(o.double().numpy() - r)
            ms = best_time(lambda t=t, c=cfg, L=L: tc.forward(**t, config=c, chunk_size=L),
                           repeats) * 1e3
            print(f"| {base} | {L} | {np.linalg.norm(err) / norm:.2e} | {err.max():.2e} "
                  f"| {ms:.1f} |", flush=True)


def table_plan_rows(T: int, C: int, tau: float, shapes: list[tuple[int, int]]) -> None:
    """The plan stage alone (``make_plan``) against the reference's, as rows ``B * H`` grow."""
    from dla.reference import make_plan as ref_make_plan

    print("| B x H rows | torch_cpu plan (ms) | reference plan (ms) | ratio |")
    print("|---|---|---|---|")
    cfg = Config(capacity=C, tau=tau, score="external")
    for B, H in shapes:
        s = np.random.default_rng(0).uniform(0.0, 1.0, (B, T, H))
        st = torch.from_numpy(s)
        mine = best_time(lambda st=st: tc.make_plan(cfg, scores=st), 3) * 1e3
        ref = best_time(lambda s=s: ref_make_plan(cfg, scores=s), 1) * 1e3
        print(f"| {B} x {H} | {mine:.1f} | {ref:.1f} | {ref / mine:.1f}x |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--T", type=int, nargs="+", default=[512, 2048, 8192])
    ap.add_argument("--C", type=int, default=8)
    ap.add_argument("--taus", type=float, nargs="+", default=[0.9, 0.99])
    ap.add_argument("--ref-max-T", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--chunk-T", type=int, default=2048)
    ap.add_argument("--chunks", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    ap.add_argument("--threads", type=int, default=1,
                    help="torch and NumPy BLAS threads; > 1 switches to wall-clock time")
    ap.add_argument("--only", choices=["speed", "chunks", "plan"], help="print one table")
    ap.add_argument("--memory-child")
    a = ap.parse_args()
    if a.memory_child:
        _memory_child(a.memory_child)
        return
    torch.set_num_threads(a.threads)
    clock = "process CPU time" if a.threads == 1 else "wall-clock time"
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()} (NumPy BLAS "
          f"{os.environ['OMP_NUM_THREADS']}), {clock}, float32, B=1 H=4 K=V=64 C={a.C}")
    if a.only in (None, "speed"):
        print(f"\nload {os.getloadavg()[0]:.2f}\n")
        table_speed(a.T, a.C, a.taus, a.ref_max_T, a.repeats)
    if a.only in (None, "chunks"):
        print(f"\nload {os.getloadavg()[0]:.2f}\n")
        print(f"Chunk size, T={a.chunk_T}, C={a.C}, tau={a.taus[0]}:\n")
        table_chunks(a.chunk_T, a.C, a.taus[0], a.chunks, a.repeats)
    if a.only in (None, "plan"):
        print(f"\nload {os.getloadavg()[0]:.2f}\n")
        print(f"Plan stage alone, T={a.chunk_T}, C={a.C}, tau={a.taus[0]}:\n")
        table_plan_rows(a.chunk_T, a.C, a.taus[0], [(1, 4), (8, 16)])
    print(f"\nload {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
