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


def table_plan_rows(T: int, C: int, tau: float, shapes: list[tuple[int, int]],
                    repeats: int) -> None:
    """The plan stage alone (``make_plan``) against the reference's, as rows ``B * H`` grow:
    the default dispatch, then each dla path forced (per-row loop, event-index loop)."""
    from dla.impls.torch_cpu import plan as tc_plan
    from dla.reference import make_plan as ref_make_plan

    print("| B x H rows | torch_cpu plan (ms) | per-row loop (ms) | event-index loop (ms) "
          "| reference plan (ms) | ratio |")
    print("|---|---|---|---|---|---|")
    cfg = Config(capacity=C, tau=tau, score="external")
    for B, H in shapes:
        s = np.random.default_rng(0).uniform(0.0, 1.0, (B, T, H))
        st = torch.from_numpy(s)
        mine = best_time(lambda st=st: tc.make_plan(cfg, scores=st), repeats) * 1e3
        paths = []
        for path in ("per_row", "across_rows"):
            with tc_plan.forced_path(path):
                paths.append(best_time(lambda st=st: tc.make_plan(cfg, scores=st), repeats) * 1e3)
        ref = best_time(lambda s=s: ref_make_plan(cfg, scores=s), 1) * 1e3
        print(f"| {B} x {H} | {mine:.1f} | {paths[0]:.1f} | {paths[1]:.1f} | {ref:.1f} "
              f"| {ref / mine:.1f}x |", flush=True)


def table_parts(T: int, C: int, tau: float, repeats: int) -> None:
    """Where one forward's time goes: each stage of ``forward`` called alone on the same
    inputs (gla, chunk size 64), best of ``repeats``, next to the whole forward."""
    from dla.impls.torch_cpu import api
    from dla.impls.torch_cpu import chunked as ch
    from dla.impls.torch_cpu.plan import run_policy
    from dla.reference import validation as val

    cfg = Config(capacity=C, tau=tau, score="external")
    t = torch_inputs(inputs(T, C), torch.float32)
    whole = best_time(lambda: tc.forward(**t, config=cfg), repeats)  # before the stages' data
    names = ("q", "k", "v", "g", "lam")
    rows = {n: api.to_rows(t[n]).contiguous() for n in names}
    R, L = rows["q"].shape[0], 64
    NC = T // L
    car = api._carried(None, slice(0, 1), rows["q"].shape[0], C)

    def plan() -> tuple[torch.Tensor, ...]:
        iota = api._scores(cfg, rows["k"], api.to_rows(t["scores"]), car)
        rp = run_policy(iota, cfg, car.part)
        return tuple(torch.from_numpy(x) for x in (rp.starts, rp.labels, rp.count))

    st, lb, cnt = plan()
    pos = torch.arange(T).expand(R, T)
    st0, z = torch.from_numpy(car.part.starts), torch.zeros(R, dtype=torch.int64)
    q, k, v, g, lam = (rows[n].view(R, NC, L, -1) for n in names)
    g = g.squeeze(-1)
    idx = ch.chunk_index(st, lb, cnt, pos, st0, z, L, torch.float32)
    A, ops = ch.ops_gla(q, k, g, L)
    lw = ch._slot_weights(lam, lb.view(R, NC, L, C))
    w_old = torch.gather(lw, 3, idx.slot_old) * idx.old_used.unsqueeze(2)
    U_n, dest_n = ch._piece_contributions(ops, idx, v, C)
    S0 = torch.zeros(R, C, q.shape[-1], v.shape[-1])
    a = pos.reshape(R, NC, L)[:, :, 0]
    parts: dict[str, Callable[[], object]] = {
        "validation (dla.reference.validation)": lambda: val.check_forward_inputs(
            t["q"], t["k"], t["v"], t["g"], t["lam"], cfg, None, t["scores"]),
        "rows: [B, T, H] -> [B H, T] copies": lambda: {
            n: api.to_rows(t[n]).contiguous() for n in names},
        "scores + plan (dla policy)": plan,
        "chunk index": lambda: ch.chunk_index(st, lb, cnt, pos, st0, z, L, torch.float32),
        "chunk operators (A, Qe, W, phi)": lambda: ch.ops_gla(q, k, g, L),
        "slot weights": lambda: torch.gather(ch._slot_weights(lam, lb.view(R, NC, L, C)), 3,
                                             idx.slot_old),
        "intra-chunk readout (token slots, A v)": lambda: ch._intra_readout(
            A, lw, idx.part, a, v),
        "piece contributions (new tokens into states)": lambda: ch._piece_contributions(
            ops, idx, v, C),
        "chunk loop: inter-chunk readout + state update": lambda: ch._recurrence(
            ops, idx, w_old, S0, U_n, dest_n, "gla"),
    }
    best = {n: best_time(f, repeats) for n, f in parts.items()}
    print("| stage | ms | share of the sum |")
    print("|---|---|---|")
    total = sum(best.values())
    for n, b in best.items():
        print(f"| {n} | {b * 1e3:.2f} | {b / total:.0%} |")
    print(f"| sum of the stages | {total * 1e3:.2f} | |")
    print(f"| whole forward | {whole * 1e3:.2f} | |", flush=True)


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
    ap.add_argument("--only", choices=["speed", "chunks", "plan", "parts"], help="print one table")
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
        for tau in a.taus:
            print(f"Plan stage alone, T={a.chunk_T}, C={a.C}, tau={tau}:\n")
            table_plan_rows(a.chunk_T, a.C, tau, [(1, 4), (1, 16), (2, 16), (3, 16), (4, 16),
                                                  (8, 16)], a.repeats)
            print()
    if a.only in (None, "parts"):
        print(f"\nload {os.getloadavg()[0]:.2f}\n")
        print(f"Stages of one forward, T={a.chunk_T}, C={a.C}, tau={a.taus[0]}:\n")
        table_parts(a.chunk_T, a.C, a.taus[0], max(a.repeats, 10))
    print(f"\nload {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
