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
def _mm(a, b, DT: tl.constexpr, PREC: tl.constexpr, FP32: tl.constexpr):
    """``a @ b`` accumulated in float32: operands in ``DT`` (the inputs' 16-bit dtype) or,
    with ``FP32``, in float32 (float32 and float16 inputs, and the interpreter)."""
    if FP32:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision=PREC)
    return tl.dot(a.to(DT), b.to(DT))


@triton.jit
def _pick(x, jc, idx):
    """``x[idx]`` of a small register vector (one nonzero term: exact)."""
    return tl.sum(tl.where(jc == idx, x, 0), axis=0)


@triton.jit
def _in_slot(est, jc, m, cnt, pos):
    """``[BT]``: the positions ``pos`` that slot ``m`` of partition ``est`` (``cnt`` used
    slots) holds; the last used slot runs to the end (``est`` may have no entry ``m + 1``)."""
    end = tl.where(m + 1 < cnt, _pick(est, jc, m + 1), BIG)
    return (pos >= _pick(est, jc, m)) & (pos < end)


@triton.jit
def _slot_of(est, p):
    """The slot of partition ``est`` (unused entries ``BIG``) that holds position ``p``."""
    return tl.sum((est <= p).to(tl.int32), axis=0) - 1


@triton.jit
def _merge_map(pst, cnt_p, est, cc, TRANSPOSE: tl.constexpr):
    """The 0/1 merge map of a chunk (DLA-3.6): ``M[m, j] = 1`` iff old state ``j`` (start
    ``pst[j]``, ``j < cnt_p``) lies in slot ``m`` of the chunk end (starts ``est``, unused
    ``BIG``); ``[CP, CP]`` float32, or its transpose."""
    slot_j = tl.sum((est[None, :] <= pst[:, None]).to(tl.int32), axis=1) - 1  # [CP] per j
    if TRANSPOSE:
        return ((slot_j[:, None] == cc[None, :]) & (cc[:, None] < cnt_p)).to(tl.float32)
    return ((slot_j[None, :] == cc[:, None]) & (cc[None, :] < cnt_p)).to(tl.float32)


@triton.jit
def _block_offsets(ik, iv, cc, K: tl.constexpr, V: tl.constexpr, C: tl.constexpr,
                   BK: tl.constexpr, BV: tl.constexpr):
    """Offsets ``[CP, BK * BV]`` of the (K block, V block) of every slot of a ``[C, K, V]``
    state, and their mask (slots past ``C`` and entries past ``K``, ``V`` masked)."""
    e = tl.arange(0, BK * BV)
    kk = ik * BK + e // BV
    vv = iv * BV + e % BV
    off = cc[:, None] * (K * V) + (kk * V + vv)[None, :]
    return off, (cc[:, None] < C) & ((kk < K) & (vv < V))[None, :]


@triton.jit
def state_pass_kernel(
    k_ptr, v_ptr, g_ptr, count_ptr, starts_ptr, pcount_ptr, pstarts_ptr,
    bos_ptr, lens_ptr, pos0_ptr, hofs_ptr, h_ptr, s0_ptr, final_ptr,
    NT_MAX: tl.constexpr, H: tl.constexpr, PH: tl.constexpr, K: tl.constexpr,
    V: tl.constexpr, C: tl.constexpr, CP: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr,
    BV: tl.constexpr, HAS_S0: tl.constexpr, PREC: tl.constexpr, FP32: tl.constexpr,
):
    """States at every chunk start of one (sequence, head, K block, V block), chunk after chunk.

    The ``C`` running states live in registers, ``[CP, BK * BV]`` float32: at each
    chunk they go through the chunk's merge map and its decay in one matrix product
    (``S <- exp(g) M S``, DLA-3.6, DLA-5.1), then the chunk's tokens are written into
    the slots of the chunk end that hold them (usually one). The states entering
    chunk ``i`` are stored to snapshot place ``i`` for the output kernel (in the
    snapshot dtype); the final states go to ``final`` in float32 (DLA-1.6).
    ``PH`` is the number of heads the plan has (1 under fenwick: every head shares it).
    """
    r = tl.program_id(0)  # rows on axis 0: CUDA limits axes 1 and 2 to 65535 programs
    ik = tl.program_id(1)
    iv = tl.program_id(2)
    n = r // H
    hh = r % H
    hp = hh % PH
    bos = tl.load(bos_ptr + n)
    length = tl.load(lens_ptr + n)
    p0 = tl.load(pos0_ptr + n)
    hofs = tl.load(hofs_ptr + n)
    ot = tl.arange(0, BT)
    cc = tl.arange(0, CP)
    ok = ik * BK + tl.arange(0, BK)
    ov = iv * BV + tl.arange(0, BV)
    off, smask = _block_offsets(ik, iv, cc, K, V, C, BK, BV)
    base = r.to(tl.int64) * (C * K * V)
    if HAS_S0:
        S = tl.load(s0_ptr + base + off, mask=smask, other=0.0).to(tl.float32)
        tl.store(h_ptr + (hofs.to(tl.int64) * H + hh) * (C * K * V) + off,
                 S.to(h_ptr.dtype.element_ty), mask=smask)
    else:
        S = tl.zeros((CP, BK * BV), dtype=tl.float32)
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
            gch = (hofs - n + i).to(tl.int64)
            cnt_p = tl.load(pcount_ptr + gch * PH + hp)
            pst = tl.load(pstarts_ptr + (gch * PH + hp) * C + cc, mask=cc < cnt_p, other=BIG)
            tok_e = (bos + a + nvalid - 1).to(tl.int64)
            cnt_e = tl.load(count_ptr + tok_e * PH + hp)
            est = tl.load(starts_ptr + (tok_e * PH + hp) * C + cc, mask=cc < cnt_e, other=BIG)
            S = tl.dot(_merge_map(pst, cnt_p, est, cc, False), S,
                       input_precision="ieee") * tl.exp(glast)
            kt = tl.load(k_ptr + (tok * H + hh)[:, None] * K + ok[None, :],
                         mask=tmask[:, None] & (ok[None, :] < K), other=0.0)
            vt = tl.load(v_ptr + (tok * H + hh)[:, None] * V + ov[None, :],
                         mask=tmask[:, None] & (ov[None, :] < V), other=0.0)
            first = _slot_of(est, p0 + a)  # the slots from ``first`` on hold this chunk's tokens
            for m in range(0, C):
                if (m >= first) & (m < cnt_e):
                    sel = tmask & _in_slot(est, cc, m, cnt_e, pos)
                    kw = tl.where(sel[:, None], kt.to(tl.float32) * dec[:, None], 0.0)
                    L = _mm(tl.trans(kw), vt, kt.dtype, PREC, FP32)
                    S += tl.where(cc[:, None] == m, tl.reshape(L, (1, BK * BV)), 0.0)
            if i + 1 < nt:  # the last chunk's end states go to ``final`` only
                snap = h_ptr + ((hofs + i + 1).to(tl.int64) * H + hh) * (C * K * V)
                tl.store(snap + off, S.to(h_ptr.dtype.element_ty),
                         mask=smask & (cc < cnt_e)[:, None])
    tl.store(final_ptr + base + off, S, mask=smask)


@triton.jit
def output_kernel(
    q_ptr, k_ptr, v_ptr, g_ptr, lam_ptr, count_ptr, starts_ptr, labels_ptr,
    pcount_ptr, pstarts_ptr, table_ptr, bos_ptr, lens_ptr, pos0_ptr, hofs_ptr, h_ptr, o_ptr,
    scale,
    H: tl.constexpr, PH: tl.constexpr, K: tl.constexpr, V: tl.constexpr, C: tl.constexpr,
    CP: tl.constexpr,
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
    prow = tok * PH + hh % PH  # the plan's row: its own head, or the one shared by all
    cnt_t = tl.load(count_ptr + prow, mask=tmask, other=0)
    # slot tiles at each readout t: start, next start, lam_t[label] (loaded once)
    used = tmask[:, None] & (jj[None, :] < cnt_t[:, None])
    st2 = tl.load(starts_ptr + prow[:, None] * C + jj[None, :], mask=used, other=BIG)
    nxt = tmask[:, None] & (jj[None, :] + 1 < cnt_t[:, None])
    stn2 = tl.load(starts_ptr + prow[:, None] * C + jj[None, :] + 1, mask=nxt, other=BIG)
    lb2 = tl.load(labels_ptr + prow[:, None] * C + jj[None, :], mask=used, other=0)
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
    cnt_p = tl.load(pcount_ptr + gch * PH + hh % PH)
    pst = pstarts_ptr + (gch * PH + hh % PH) * C
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
    """The partition at ``a - 1`` for every chunk ``[a, b)``: ``[NC, PH]``, ``[NC, PH, C]`` int32
    (``PH`` the plan's heads, :func:`plan_heads`).

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
    ph = plan_heads(plan)  # a plan shared by all heads comes with no carried cache
    pc = torch.where(first[:, None], init_count[n, :ph].to(torch.int32), plan.count[tok])
    ps = torch.where(first[:, None, None], init_starts[n, :ph].to(torch.int32), plan.starts[tok])
    return pc.contiguous(), ps.contiguous()


def _blocks(K: int, V: int, max_bv: int) -> tuple[int, int, int]:
    BK = max(16, triton.next_power_of_2(K))
    BV = min(max(16, triton.next_power_of_2(V)), max_bv)
    return BK, BV, triton.cdiv(V, BV)


# Launch parameters, from benchmarks/bench_triton_gpu.py --sweep on an H200 (C = 16, D = 64).
# Output kernel: 4 warps 1.69 ms vs 8 warps 2.26 ms. State passes: ``state_elems`` bounds the
# register tile of the C running states (CP * BK * BV float32 entries); ``state_programs`` is
# the parallelism below which the K and V blocks are halved (down to 16).
TUNING: dict[str, Any] = {"state_elems": 8192, "state_programs": 512, "state_warps": 4,
                          "output_bv": 64, "output_warps": 4, "output_stages": 3,
                          "snapshots": "input"}


def state_cp(C: int) -> int:
    """Slots of the register tile: a power of two, at least 16 (a matrix-product side)."""
    return max(16, triton.next_power_of_2(C))


def state_blocks(K: int, V: int, C: int, rows: int) -> tuple[int, int]:
    """``(BK, BV)`` of the state passes: the ``[CP, BK * BV]`` float32 tile of the running
    states must fit ``TUNING["state_elems"]``, and small row counts get more programs."""
    BK = max(16, triton.next_power_of_2(K))
    BV = max(16, triton.next_power_of_2(V))
    cp = state_cp(C)
    while cp * BK * BV > TUNING["state_elems"] and max(BK, BV) > 16:
        if BV >= BK and BV > 16:
            BV //= 2
        else:
            BK //= 2
    while (rows * triton.cdiv(K, BK) * triton.cdiv(V, BV) < TUNING["state_programs"]
           and max(BK, BV) > 16):
        if BV >= BK and BV > 16:
            BV //= 2
        else:
            BK //= 2
    return BK, BV


def _interpreting() -> bool:
    """Triton's CPU interpreter computes 16-bit ``tl.dot`` wrongly (triton 3.6): upcast there."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _precision(dtype: torch.dtype) -> str:
    """float32 inputs keep float32 products (no tf32), so they meet the float32 tolerance."""
    return "ieee" if dtype == torch.float32 else "tf32"


def fp32_products(dtype: torch.dtype) -> bool:
    """Matrix products in float32: float32 and float16 inputs (float16's range), and the
    interpreter, whose 16-bit products are wrong (triton 3.6)."""
    return dtype != torch.bfloat16 or _interpreting()


def plan_heads(plan: DevicePlan) -> int:
    """The heads of the plan tensors: ``H``, or 1 when every head shares one plan."""
    return int(plan.count.shape[1])


def launch_state_pass(k, v, g, plan: DevicePlan, rows: Rows, h: torch.Tensor,
                      prev: tuple[torch.Tensor, torch.Tensor], states0: torch.Tensor | None,
                      final: torch.Tensor) -> None:
    """Fill the snapshots ``h`` and the final states ``final [N, H, C, K, V]`` float32 from
    the carried ``states0`` (float32, or None: none carried)."""
    H, K = k.shape[1:]
    V = v.shape[-1]
    C = plan.starts.shape[-1]
    BK, BV = state_blocks(K, V, C, rows.N * H)
    if rows.N * H:
        state_pass_kernel[(rows.N * H, triton.cdiv(K, BK), triton.cdiv(V, BV))](
            k, v, g, plan.count, plan.starts, prev[0], prev[1],
            rows.bos, rows.lens, rows.pos0, rows.hofs, h,
            final if states0 is None else states0, final,
            NT_MAX=bucket(triton.cdiv(rows.max_len, rows.chunk)), H=H, PH=plan_heads(plan),
            K=K, V=V, C=C, CP=state_cp(C), BT=rows.chunk, BK=BK, BV=BV,
            HAS_S0=states0 is not None, PREC=_precision(k.dtype),
            FP32=fp32_products(k.dtype), num_warps=TUNING["state_warps"],
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
            H=H, PH=plan_heads(plan), K=K, V=V, C=C, CP=triton.next_power_of_2(C), BT=rows.chunk,
            BK=BK, BV=BV, PREC=_precision(q.dtype), UPCAST=_interpreting(),
            WIDE=q.dtype == torch.float16, num_warps=TUNING["output_warps"],
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
    final = torch.empty((N, H, C, K, V), dtype=torch.float32, device=q.device)
    launch_state_pass(k, v, g, plan, rows, h, prev, states0, final)
    o = launch_output(q, k, v, g, lam, plan, rows, h, prev, scale, out_dtype)
    return o, final, h
