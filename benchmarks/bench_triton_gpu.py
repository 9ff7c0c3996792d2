"""Forward and backward benchmark of ``dla.impls.triton_gpu`` against its peers, on one GPU.

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
import json
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


def bench(fn, warmup: int = 25, rep: int = 100, grad_to_none=None) -> float:
    from triton.testing import do_bench

    return float(do_bench(fn, warmup=warmup, rep=rep, grad_to_none=grad_to_none,
                          return_mode="median"))


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


def _grad_leaves(x: dict) -> dict:
    return {n: a.detach().clone().requires_grad_() for n, a in x.items()}


def dla_parts(x: dict, C: int, policy: str, tau: float = 0.5, backward: bool = True
              ) -> dict[str, float]:
    """Time the forward, its stages (plan, state pass, output, validation), and the forward
    plus backward with the backward's stages (state-gradient pass, token kernel)."""
    from dla import Config
    from dla.impls.triton_gpu import api, autograd
    from dla.impls.triton_gpu.backward_kernels import launch_dstate_pass, launch_token_grads
    from dla.impls.triton_gpu.checks import value_flags
    from dla.impls.triton_gpu.forward_kernels import (
        launch_output,
        launch_state_pass,
        snapshot_dtype,
    )

    cfg = Config(capacity=C, tau=tau, policy=policy)
    B, T, H, K = x["q"].shape
    prep = api.prepare(x["q"], x["k"], x["v"], x["g"], x["lam"], cfg)
    prep.pending.check()
    f, rows, plan = prep.flat, prep.rows, prep.plan
    qf, kf, vf, gf, lf = (f[n] for n in ("q", "k", "v", "g", "lam"))
    h = torch.zeros((rows.n_snapshots, H, C, K, K), dtype=snapshot_dtype(qf.dtype),
                    device=qf.device)
    final = torch.zeros((rows.N, H, C, K, K), dtype=torch.float32, device=qf.device)
    prev, scale = prep.prev, prep.scale
    init = prep.init
    out = {
        "plan": bench(lambda: api._device_plan(cfg, rows, kf, None, init, B * T, H)),
        "state": bench(lambda: launch_state_pass(kf, vf, gf, plan, rows, h, prev, None, final)),
        "output": bench(lambda: launch_output(qf, kf, vf, gf, lf, plan, rows, h, prev, scale,
                                              qf.dtype)),
        "validate": bench(lambda: value_flags(qf, kf, vf, gf, lf, None)),
        "total": bench(lambda: api.forward(x["q"], x["k"], x["v"], x["g"], x["lam"], cfg)),
    }
    out["boundary_rate"] = float(plan.boundary.float().mean())
    if not backward:
        return out
    _, final, h = api.execute(prep, None, keep_snapshots=True)
    do = torch.randn_like(x["v"])
    dof = do.reshape(B * T, H, K)
    dh = torch.zeros_like(h)
    dfin = torch.zeros_like(final)
    out["bwd_dstate"] = bench(lambda: launch_dstate_pass(qf, dof, gf, lf, plan, rows, prev, dh,
                                                         dfin, scale))
    out["bwd_token"] = bench(lambda: launch_token_grads(qf, kf, vf, gf, lf, dof, plan, rows,
                                                        prev, h, dh, scale, lf.dtype))
    out["bwd"] = bench(lambda: autograd.backward(prep, h, final, do, None))
    leaves = _grad_leaves(x)

    def fwd_bwd() -> None:
        o, _ = autograd.forward(leaves["q"], leaves["k"], leaves["v"], leaves["g"],
                                leaves["lam"], cfg)
        o.backward(do)

    out["fwd_bwd"] = bench(fwd_bwd, grad_to_none=list(leaves.values()))
    return out


SWEEP = {  # stage -> launch settings tried; a stage is timed by the key of that name
    "state": [{"state_elems": e, "state_warps": w} for e, w in
              ((4096, 4), (8192, 4), (8192, 8), (16384, 8))],
    "bwd_dstate": [{"dstate_warps": w} for w in (4, 8)],
    "bwd_token": [{"token_warps": w} for w in (4, 8)],
}


def sweep(C: int = 16, D: int = 64) -> None:
    """Time each stage under each of its launch settings; keep the fastest."""
    from dla.impls.triton_gpu import backward_kernels as bk
    from dla.impls.triton_gpu import forward_kernels as fk

    for stage, options in SWEEP.items():
        knobs = bk.BWD_TUNING if stage.startswith("bwd") else fk.TUNING
        best = None
        for opt in options:
            knobs.update(opt)
            total = 0.0
            for T in (2048, 65536):
                total += dla_parts(inputs(TOKENS // T, T, D, C), C, "dla",
                                   backward=stage.startswith("bwd"))[stage]
            print(f"sweep {stage} {opt}: {total:.3f} ms (T = 2K + 64K, C = {C})", flush=True)
            if best is None or total < best[0]:
                best = (total, opt)
        knobs.update(best[1])
    print(f"tuning: {_tuning()}", flush=True)


def profile(T: int = 2048, C: int = 16, D: int = 64) -> None:
    """Print where one forward and backward spend their GPU time (torch.profiler, 3 calls)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from dla import Config
    from dla.impls.triton_gpu import autograd

    x = _grad_leaves(inputs(TOKENS // T, T, D, C))
    cfg = Config(capacity=C, tau=0.5)

    def step() -> None:
        o, _ = autograd.forward(x["q"], x["k"], x["v"], x["g"], x["lam"], cfg)
        o.float().sum().backward()

    step()
    torch.cuda.synchronize()
    with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            step()
        torch.cuda.synchronize()
    print(f"profile: T = {T}, C = {C}, D = {D}, 3 forward + backward calls")
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=18,
                                    max_name_column_width=60))


def _peer(res: dict, name: str, fwd, leaves: list, do: torch.Tensor) -> None:
    """Time a peer's forward and forward + backward (a failure is reported, not fatal)."""
    try:
        res[name] = bench(fwd)

        def step() -> None:
            o = fwd()
            (o[0] if isinstance(o, tuple) else o).backward(do)

        res[name + "_fb"] = bench(step, grad_to_none=leaves)
    except Exception as e:
        print(f"{name} failed: {e!r}", file=sys.stderr)


def peers(x: dict, T: int) -> dict[str, float]:
    """fla's chunk_simple_gla, chunk_log_linear_attn and causal SDPA on the same tokens:
    forward and forward + backward."""
    res: dict[str, float] = {}
    y = _grad_leaves({n: x[n] for n in ("q", "k", "v", "g")})
    q, k, v, g = y["q"], y["k"], y["v"], y["g"]
    do = torch.randn_like(x["v"])
    try:
        from fla.ops.simple_gla import chunk_simple_gla

        _peer(res, "simple_gla", lambda: chunk_simple_gla(q, k, v, g, scale=q.shape[-1] ** -0.5),
              [q, k, v, g], do)
    except Exception as e:
        print(f"chunk_simple_gla import failed: {e!r}", file=sys.stderr)
    try:
        from fla.ops.log_linear_attn import chunk_log_linear_attn

        L = math.ceil(math.log2(T)) + 1
        ls = (torch.rand(*g.shape, L, device=g.device) + 0.5).to(q.dtype).requires_grad_()
        _peer(res, "log_linear", lambda: chunk_log_linear_attn(q, k, v, g, ls, scale=None),
              [q, k, v, g, ls], do)
        res["log_linear_levels"] = L
    except Exception as e:
        print(f"chunk_log_linear_attn import failed: {e!r}", file=sys.stderr)
    qt, kt, vt = (z.detach().transpose(1, 2).contiguous().requires_grad_() for z in (q, k, v))
    _peer(res, "sdpa", lambda: torch.nn.functional.scaled_dot_product_attention(
        qt, kt, vt, is_causal=True), [qt, kt, vt], do.transpose(1, 2).contiguous())
    return res


HEADER = ("| T | B | D | policy | C | bnd | fwd ms | fwd+bwd ms "
          "| fwd: plan / state / output / flags ms | bwd: dS pass / token / all ms "
          "| floor ms | simple_gla fwd / f+b | log_linear fwd / f+b (levels) "
          "| SDPA fwd / f+b |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def _pair(p: dict, key: str) -> str:
    if key not in p:
        return "n/a"
    return f"{p[key]:.3f} / {p[key + '_fb']:.3f}" if key + "_fb" in p else f"{p[key]:.3f} / n/a"


def row(T, B, D, policy, C, d, p) -> str:
    _, _, fl = floor_ms(T, B, D, C)
    ll = _pair(p, "log_linear") + (f" ({p['log_linear_levels']})" if "log_linear" in p else "")
    return (f"| {T} | {B} | {D} | {policy} | {C} | {d['boundary_rate']:.2f} | {d['total']:.3f} "
            f"| {d['fwd_bwd']:.3f} | {d['plan']:.3f} / {d['state']:.3f} / "
            f"{d['output']:.3f} / {d['validate']:.3f} | {d['bwd_dstate']:.3f} / "
            f"{d['bwd_token']:.3f} / {d['bwd']:.3f} | {fl:.3f} | {_pair(p, 'simple_gla')} "
            f"| {ll} | {_pair(p, 'sdpa')} |")


def _tuning() -> dict:
    from dla.impls.triton_gpu.backward_kernels import BWD_TUNING
    from dla.impls.triton_gpu.forward_kernels import TUNING
    from dla.impls.triton_gpu.plan_kernel import SCAN_TUNING

    return {**TUNING, **BWD_TUNING, "scan_warps": SCAN_TUNING["warps"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one sequence length, D = 64")
    ap.add_argument("--Ts", type=int, nargs="+", default=[2048, 8192, 32768, 65536])
    ap.add_argument("--Ds", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--Cs", type=int, nargs="+", default=[8, 16])
    ap.add_argument("--sweep", action="store_true", help="pick launch settings first")
    ap.add_argument("--profile", action="store_true", help="print a profile of one shape first")
    ap.add_argument("--out", type=Path, default=None, help="write the markdown table here")
    ap.add_argument("--json", type=Path, default=None, help="write every number here")
    a = ap.parse_args(argv)
    Ts, Ds = ([8192], [64]) if a.quick else (a.Ts, a.Ds)
    if a.sweep:
        sweep()
    if a.profile:
        profile()
    lines, records = [HEADER], []
    t0 = time.time()
    for D in Ds:
        for T in Ts:
            B = TOKENS // T
            p = peers(inputs(B, T, D, 1), T)
            torch.cuda.empty_cache()
            runs = [("dla", C, 0.5) for C in a.Cs]
            runs += [("dla", max(a.Cs), tau) for tau in (1.0, 1.2)]
            runs += [("dla", min(a.Cs), 1.2)] if min(a.Cs) != max(a.Cs) else []
            runs.append(("fenwick", math.ceil(math.log2(T)) + 1, 0.5))
            for policy, C, tau in runs:
                d = dla_parts(inputs(B, T, D, C), C, policy, tau)
                name = policy if policy == "fenwick" or tau == 0.5 else f"dla tau={tau}"
                lines.append(row(T, B, D, name, C, d, p))
                records.append({"T": T, "B": B, "D": D, "H": HEADS, "policy": policy, "tau": tau,
                                "C": C, "dla": d, "peers": p, "floor_ms": floor_ms(T, B, D, C)[2]})
                print(lines[-1], f"({time.time() - t0:.0f} s)", flush=True)
                torch.cuda.empty_cache()
                _write(a.out, a.json, lines, records)
    print("\n".join(lines))
    return 0


def _write(out: Path | None, out_json: Path | None, lines: list[str], records: list) -> None:
    """Write the table and the raw numbers so far (a run cut short still leaves its rows)."""
    table = "\n".join(lines)
    gpu = torch.cuda.get_device_name()
    if out:
        out.write_text(
            f"# triton_gpu benchmark\n\nDevice: {gpu}; torch {torch.__version__}; "
            f"command: `python benchmarks/bench_triton_gpu.py`.\n"
            f"B * T = {TOKENS} tokens, H = {HEADS}, bf16 q/k/v; times are do_bench medians.\n"
            f"Launch settings: {_tuning()}.\n\n"
            f"{table}\n")
    if out_json:
        out_json.write_text(json.dumps({"device": gpu, "torch": torch.__version__,
                                        "tokens": TOKENS, "heads": HEADS, "tuning": _tuning(),
                                        "rows": records}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
