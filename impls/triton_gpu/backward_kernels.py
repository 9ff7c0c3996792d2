"""Chunked backward of the ``gla`` base with the plan frozen (DLA-5.1, DLA-5.3, DLA-6.2, DLA-10.5).

Notation of :mod:`forward_kernels`: chunk ``[a, b)`` of a row starts from the
old states ``S_j`` at ``a - 1`` (slots of the partition at ``a - 1``); ``Gc``
is the chunk-local cumulative sum of ``g``, ``e_t = exp(Gc_t)``,
``gamma = exp(Gc_{b-1})``; ``w_tj`` is ``lam_t`` at the label of the slot of
readout ``t`` that holds old state ``j``, ``W_ts`` the same for token ``s``,
``D_ts = exp(Gc_t - Gc_s)`` (``s <= t``), ``do_t = scale * dL/do_t`` (the kernels read
``dL/do`` and fold ``scale`` into float32 factors). Given the plan the forward is linear
in the states (DLA-5.6):

    S'_m = gamma * sum_{j in m} S_j + sum_{s in m} exp(Gc_{b-1} - Gc_s) k_s v_s^T
    o_t  = scale * (sum_j w_tj e_t S_j^T q_t + sum_{s <= t} W_ts D_ts (q_t . k_s) v_s)

so the gradient ``dS_j`` of the states entering a chunk obeys the reverse recurrence
``dS_j = gamma * dS'_{m(j)} + sum_t w_tj e_t q_t do_t^T`` (``m(j)`` the slot of the
chunk end that holds ``j``), run by :func:`dstate_pass_kernel` from the last chunk
(``dS'`` = the gradient of the final states) to the first (whose ``dS`` is the
gradient of the carried states). :func:`token_grad_kernel` then forms, for every
chunk in parallel, ``dq``, ``dk``, ``dv`` and ``dlam`` (``dlam_t[l]`` sums
``(q_t^T S) . do_t`` over the states of label ``l`` at ``t``) and
``dG_t = q_t . dq_t - k_t . dk_t``: every term of the forward carries
``exp(G_t - G_s)`` for a query ``t`` and a key ``s`` and is linear in ``q_t`` and
in ``k_s``, so this is the gradient of the loss with respect to ``G_t`` (the
identity of flash-linear-attention's GLA kernels). ``dg`` is its reverse
cumulative sum over each sequence, plus ``<dS_final, S_final>`` for the final
states, which carry ``exp(G_end)`` (:func:`gate_gradient`).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from dla.impls.triton_gpu.forward_kernels import (
    _block_offsets,
    _in_slot,
    _merge_map,
    _mm,
    _pick,
    _precision,
    _slot_of,
    fp32_products,
    plan_heads,
    state_blocks,
    state_cp,
)
from dla.impls.triton_gpu.plan_kernel import DevicePlan, bucket
from dla.impls.triton_gpu.rows import Rows

BIG: tl.constexpr = tl.constexpr(2**30)

#: Launch settings of the backward kernels (``benchmarks/bench_triton_gpu.py``).
#: Token kernel: 8 warps, and [BT, 32] tiles above head size 64 (sm_90 ptxas: 64-wide tiles
#: at D = 128 spill 696 bytes per thread in the dq/dk pass, 32-wide ones 16).
BWD_TUNING: dict[str, int] = {"dstate_warps": 4, "token_warps": 8, "token_block": 0}


def token_block(D: int) -> int:
    """The K and V tile of the token kernel (``BWD_TUNING["token_block"]``, 0: automatic)."""
    if BWD_TUNING["token_block"]:
        return int(BWD_TUNING["token_block"])
    return max(16, triton.next_power_of_2(D)) if D <= 64 else 32


@triton.jit
def _readout_tiles(starts_ptr, labels_ptr, lam_ptr, count_ptr, row, prow, tmask, jj,
                   C: tl.constexpr):
    """The partition of every readout ``t`` of the chunk: start, next start, label and
    ``lam_t[label]`` per slot (``[BT, CP]``; unused slots: start ``BIG``, weight 0).
    ``prow`` addresses the plan, ``row`` the inputs (the plan may be shared by the heads)."""
    cnt_t = tl.load(count_ptr + prow, mask=tmask, other=0)
    used = tmask[:, None] & (jj[None, :] < cnt_t[:, None])
    st2 = tl.load(starts_ptr + prow[:, None] * C + jj[None, :], mask=used, other=BIG)
    nxt = tmask[:, None] & (jj[None, :] + 1 < cnt_t[:, None])
    stn2 = tl.load(starts_ptr + prow[:, None] * C + jj[None, :] + 1, mask=nxt, other=BIG)
    lb2 = tl.load(labels_ptr + prow[:, None] * C + jj[None, :], mask=used, other=0)
    lam2 = tl.load(lam_ptr + row[:, None] * C + lb2, mask=used, other=0.0).to(tl.float32)
    return used, st2, stn2, lb2, lam2


@triton.jit
def _old_weight(st2, stn2, lam2, spj):
    """``w_tj``: the slot of readout ``t`` that holds old state ``j`` (start ``spj``), as a
    one-hot ``[BT, CP]`` mask, and ``lam_t`` at its label ``[BT]``."""
    sel = (st2 <= spj) & (spj < stn2)
    return sel, tl.sum(tl.where(sel, lam2, 0.0), axis=1)


@triton.jit
def dstate_pass_kernel(
    q_ptr, do_ptr, g_ptr, lam_ptr, count_ptr, starts_ptr, labels_ptr, pcount_ptr, pstarts_ptr,
    bos_ptr, lens_ptr, hofs_ptr, dh_ptr, dfinal_ptr, dstart_ptr, scale,
    NT_MAX: tl.constexpr, H: tl.constexpr, PH: tl.constexpr, K: tl.constexpr,
    V: tl.constexpr, C: tl.constexpr, CP: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr,
    BV: tl.constexpr, PREC: tl.constexpr, FP32: tl.constexpr,
):
    """``dS`` at every chunk start of one (sequence, head, K block, V block), last chunk first.

    The running gradients live in registers (``[CP, BK * BV]`` float32, starting from the
    final states' gradient ``dfinal``): each chunk maps them back through the transpose
    of its merge map and its decay (``dS <- exp(g) M^T dS'``), then adds every old
    state's readout term ``sum_t w_tj e_t q_t do_t^T``. The gradient of the states
    entering chunk ``i`` goes to ``dh`` place ``i`` (the ``dS'`` of chunk ``i - 1``), and
    that of the states entering the sequence (the carried ones) to ``dstart``.
    """
    r = tl.program_id(0)
    ik = tl.program_id(1)
    iv = tl.program_id(2)
    n = r // H
    hh = r % H
    hp = hh % PH
    bos = tl.load(bos_ptr + n)
    length = tl.load(lens_ptr + n)
    hofs = tl.load(hofs_ptr + n)
    ot = tl.arange(0, BT)
    cc = tl.arange(0, CP)
    ok = ik * BK + tl.arange(0, BK)
    ov = iv * BV + tl.arange(0, BV)
    off, smask = _block_offsets(ik, iv, cc, K, V, C, BK, BV)
    base = r.to(tl.int64) * (C * K * V)
    dS = tl.load(dfinal_ptr + base + off, mask=smask, other=0.0)
    nt = tl.cdiv(length, BT)
    for ii in range(0, NT_MAX):
        if ii < nt:
            i = nt - 1 - ii
            a = i * BT
            nvalid = tl.minimum(length - a, BT)
            tmask = ot < nvalid
            tok = (bos + a + ot).to(tl.int64)
            row = tok * H + hh
            g = tl.load(g_ptr + row, mask=tmask, other=0.0).to(tl.float32)
            eg = tl.where(tmask, tl.exp(tl.cumsum(g, axis=0)), 0.0) * scale
            _used, st2, stn2, _lb2, lam2 = _readout_tiles(
                starts_ptr, labels_ptr, lam_ptr, count_ptr, row, tok * PH + hp, tmask, cc, C)
            gch = (hofs - n + i).to(tl.int64)
            cnt_p = tl.load(pcount_ptr + gch * PH + hp)
            pst = tl.load(pstarts_ptr + (gch * PH + hp) * C + cc, mask=cc < cnt_p, other=BIG)
            tok_e = (bos + a + nvalid - 1).to(tl.int64)
            cnt_e = tl.load(count_ptr + tok_e * PH + hp)
            est = tl.load(starts_ptr + (tok_e * PH + hp) * C + cc, mask=cc < cnt_e, other=BIG)
            dS = tl.dot(_merge_map(pst, cnt_p, est, cc, True), dS,
                        input_precision="ieee") * tl.exp(tl.sum(g, axis=0))
            q = tl.load(q_ptr + row[:, None] * K + ok[None, :],
                        mask=tmask[:, None] & (ok[None, :] < K), other=0.0)
            do = tl.load(do_ptr + row[:, None] * V + ov[None, :],
                         mask=tmask[:, None] & (ov[None, :] < V), other=0.0)
            for j in range(0, C):
                if j < cnt_p:
                    _sel, wj = _old_weight(st2, stn2, lam2, _pick(pst, cc, j))
                    qw = q.to(tl.float32) * (wj * eg)[:, None]
                    R = _mm(tl.trans(qw), do, q.dtype, PREC, FP32)
                    dS += tl.where(cc[:, None] == j, tl.reshape(R, (1, BK * BV)), 0.0)
            snap = dh_ptr + ((hofs + i).to(tl.int64) * H + hh) * (C * K * V)
            tl.store(snap + off, dS.to(dh_ptr.dtype.element_ty),
                     mask=smask & (cc < cnt_p)[:, None])
    tl.store(dstart_ptr + base + off, dS, mask=smask)


@triton.jit
def _intra_weights(st2, stn2, lam2, pos, jj, C: tl.constexpr, BT: tl.constexpr):
    """``W_ts``: ``lam_t`` at the label of the slot of readout ``t`` holding token ``s``."""
    W = tl.zeros((BT, BT), dtype=tl.float32)
    for ii in range(0, C):
        col = jj[None, :] == ii
        st_i = tl.sum(tl.where(col, st2, 0), axis=1)
        stn_i = tl.sum(tl.where(col, stn2, 0), axis=1)
        lam_i = tl.sum(tl.where(col, lam2, 0.0), axis=1)
        inside = (pos[None, :] >= st_i[:, None]) & (pos[None, :] < stn_i[:, None])
        W += tl.where(inside, lam_i[:, None], 0.0)
    return W


@triton.jit
def _intra_label_grads(dW, st2, stn2, pos, jj, C: tl.constexpr, BT: tl.constexpr,
                       CP: tl.constexpr):
    """``[BT, CP]``: per readout ``t`` and slot, the sum of ``dW_ts`` over the tokens ``s``
    of the chunk that the slot holds."""
    out = tl.zeros((BT, CP), dtype=tl.float32)
    for ii in range(0, C):
        col = jj[None, :] == ii
        st_i = tl.sum(tl.where(col, st2, 0), axis=1)
        stn_i = tl.sum(tl.where(col, stn2, 0), axis=1)
        inside = (pos[None, :] >= st_i[:, None]) & (pos[None, :] < stn_i[:, None])
        out += tl.where(col, tl.sum(tl.where(inside, dW, 0.0), axis=1)[:, None], 0.0)
    return out


@triton.jit
def _store_lam_grads(dlam_ptr, row, used, lb2, dl2, jj, C: tl.constexpr):
    """``dlam_t[l]``: the sum over the slots of label ``l`` at ``t`` (an injected plan may give
    two slots one label, DLA-6.4), stored once per used slot (equal values where shared)."""
    tot = tl.zeros(dl2.shape, dtype=tl.float32)
    for ii in range(0, C):
        lab_i = tl.sum(tl.where(jj[None, :] == ii, lb2, 0), axis=1)
        same = used & (lb2 == lab_i[:, None])
        tot += tl.where(jj[None, :] == ii, tl.sum(tl.where(same, dl2, 0.0), axis=1)[:, None],
                        0.0)
    tl.store(dlam_ptr + row[:, None] * C + lb2, tot.to(dlam_ptr.dtype.element_ty), mask=used)


@triton.jit
def token_grad_kernel(
    q_ptr, k_ptr, v_ptr, g_ptr, lam_ptr, do_ptr, count_ptr, starts_ptr, labels_ptr,
    pcount_ptr, pstarts_ptr, table_ptr, bos_ptr, lens_ptr, pos0_ptr, hofs_ptr, h_ptr, dh_ptr,
    dq_ptr, dk_ptr, dv_ptr, dlam_ptr, dG_ptr, scale,
    H: tl.constexpr, PH: tl.constexpr, K: tl.constexpr, V: tl.constexpr, C: tl.constexpr,
    CP: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, NK: tl.constexpr,
    NV: tl.constexpr, PREC: tl.constexpr, FP32: tl.constexpr, PART: tl.constexpr,
):
    """``dv`` (``PART`` 0) or ``dq, dk, dlam`` and ``dG`` (``PART`` 1) of one chunk, all chunks
    in parallel: two launches of one body, so that each holds half the ``[BT, BT]`` tiles.

    ``h`` place ``i`` holds the old states of chunk ``i`` (forward snapshots) and ``dh``
    place ``i + 1`` the gradient ``dS'`` of the states at its end.
    """
    gch = tl.program_id(0).to(tl.int64)
    hh = tl.program_id(1)
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
    ov = tl.arange(0, BV)
    jj = tl.arange(0, CP)
    tmask = ot < nvalid
    tok = (bos + a + ot).to(tl.int64)
    row = tok * H + hh
    pos = p0 + a + ot
    g = tl.load(g_ptr + row, mask=tmask, other=0.0).to(tl.float32)
    gc = tl.cumsum(g, axis=0)
    eg = tl.where(tmask, tl.exp(gc), 0.0) * scale
    gam = tl.where(tmask, tl.exp(tl.sum(g, axis=0) - gc), 0.0)
    used, st2, stn2, lb2, lam2 = _readout_tiles(starts_ptr, labels_ptr, lam_ptr, count_ptr,
                                                row, tok * PH + hh % PH, tmask, jj, C)
    causal = (ot[:, None] >= ot[None, :]) & tmask[:, None] & tmask[None, :]
    D = tl.where(causal, tl.exp(tl.where(causal, gc[:, None] - gc[None, :], 0.0)), 0.0)
    WD = D * _intra_weights(st2, stn2, lam2, pos, jj, C, BT)
    # A = q k^T over all of K, dA = scale * do v^T over all of V
    A = tl.zeros((BT, BT), dtype=tl.float32)
    for kb in range(0, NK):
        kk = kb * BK + ok
        qk_m = tmask[:, None] & (kk[None, :] < K)
        qb = tl.load(q_ptr + row[:, None] * K + kk[None, :], mask=qk_m, other=0.0)
        kb_ = tl.load(k_ptr + row[:, None] * K + kk[None, :], mask=qk_m, other=0.0)
        A += _mm(qb, tl.trans(kb_), qb.dtype, PREC, FP32)
    if PART == 1:
        dA = tl.zeros((BT, BT), dtype=tl.float32)
        for vb in range(0, NV):
            vv = vb * BV + ov
            vm = tmask[:, None] & (vv[None, :] < V)
            dob = tl.load(do_ptr + row[:, None] * V + vv[None, :], mask=vm, other=0.0)
            vb_ = tl.load(v_ptr + row[:, None] * V + vv[None, :], mask=vm, other=0.0)
            dA += _mm(dob, tl.trans(vb_), dob.dtype, PREC, FP32)
        dA = dA * scale
        dl2 = _intra_label_grads(D * A * dA, st2, stn2, pos, jj, C, BT, CP)
        dP = dA * WD
    else:
        P = A * WD * scale  # the intra-chunk readout is P v, so dv = P^T dL/do
    # the slots of the chunk end that hold tokens of the chunk, and the old states
    tok_e = (bos + a + nvalid - 1).to(tl.int64)
    cnt_e = tl.load(count_ptr + tok_e * PH + hh % PH)
    est = tl.load(starts_ptr + (tok_e * PH + hh % PH) * C + jj, mask=jj < cnt_e, other=BIG)
    first_slot = _slot_of(est, p0 + a)
    cnt_p = tl.load(pcount_ptr + gch * PH + hh % PH)
    pst = pstarts_ptr + (gch * PH + hh % PH) * C
    hold = h_ptr + ((hofs + i).to(tl.int64) * H + hh) * (C * K * V)
    dnew = dh_ptr + ((hofs + i + 1).to(tl.int64) * H + hh) * (C * K * V)
    if PART == 0:
        for vb in range(0, NV):
            vv = vb * BV + ov
            vm = tmask[:, None] & (vv[None, :] < V)
            dob = tl.load(do_ptr + row[:, None] * V + vv[None, :], mask=vm, other=0.0)
            dvb = _mm(tl.trans(P), dob, dob.dtype, PREC, FP32)
            for m in range(0, C):
                if (m >= first_slot) & (m < cnt_e):
                    sel = tmask & _in_slot(est, jj, m, cnt_e, pos)
                    gm = tl.where(sel, gam, 0.0)
                    for kb in range(0, NK):
                        kk = kb * BK + ok
                        kb_ = tl.load(k_ptr + row[:, None] * K + kk[None, :],
                                      mask=tmask[:, None] & (kk[None, :] < K), other=0.0)
                        dS = tl.load(dnew + m * K * V + kk[:, None] * V + vv[None, :],
                                     mask=(kk[:, None] < K) & (vv[None, :] < V), other=0.0)
                        dvb += gm[:, None] * _mm(kb_, dS, kb_.dtype, PREC, FP32)
            tl.store(dv_ptr + row[:, None] * V + vv[None, :], dvb.to(dv_ptr.dtype.element_ty),
                     mask=vm)
    if PART == 1:
        dG = tl.zeros((BT,), dtype=tl.float32)
        for kb in range(0, NK):
            kk = kb * BK + ok
            qk_m = tmask[:, None] & (kk[None, :] < K)
            qb = tl.load(q_ptr + row[:, None] * K + kk[None, :], mask=qk_m, other=0.0)
            kb_ = tl.load(k_ptr + row[:, None] * K + kk[None, :], mask=qk_m, other=0.0)
            dqb = _mm(dP, kb_, kb_.dtype, PREC, FP32)
            dkb = _mm(tl.trans(dP), qb, qb.dtype, PREC, FP32)
            for vb in range(0, NV):
                vv = vb * BV + ov
                vm = tmask[:, None] & (vv[None, :] < V)
                skv = (kk[:, None] < K) & (vv[None, :] < V)
                dob = tl.load(do_ptr + row[:, None] * V + vv[None, :], mask=vm, other=0.0)
                vb_ = tl.load(v_ptr + row[:, None] * V + vv[None, :], mask=vm, other=0.0)
                for j in range(0, C):
                    if j < cnt_p:
                        spj = tl.load(pst + j)
                        sel2, wj = _old_weight(st2, stn2, lam2, spj)
                        S = tl.load(hold + j * K * V + kk[:, None] * V + vv[None, :], mask=skv,
                                    other=0.0)
                        x = _mm(dob, tl.trans(S), dob.dtype, PREC, FP32)  # do S_j^T
                        dqb += (wj * eg)[:, None] * x
                        rj = eg * tl.sum(qb.to(tl.float32) * x, axis=1)
                        dl2 += tl.where(sel2, rj[:, None], 0.0)
                for m in range(0, C):
                    if (m >= first_slot) & (m < cnt_e):
                        sel = tmask & _in_slot(est, jj, m, cnt_e, pos)
                        gm = tl.where(sel, gam, 0.0)
                        dS = tl.load(dnew + m * K * V + kk[:, None] * V + vv[None, :], mask=skv,
                                     other=0.0)
                        dkb += gm[:, None] * _mm(vb_, tl.trans(dS), vb_.dtype, PREC, FP32)
            tl.store(dq_ptr + row[:, None] * K + kk[None, :], dqb.to(dq_ptr.dtype.element_ty),
                     mask=qk_m)
            tl.store(dk_ptr + row[:, None] * K + kk[None, :], dkb.to(dk_ptr.dtype.element_ty),
                     mask=qk_m)
            dG += tl.sum(qb.to(tl.float32) * dqb, axis=1) - tl.sum(kb_.to(tl.float32) * dkb, axis=1)
        _store_lam_grads(dlam_ptr, row, used, lb2, dl2, jj, C)
        tl.store(dG_ptr + row, dG, mask=tmask)


def _cp(C: int) -> int:
    return triton.next_power_of_2(C)


def launch_dstate_pass(q, do, g, lam, plan: DevicePlan, rows: Rows,
                       prev: tuple[torch.Tensor, torch.Tensor], dh: torch.Tensor,
                       dfinal: torch.Tensor, scale: float) -> torch.Tensor:
    """Fill ``dh`` (places ``0 .. NT_n - 1`` of every sequence) and return the gradient of
    the states entering each sequence ``[N, H, C, K, V]`` float32 (``dfinal``, the final
    states' gradient, zero in unused slots, passes through empty sequences)."""
    H, K = q.shape[1:]
    V = do.shape[-1]
    N, C = rows.N, plan.starts.shape[-1]
    dstart = torch.empty((N, H, C, K, V), dtype=torch.float32, device=q.device)
    BK, BV = state_blocks(K, V, C, N * H)
    if N * H:
        dstate_pass_kernel[(N * H, triton.cdiv(K, BK), triton.cdiv(V, BV))](
            q, do, g, lam, plan.count, plan.starts, plan.labels, prev[0], prev[1],
            rows.bos, rows.lens, rows.hofs, dh, dfinal.contiguous(), dstart, float(scale),
            NT_MAX=bucket(triton.cdiv(rows.max_len, rows.chunk)), H=H, PH=plan_heads(plan),
            K=K, V=V, C=C, CP=state_cp(C), BT=rows.chunk, BK=BK, BV=BV,
            PREC=_precision(q.dtype), FP32=fp32_products(q.dtype),
            num_warps=BWD_TUNING["dstate_warps"],
        )
    return dstart


def launch_token_grads(q, k, v, g, lam, do, plan: DevicePlan, rows: Rows,
                       prev: tuple[torch.Tensor, torch.Tensor], h: torch.Tensor,
                       dh: torch.Tensor, scale: float, lam_dtype: torch.dtype):
    """``dq, dk, dv`` (the inputs' dtype), ``dlam`` (``lam_dtype``) and ``dG`` (float32),
    flat ``[B * T, H, ...]``."""
    BTOK, H, K = q.shape
    V = v.shape[-1]
    C = plan.starts.shape[-1]
    dq, dk = torch.empty_like(q), torch.empty_like(k)
    dv = torch.empty_like(v)
    dlam = torch.zeros((BTOK, H, C), dtype=lam_dtype, device=q.device)
    dG = torch.empty((BTOK, H), dtype=torch.float32, device=q.device)
    BK, BV = token_block(K), token_block(V)
    for part in (0, 1) if rows.chunk_table.shape[0] and H else ():
        token_grad_kernel[(rows.chunk_table.shape[0], H)](
            q, k, v, g, lam, do, plan.count, plan.starts, plan.labels, prev[0], prev[1],
            rows.chunk_table, rows.bos, rows.lens, rows.pos0, rows.hofs, h, dh,
            dq, dk, dv, dlam, dG, float(scale),
            H=H, PH=plan_heads(plan), K=K, V=V, C=C, CP=_cp(C), BT=rows.chunk, BK=BK, BV=BV,
            NK=triton.cdiv(K, BK), NV=triton.cdiv(V, BV), PREC=_precision(q.dtype),
            FP32=fp32_products(q.dtype), PART=part, num_warps=BWD_TUNING["token_warps"],
        )
    return dq, dk, dv, dlam, dG


def gate_gradient(dG: torch.Tensor, rows: Rows, B: int, packed: bool,
                  final_term: torch.Tensor | None) -> torch.Tensor:
    """``dg_t = sum_{t' >= t} dG_t'`` within each sequence, plus ``final_term [N, H]``
    (``<dS_final, S_final>``) for every token of sequence ``n``: ``[B * T, H]`` float32.

    Batch rows are reversed and summed one by one; packed sequences (``B = 1``) take
    the suffix sums of all tokens in float64 and subtract the suffix after each
    sequence, so no device sync is needed to find the sequences.
    """
    BTOK, H = dG.shape
    if not packed:
        T = BTOK // max(B, 1)
        out = dG.view(B, T, H).flip(1).cumsum(1).flip(1)
        if final_term is not None:
            out = out + final_term[:, None, :]
        return out.reshape(BTOK, H)
    suffix = torch.zeros((BTOK + 1, H), dtype=torch.float64, device=dG.device)
    suffix[:BTOK] = dG.double().flip(0).cumsum(0).flip(0)
    seq = rows.sequence_of_tokens(BTOK)
    eos = (rows.bos.long() + rows.lens.long())[seq]
    out = suffix[:BTOK] - suffix[eos]
    if final_term is not None:
        out = out + final_term.double()[seq]
    return out.float()
