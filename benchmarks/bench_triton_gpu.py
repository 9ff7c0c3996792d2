"""Forward-pass benchmark of ``dla.impls.triton_gpu`` against its peers, on one CUDA GPU.

Run on a GPU machine (flash-linear-attention's ``fla-core`` installed for the peers)::

    python benchmarks/bench_triton_gpu.py [--quick] [--out benchmarks/triton_gpu.md]

Every configuration has ``B * T = 65536`` tokens and ``H = 16`` heads, bf16
``q, k, v``, float32 ``g`` and ``lam``. Times are the median of
``triton.testing.do_bench`` (CUDA events) in milliseconds. Peers, same tokens:
fla's ``chunk_simple_gla`` (one state), fla's ``chunk_log_linear_attn``
(Fenwick multi-state, ``ceil(log2 T) + 1`` levels) and torch SDPA causal
(FlashAttention). DLA rows use ``score='key_cosine'`` with random keys and
``tau = 0.5``: every token opens a state and (once ``C`` states exist) every
token merges, the heaviest plan. Rows ``tau=1.0`` and ``tau=1.2`` open a state at
about 50 % and 5 % of the tokens (the scan's cost follows the boundaries).

Floors (per token and head, ``D = K = V``, ``BT = 64`` chunk, ``C`` states)::

    FLOPs  = 2 C K V      (readout q^T S_i of C states, DLA-5.3)
           + 2 K V        (write k v^T into the states)
           + BT (K + V)   (causal half of the intra-chunk q k^T and A v)
    bytes  = 2 (2K + V) + 4 + 4 C + 2 V   (read q, k, v bf16, g and lam fp32; write o bf16)

``floor = max(FLOPs / 790 TFLOP/s, bytes / 4.3 TB/s)`` (the H200 rates measured
by this workplace: bf16 matrix product and device-to-device copy). The plan
(scores, scan) and the state snapshots are not in the floor: they are what
the implementation adds on top of the arithmetic.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

PEAK_FLOPS = 790e12
PEAK_BYTES = 4.3e12
TOKENS = 65536
HEADS = 16


def floor_ms(T: int, B: int, D: int, C: int) -> tuple[float, float, float]:
    """``(GFLOP, GB, floor ms)`` of the DLA forward (see the module doc)."""
    n = B * T * HEADS
    flops = n * (2 * C * D * D + 2 * D * D + 64 * 2 * D)
    nbytes = n * (2 * 3 * D + 4 + 4 * C + 2 * D)
    return flops / 1e9, nbytes / 1e9, 1e3 * max(flops / PEAK_FLOPS, nbytes / PEAK_BYTES)


def bench(fn, warmup: int = 25, rep: int = 100) -> float:
    from triton.testing import do_bench

    return float(do_bench(fn, warmup=warmup, rep=rep, return_mode="median"))


def inputs(B: int, T: int, D: int, C: int, seed: int = 0) -> dict:
    g = torch.Generator(device="cuda").manual_seed(seed)
    dev, bf = "cuda", torch.bfloat16

    def rnd(*shape):
        return torch.randn(*shape, generator=g, device=dev)

    return {
        "q": rnd(B, T, HEADS, D).to(bf), "k": rnd(B, T, HEADS, D).to(bf),
        "v": rnd(B, T, HEADS, D).to(bf),
        "g": -torch.rand(B, T, HEADS, generator=g, device=dev) * 0.05,
        "lam": torch.rand(B, T, HEADS, C, generator=g, device=dev) + 0.5,
    }


def dla_parts(x: dict, C: int, policy: str, tau: float = 0.5) -> dict[str, float]:
    """Time the whole forward, its three stages (plan, state pass, output) and its validation."""
    from dla import Config
    from dla.impls.triton_gpu import api
    from dla.impls.triton_gpu.forward_kernels import (
        launch_output,
        launch_state_pass,
        previous_partition,
        snapshot_dtype,
    )
    from dla.reference import validation as val

    cfg = Config(capacity=C, tau=tau, policy=policy)
    B, T, H, K = x["q"].shape
    dev = x["q"].device
    call = val.check_forward_call(x["q"], x["k"], x["v"], x["g"], x["lam"], cfg, kind="torch")
    rows, init = api._setup(call, None, dev, api.CHUNK)
    qf, kf, vf, gf, lf = (api._flat(x[n], dev) for n in ("q", "k", "v", "g", "lam"))
    plan, _ = api._device_plan(cfg, rows, kf, None, init, B * T, H)
    h = torch.zeros((rows.n_snapshots, H, C, K, K), dtype=snapshot_dtype(qf.dtype), device=dev)
    run = torch.zeros((rows.N, H, 2, C, K, K), dtype=torch.float32, device=dev)
    prev = previous_partition(plan, rows, init[0], init[1])
    scale = K ** -0.5
    out = {
        "scores": bench(lambda: api._scores(cfg, rows, kf, None, init)),
        "plan": bench(lambda: api._device_plan(cfg, rows, kf, None, init, B * T, H)),
        "state": bench(lambda: launch_state_pass(kf, vf, gf, plan, rows, h, run, prev)),
        "output": bench(lambda: launch_output(qf, kf, vf, gf, lf, plan, rows, h, prev, scale,
                                              qf.dtype)),
        "validate": bench(lambda: val.check_forward_call(x["q"], x["k"], x["v"], x["g"],
                                                         x["lam"], cfg, kind="torch")),
        "total": bench(lambda: api.forward(x["q"], x["k"], x["v"], x["g"], x["lam"], cfg)),
    }
    out["boundary_rate"] = float(plan.boundary.float().mean())
    return out


SWEEP = {  # stage -> launch settings tried; a stage is timed by the key of that name
    "output": [{"output_warps": w} for w in (4, 8)],
    "total": [{"snapshots": sd} for sd in ("input", "float32")],
}


def sweep(C: int = 16, D: int = 64) -> None:
    """Time each stage under each of its launch settings; keep the fastest."""
    from dla.impls.triton_gpu import forward_kernels as fk
    from dla.impls.triton_gpu import plan_kernel as pk

    for stage, options in SWEEP.items():
        knobs = pk.SCAN_TUNING if stage == "plan" else fk.TUNING
        best = None
        for opt in options:
            knobs.update(opt)
            total = 0.0
            for T in (8192, 65536):
                total += dla_parts(inputs(TOKENS // T, T, D, C), C, "dla")[stage]
            print(f"sweep {stage} {opt}: {total:.3f} ms (T = 8K + 64K, C = {C})", flush=True)
            if best is None or total < best[0]:
                best = (total, opt)
        knobs.update(best[1])
    print(f"tuning: {fk.TUNING}, scan: {pk.SCAN_TUNING}", flush=True)


def profile(T: int = 2048, C: int = 16, D: int = 64) -> None:
    """Print where one forward spends its GPU time (torch.profiler, 3 calls)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from dla import Config
    from dla.impls.triton_gpu import api

    x = inputs(TOKENS // T, T, D, C)
    cfg = Config(capacity=C, tau=0.5)
    api.forward(x["q"], x["k"], x["v"], x["g"], x["lam"], cfg)
    torch.cuda.synchronize()
    with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            api.forward(x["q"], x["k"], x["v"], x["g"], x["lam"], cfg)
        torch.cuda.synchronize()
    print(f"profile: T = {T}, C = {C}, D = {D}, 3 forward calls")
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=18,
                                    max_name_column_width=60))


def peers(x: dict, T: int) -> dict[str, float]:
    """fla's chunk_simple_gla, chunk_log_linear_attn and causal SDPA on the same tokens."""
    res: dict[str, float] = {}
    q, k, v, g = x["q"], x["k"], x["v"], x["g"]
    try:
        from fla.ops.simple_gla import chunk_simple_gla

        res["simple_gla"] = bench(lambda: chunk_simple_gla(q, k, v, g, scale=q.shape[-1] ** -0.5))
    except Exception as e:  # a peer that fails is reported, not fatal
        print(f"chunk_simple_gla failed: {e!r}", file=sys.stderr)
    try:
        from fla.ops.log_linear_attn import chunk_log_linear_attn

        L = math.ceil(math.log2(T)) + 1
        ls = (torch.rand(*g.shape, L, device=g.device) + 0.5).to(q.dtype)
        res["log_linear"] = bench(lambda: chunk_log_linear_attn(q, k, v, g, ls, scale=None))
        res["log_linear_levels"] = L
    except Exception as e:
        print(f"chunk_log_linear_attn failed: {e!r}", file=sys.stderr)
    qt, kt, vt = (y.transpose(1, 2).contiguous() for y in (q, k, v))
    res["sdpa"] = bench(lambda: torch.nn.functional.scaled_dot_product_attention(
        qt, kt, vt, is_causal=True))
    return res


HEADER = ("| T | B | D | policy | C | boundaries | DLA ms "
          "| plan (scores) / state / output / validation ms "
          "| TFLOP/s | floor ms | simple_gla ms | log_linear ms (levels) | SDPA causal ms |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def row(T, B, D, policy, C, d, p) -> str:
    gf, _, fl = floor_ms(T, B, D, C)

    def f(key):
        return f"{p[key]:.3f}" if key in p else "n/a"

    ll = f"{p['log_linear']:.3f} ({p['log_linear_levels']})" if "log_linear" in p else "n/a"
    return (f"| {T} | {B} | {D} | {policy} | {C} | {d['boundary_rate']:.2f} | {d['total']:.3f} "
            f"| {d['plan']:.3f} "
            f"({d['scores']:.3f}) / "
            f"{d['state']:.3f} / {d['output']:.3f} / {d['validate']:.3f} "
            f"| {gf / d['total']:.1f} | {fl:.3f} "
            f"| {f('simple_gla')} | {ll} | {f('sdpa')} |")


def _tuning() -> dict:
    from dla.impls.triton_gpu.forward_kernels import TUNING
    from dla.impls.triton_gpu.plan_kernel import SCAN_TUNING

    return {**TUNING, "scan_warps": SCAN_TUNING["warps"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one sequence length, D = 64")
    ap.add_argument("--Ts", type=int, nargs="+", default=[2048, 8192, 32768, 65536])
    ap.add_argument("--Ds", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--Cs", type=int, nargs="+", default=[8, 16])
    ap.add_argument("--sweep", action="store_true", help="pick launch settings first")
    ap.add_argument("--profile", action="store_true", help="print a profile of one shape first")
    ap.add_argument("--out", type=Path, default=None, help="write the markdown table here")
    a = ap.parse_args(argv)
    Ts, Ds = ([8192], [64]) if a.quick else (a.Ts, a.Ds)
    if a.sweep:
        sweep()
    if a.profile:
        profile()
    lines = [HEADER]
    t0 = time.time()
    for D in Ds:
        for T in Ts:
            B = TOKENS // T
            p = peers(inputs(B, T, D, 1), T)
            runs = [("dla", C, 0.5) for C in a.Cs] + [("dla", max(a.Cs), tau)
                                                       for tau in (1.0, 1.2)]
            runs.append(("fenwick", math.ceil(math.log2(T)) + 1, 0.5))
            for policy, C, tau in runs:
                d = dla_parts(inputs(B, T, D, C), C, policy, tau)
                name = policy if policy == "fenwick" or tau == 0.5 else f"dla tau={tau}"
                lines.append(row(T, B, D, name, C, d, p))
                print(lines[-1], f"(boundary rate {d['boundary_rate']:.2f}, "
                      f"{time.time() - t0:.0f} s)", flush=True)
                torch.cuda.empty_cache()
                _write(a.out, lines)
    print("\n".join(lines))
    return 0


def _write(out: Path | None, lines: list[str]) -> None:
    """Write the table so far (a run cut short still leaves its rows)."""
    table = "\n".join(lines)
    if out:
        gpu = torch.cuda.get_device_name()
        out.write_text(
            f"# triton_gpu forward benchmark\n\nDevice: {gpu}; torch {torch.__version__}; "
            f"command: `python benchmarks/bench_triton_gpu.py`.\n"
            f"B * T = {TOKENS} tokens, H = {HEADS}, bf16 q/k/v; times are do_bench medians.\n"
            f"TFLOP/s counts the FLOPs of the floor formula in the script's docstring.\n"
            f"Launch settings: {_tuning()}.\n\n"
            f"{table}\n")


if __name__ == "__main__":
    sys.exit(main())
