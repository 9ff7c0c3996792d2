"""Chunked forward of the ``gla`` base (DLA-5.1, DLA-5.3, DLA-5.4) for any plan.

Chunk ``[a, b)`` of a row starts from the partition at ``a - 1``: states
``S_j`` (``j < count_{a-1}``) decayed to ``a - 1``. The partition only
coarsens (DLA-3.6), so at a later readout ``t`` old state ``j`` lies inside
exactly one slot, the one holding its start, and

``o_t = scale * ( sum_j lam_t[lbl_t(j)] exp(G_t - G_{a-1}) q_t^T S_j
                 + sum_{a <= s <= t} lam_t[label_t(s)] exp(G_t - G_s) (q_t . k_s) v_s )``.

Two kernels: ``state_pass_kernel`` walks the chunks of a row in order and
writes the states at every chunk start (new slot ``m`` at ``b - 1`` = the old
states inside it, decayed over the chunk, plus the chunk's tokens inside it);
``output_kernel`` runs over all chunks in parallel and forms both sums.
Decays use chunk-local cumulative sums of ``g`` in float32.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import triton
import triton.language as tl

from dla.impls.triton_gpu.plan_kernel import DevicePlan, bucket
from dla.impls.triton_gpu.rows import Rows

BIG: tl.constexpr = tl.constexpr(2**30)


@triton.jit
def _dot(a, b, PREC: tl.constexpr, UPCAST: tl.constexpr):
    """``a @ b`` with float32 accumulation; ``UPCAST`` works around the interpreter's 16-bit dot."""
    if UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    return tl.dot(a, b, input_precision=PREC)


@triton.jit
def _pick(x, jc, idx):
    """``x[idx]`` of a small register vector (one nonzero term: exact)."""
    return tl.sum(tl.where(jc == idx, x, 0), axis=0)


@triton.jit
def _slot_of(est, p):
    """The slot of partition ``est`` (unused entries ``BIG``) that holds position ``p``."""
    return tl.sum((est <= p).to(tl.int32), axis=0) - 1


@triton.jit
def _tokens_into(m, est, jc, kd, vt, tmask, pos, PREC: tl.constexpr, UPCAST: tl.constexpr):
    """``sum_s exp(G_{b-1} - G_s) k_s v_s^T`` over this chunk's tokens ``s`` in new slot ``m``."""
    sel = tmask & (pos >= _pick(est, jc, m)) & (pos < _pick(est, jc, m + 1))
    kw = tl.where(sel[:, None], kd, 0.0).to(kd.dtype)
    return _dot(tl.trans(kw), vt, PREC, UPCAST)


@triton.jit
def _merge_and_write(hold, hnew, hsnap, snap, pst, cnt_p, est, jc, kd, vt, tmask, pos, first_pos,
                     decay, kv_off, kv_mask, K: tl.constexpr, V: tl.constexpr, C: tl.constexpr,
                     BK: tl.constexpr, BV: tl.constexpr, PREC: tl.constexpr,
                     UPCAST: tl.constexpr):
    """The states at the chunk end: new slot ``m`` = its old states, decayed, plus its tokens.

    The partition only coarsens (DLA-3.6), so the old states inside a new slot are
    consecutive: old states are visited in order (fixed addresses, so the loads do
    not wait on each other) and summed until the next one starts a new slot; then
    the slot is written. New slots past the last old state hold only this chunk's
    tokens. Measured alternatives, both slower on an H200: one ``[C, K, BV]`` tile of
    all old states summed per slot (6x: the reductions cross threads), and a move
    table precomputed in torch (1.2x: each branch then waits for a load).
    """
    acc = tl.zeros((BK, BV), dtype=tl.float32)
    for j in range(0, C):
        live = j < cnt_p
        spj = tl.load(pst + j, mask=live, other=BIG)
        spn = tl.load(pst + j + 1, mask=j + 1 < cnt_p, other=BIG)
        acc += tl.load(hold + j * K * V + kv_off, mask=kv_mask & live, other=0.0)
        m = _slot_of(est, spj)
        if live & ((j + 1 >= cnt_p) | (_slot_of(est, spn) != m)):
            acc = acc * decay
            if _pick(est, jc, m + 1) > first_pos:  # the slot also holds tokens of this chunk
                acc += _tokens_into(m, est, jc, kd, vt, tmask, pos, PREC, UPCAST)
            tl.store(hnew + m * K * V + kv_off, acc, mask=kv_mask)
            tl.store(hsnap + m * K * V + kv_off, acc.to(hsnap.dtype.element_ty),
                     mask=kv_mask & snap)
            acc = tl.zeros((BK, BV), dtype=tl.float32)
    last_old = tl.load(pst + cnt_p - 1, mask=cnt_p > 0, other=-1)
    first_new = tl.where(cnt_p > 0, _slot_of(est, last_old) + 1, 0)
    cnt_e = tl.sum((est < BIG).to(tl.int32), axis=0)
    for m2 in range(0, C):
        if (m2 >= first_new) & (m2 < cnt_e):
            new = _tokens_into(m2, est, jc, kd, vt, tmask, pos, PREC, UPCAST)
            tl.store(hnew + m2 * K * V + kv_off, new, mask=kv_mask)
            tl.store(hsnap + m2 * K * V + kv_off, new.to(hsnap.dtype.element_ty),
                     mask=kv_mask & snap)


@triton.jit
def state_pass_kernel(
    k_ptr, v_ptr, g_ptr, count_ptr, starts_ptr, pcount_ptr, pstarts_ptr,
    bos_ptr, lens_ptr, pos0_ptr, hofs_ptr, h_ptr, run_ptr,
    NT_MAX: tl.constexpr,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, C: tl.constexpr, CP: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, PREC: tl.constexpr,
    UPCAST: tl.constexpr,
):
    """States at every chunk start of one (sequence, head, V block), chunk after chunk.

    The running states are float32 in ``run[r, i % 2]`` (two buffers per row, so a
    chunk never overwrites what it reads); each chunk's states are also written to
    the snapshots ``h`` that the output kernel reads, in the inputs' dtype (its
    matrix products take them in that dtype anyway), float32 for float16 inputs.
    """
    r = tl.program_id(0)  # rows on axis 0: CUDA limits axes 1 and 2 to 65535 programs
    iv = tl.program_id(1)
    n = r // H
    hh = r % H
    bos = tl.load(bos_ptr + n)
    length = tl.load(lens_ptr + n)
    p0 = tl.load(pos0_ptr + n)
    hofs = tl.load(hofs_ptr + n)
    ot = tl.arange(0, BT)
    ok = tl.arange(0, BK)
    ov = iv * BV + tl.arange(0, BV)
    kv_mask = (ok[:, None] < K) & (ov[None, :] < V)
    kv_off = ok[:, None] * V + ov[None, :]
    jc = tl.arange(0, CP)
    nt = tl.cdiv(length, BT)
    for i in range(0, NT_MAX):  # constexpr bounds: the interpreter needs them
        if i < nt:
            a = i * BT
            nvalid = tl.minimum(length - a, BT)
            tmask = ot < nvalid
            tok = (bos + a + ot).to(tl.int64)  # flat addresses can pass 2**31
            pos = p0 + a + ot
            g = tl.load(g_ptr + tok * H + hh, mask=tmask, other=0.0).to(tl.float32)
            glast = tl.sum(g, axis=0)
            dec = tl.where(tmask, tl.exp(glast - tl.cumsum(g, axis=0)), 0.0)
            kt = tl.load(k_ptr + (tok * H + hh)[:, None] * K + ok[None, :],
                         mask=tmask[:, None] & (ok[None, :] < K), other=0.0)
            vt = tl.load(v_ptr + (tok * H + hh)[:, None] * V + ov[None, :],
                         mask=tmask[:, None] & (ov[None, :] < V), other=0.0)
            kd = (kt.to(tl.float32) * dec[:, None]).to(kt.dtype)
            gch = (hofs - n + i).to(tl.int64)
            cnt_p = tl.load(pcount_ptr + gch * H + hh)
            pst = pstarts_ptr + (gch * H + hh) * C
            tok_e = (bos + a + nvalid - 1).to(tl.int64)
            cnt_e = tl.load(count_ptr + tok_e * H + hh)
            est = tl.load(starts_ptr + (tok_e * H + hh) * C + jc, mask=jc < cnt_e, other=BIG)
            hold = run_ptr + ((r * 2 + i % 2) * C).to(tl.int64) * (K * V)
            hnew = run_ptr + ((r * 2 + (i + 1) % 2) * C).to(tl.int64) * (K * V)
            hsnap = h_ptr + ((hofs + i + 1).to(tl.int64) * H + hh) * (C * K * V)
            # the last chunk's states are read from the running buffer only
            _merge_and_write(hold, hnew, hsnap, i + 1 < nt, pst, cnt_p, est, jc, kd, vt, tmask,
                             pos, p0 + a, tl.exp(glast), kv_off, kv_mask, K, V, C, BK, BV, PREC,
                             UPCAST)
            tl.debug_barrier()  # the next chunk reads what this one wrote


@triton.jit
def output_kernel(
    q_ptr, k_ptr, v_ptr, g_ptr, lam_ptr, count_ptr, starts_ptr, labels_ptr,
    pcount_ptr, pstarts_ptr, table_ptr, bos_ptr, lens_ptr, pos0_ptr, hofs_ptr, h_ptr, o_ptr,
    scale,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, C: tl.constexpr, CP: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, PREC: tl.constexpr,
    UPCAST: tl.constexpr, WIDE: tl.constexpr,
):
    """Output of one chunk: inter (old states, relabeled at each t) + intra (masked, labeled)."""
    gch = tl.program_id(0).to(tl.int64)  # chunks on axis 0: axes 1 and 2 stop at 65535
    iv = tl.program_id(1)
    hh = tl.program_id(2)
    n = tl.load(table_ptr + gch * 2)
    i = tl.load(table_ptr + gch * 2 + 1)
    bos = tl.load(bos_ptr + n)
    length = tl.load(lens_ptr + n)
    p0 = tl.load(pos0_ptr + n)
    hofs = tl.load(hofs_ptr + n)
    a = i * BT
    nvalid = tl.minimum(length - a, BT)
    ot = tl.arange(0, BT)
    ok = tl.arange(0, BK)
    ov = iv * BV + tl.arange(0, BV)
    jj = tl.arange(0, CP)
    tmask = ot < nvalid
    tok = (bos + a + ot).to(tl.int64)  # flat addresses can pass 2**31
    row = tok * H + hh
    pos = p0 + a + ot
    qk_mask = tmask[:, None] & (ok[None, :] < K)
    q = tl.load(q_ptr + row[:, None] * K + ok[None, :], mask=qk_mask, other=0.0)
    k = tl.load(k_ptr + row[:, None] * K + ok[None, :], mask=qk_mask, other=0.0)
    v = tl.load(v_ptr + row[:, None] * V + ov[None, :], mask=tmask[:, None] & (ov[None, :] < V),
                other=0.0)
    g = tl.load(g_ptr + row, mask=tmask, other=0.0).to(tl.float32)
    gc = tl.cumsum(g, axis=0)
    cnt_t = tl.load(count_ptr + row, mask=tmask, other=0)
    # slot tiles at each readout t: start, next start, lam_t[label] (loaded once)
    used = tmask[:, None] & (jj[None, :] < cnt_t[:, None])
    st2 = tl.load(starts_ptr + row[:, None] * C + jj[None, :], mask=used, other=BIG)
    nxt = tmask[:, None] & (jj[None, :] + 1 < cnt_t[:, None])
    stn2 = tl.load(starts_ptr + row[:, None] * C + jj[None, :] + 1, mask=nxt, other=BIG)
    lb2 = tl.load(labels_ptr + row[:, None] * C + jj[None, :], mask=used, other=0)
    lam2 = tl.load(lam_ptr + row[:, None] * C + lb2, mask=used, other=0.0).to(tl.float32)
    # intra-chunk: masked; (t, s) weighted by lam_t at the label of s's slot at t, built from
    # the tiles in registers (no loads in this loop)
    W = tl.zeros((BT, BT), dtype=tl.float32)
    for ii in range(0, C):
        col = jj[None, :] == ii
        st_i = tl.sum(tl.where(col, st2, 0), axis=1)
        stn_i = tl.sum(tl.where(col, stn2, 0), axis=1)
        lam_i = tl.sum(tl.where(col, lam2, 0.0), axis=1)
        inside = (pos[None, :] >= st_i[:, None]) & (pos[None, :] < stn_i[:, None])
        W += tl.where(inside, lam_i[:, None], 0.0)
    causal = (ot[:, None] >= ot[None, :]) & tmask[:, None] & tmask[None, :]
    A = _dot(q, tl.trans(k), PREC, UPCAST)
    A = tl.where(causal, A * W * tl.exp(tl.where(causal, gc[:, None] - gc[None, :], 0.0)), 0.0)
    if WIDE:  # float16: products in float32, A and the states may pass 65504
        o = _dot(A, v.to(tl.float32), PREC, UPCAST)
    else:
        o = _dot(A.to(v.dtype), v, PREC, UPCAST)
    # inter-chunk: old states at a - 1, each weighted by the label of its slot at t
    cnt_p = tl.load(pcount_ptr + gch * H + hh)
    pst = pstarts_ptr + (gch * H + hh) * C
    hold = h_ptr + ((hofs + i).to(tl.int64) * H + hh) * (C * K * V)
    kv_mask = (ok[:, None] < K) & (ov[None, :] < V)
    eg = tl.exp(gc)
    for j in range(0, C):  # masked rather than guarded, so the loads can be pipelined
        spj = tl.load(pst + j, mask=j < cnt_p, other=BIG)
        wj = tl.sum(tl.where((st2 <= spj) & (spj < stn2), lam2, 0.0), axis=1)
        S = tl.load(hold + j * K * V + ok[:, None] * V + ov[None, :], mask=kv_mask & (j < cnt_p),
                    other=0.0)
        if WIDE:
            o += (wj * eg)[:, None] * _dot(q.to(tl.float32), S.to(tl.float32), PREC, UPCAST)
        else:
            o += (wj * eg)[:, None] * _dot(q, S.to(q.dtype), PREC, UPCAST)
    o = o * scale
    tl.store(o_ptr + row[:, None] * V + ov[None, :], o.to(o_ptr.dtype.element_ty),
             mask=tmask[:, None] & (ov[None, :] < V))


def previous_partition(plan: DevicePlan, rows: Rows, init_count: torch.Tensor,
                       init_starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The partition at ``a - 1`` for every chunk ``[a, b)``: ``[NC, H]``, ``[NC, H, C]`` int32.

    Chunk 0 of a sequence continues the carried cache (``init_*`` ``[N, H, ...]``).
    """
    tab = rows.chunk_table.long()
    if tab.shape[0] == 0:
        H, C = plan.starts.shape[1:]
        return (torch.zeros((0, H), dtype=torch.int32, device=tab.device),
                torch.zeros((0, H, C), dtype=torch.int32, device=tab.device))
    n, i = tab[:, 0], tab[:, 1]
    tok = (rows.bos.long()[n] + i * rows.chunk - 1).clamp(min=0)
    first = (i == 0)
    pc = torch.where(first[:, None], init_count[n].to(torch.int32), plan.count[tok])
    ps = torch.where(first[:, None, None], init_starts[n].to(torch.int32), plan.starts[tok])
    return pc.contiguous(), ps.contiguous()


def _blocks(K: int, V: int, max_bv: int) -> tuple[int, int, int]:
    BK = max(16, triton.next_power_of_2(K))
    BV = min(max(16, triton.next_power_of_2(V)), max_bv)
    return BK, BV, triton.cdiv(V, BV)


# Launch parameters, from benchmarks/bench_triton_gpu.py --sweep on an H200 (C = 16, D = 64).
# state_bv 0: the widest V block that still gives the sequential state pass 256 programs
# (T = 2K, 512 rows: BV 64 2.7 ms vs BV 16 4.1 ms; T = 64K, 16 rows: BV 16 11 ms vs BV 64
# 19 ms). Output kernel: 4 warps 1.69 ms vs 8 warps 2.26 ms.
TUNING: dict[str, Any] = {"state_bv": 0, "state_warps": 4, "output_bv": 64,
                          "output_warps": 4, "output_stages": 3, "snapshots": "input"}


def state_bv(V: int, rows: int, bk: int) -> int:
    """V block of the state pass: parallel programs matter more than reuse across V, and a
    ``[bk, bv]`` float32 accumulator above 64 x 64 spills (D = 128, BV 128: 2.5x slower)."""
    if TUNING["state_bv"]:
        return int(TUNING["state_bv"])
    bv = max(16, triton.next_power_of_2(V))
    while bv > 16 and (rows * triton.cdiv(V, bv) < 256 or bk * bv > 64 * 64):
        bv //= 2
    return bv


def _interpreting() -> bool:
    """Triton's CPU interpreter computes 16-bit ``tl.dot`` wrongly (triton 3.6): upcast there."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _precision(dtype: torch.dtype) -> str:
    """float32 inputs keep float32 products (no tf32), so they meet the float32 tolerance."""
    return "ieee" if dtype == torch.float32 else "tf32"


def launch_state_pass(k, v, g, plan: DevicePlan, rows: Rows, h: torch.Tensor, run: torch.Tensor,
                      prev: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Fill the snapshots ``h`` and the running states ``run [N * H, 2, C, K, V]`` (float32);
    with carried states, snapshot 0 of every sequence and ``run[:, 0]`` already hold them
    (without, nothing is read before it is written)."""
    H, K = k.shape[1:]
    V = v.shape[-1]
    C = plan.starts.shape[-1]
    bv = state_bv(V, rows.N * H, max(16, triton.next_power_of_2(K)))
    BK, BV, NV = _blocks(K, V, bv)  # V blocks: more sequential programs
    if rows.N * H and rows.max_len:
        state_pass_kernel[(rows.N * H, NV)](
            k, v, g, plan.count, plan.starts, prev[0], prev[1],
            rows.bos, rows.lens, rows.pos0, rows.hofs, h, run,
            NT_MAX=bucket(triton.cdiv(rows.max_len, rows.chunk)), H=H, K=K, V=V, C=C,
            CP=triton.next_power_of_2(C + 1), BT=rows.chunk, BK=BK, BV=BV,
            PREC=_precision(k.dtype), UPCAST=_interpreting(),
            num_warps=TUNING["state_warps"],
        )


def launch_output(q, k, v, g, lam, plan: DevicePlan, rows: Rows, h: torch.Tensor,
                  prev: tuple[torch.Tensor, torch.Tensor], scale: float,
                  out_dtype: torch.dtype) -> torch.Tensor:
    """All chunks in parallel: ``o [B * T, H, V]``."""
    BTOK, H, K = q.shape
    V = v.shape[-1]
    C = plan.starts.shape[-1]
    BK, BV, NV = _blocks(K, V, TUNING["output_bv"])  # masks/weights: once per V block
    o = torch.empty((BTOK, H, V), dtype=out_dtype, device=q.device)
    if rows.N * H and rows.max_len:
        output_kernel[(rows.chunk_table.shape[0], NV, H)](
            q, k, v, g, lam, plan.count, plan.starts, plan.labels, prev[0], prev[1],
            rows.chunk_table, rows.bos, rows.lens, rows.pos0, rows.hofs, h, o, float(scale),
            H=H, K=K, V=V, C=C, CP=triton.next_power_of_2(C), BT=rows.chunk, BK=BK, BV=BV,
            PREC=_precision(q.dtype), UPCAST=_interpreting(), WIDE=q.dtype == torch.float16,
            num_warps=TUNING["output_warps"],
            num_stages=TUNING["output_stages"],
        )
    return o


def snapshot_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of the state snapshots the output kernel reads (``TUNING["snapshots"]``):
    float32 for float16 inputs, whose range a state can exceed."""
    if TUNING["snapshots"] == "input" and dtype != torch.float16:
        return dtype
    return torch.float32


def launch_forward(q, k, v, g, lam, plan: DevicePlan, rows: Rows, states0: torch.Tensor | None,
                   prev: tuple[torch.Tensor, torch.Tensor], scale: float,
                   out_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """State pass, then output kernel: ``o [B * T, H, V]``, the final states
    ``[N, H, C, K, V]`` float32 from the initial ones (``None``: no carried states) and the
    snapshots ``h`` (place ``i`` of a sequence: its states at the start of chunk ``i``)."""
    N, H, C = rows.N, rows.H, plan.starts.shape[-1]
    K, V = k.shape[-1], v.shape[-1]
    h = torch.empty((rows.n_snapshots, H, C, K, V), dtype=snapshot_dtype(q.dtype),
                    device=q.device)
    run = torch.empty((N, H, 2, C, K, V), dtype=torch.float32, device=q.device)
    if states0 is not None:  # without carried states nothing is read before it is written
        run[:, :, 0] = states0
        h[rows.hofs.long()] = states0.to(h.dtype)
    launch_state_pass(k, v, g, plan, rows, h, run, prev)
    o = launch_output(q, k, v, g, lam, plan, rows, h, prev, scale, out_dtype)
    nt = (rows.lens.long() + rows.chunk - 1) // rows.chunk
    return o, run[torch.arange(N, device=q.device), :, nt % 2], h
