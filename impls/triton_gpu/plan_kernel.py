"""The plan on the device: scores (DLA-2), the DLA scan (DLA-3), the Fenwick partition (DLA-4).

Scores are computed for all tokens at once (float64, the reference's
formula). Under ``dla`` a boundary depends on the score alone (DLA-3.1), but
merges depend on the running informations, so one Triton program per
(sequence, head) scans the tokens in order, keeping the ``C + 1`` slot
starts and informations in registers; informations are float64 running sums
in the reference's order, so plans agree exactly with ``dla.reference``.
The Fenwick partition is closed-form (DLA-4.1) and vectorized in torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from dla.impls.triton_gpu.rows import Rows


@dataclass(frozen=True)
class DevicePlan:
    """A plan in the kernels' layout: ``[B * T, H, ...]`` int32, plus the final informations."""

    boundary: torch.Tensor  # [BT, H] bool
    count: torch.Tensor  # [BT, H] int32
    starts: torch.Tensor  # [BT, H, C] int32
    labels: torch.Tensor  # [BT, H, C] int32
    final_info: torch.Tensor | None  # [N, H, C] float64 (None: recompute from the plan)


# ----------------------------------------------------------------- scores (DLA-2)
@triton.jit
def key_cosine_kernel(k_ptr, iota_ptr, n_tok, H: tl.constexpr, K: tl.constexpr,
                      BLOCK: tl.constexpr, BK: tl.constexpr):
    """DLA-2.1, DLA-2.2: ``1 - cos(k_t, k_{t-1})`` in float64 for a block of flat tokens."""
    tok = (tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)).to(tl.int64)  # may pass 2**31 / K
    h = tl.program_id(1)
    ok = tl.arange(0, BK)
    cur_m = (tok < n_tok)[:, None] & (ok[None, :] < K)
    prev_m = cur_m & (tok >= 1)[:, None]
    a = tl.load(k_ptr + (tok * H + h)[:, None] * K + ok[None, :], mask=cur_m, other=0.0)
    b = tl.load(k_ptr + ((tok - 1) * H + h)[:, None] * K + ok[None, :], mask=prev_m, other=0.0)
    a = a.to(tl.float64)
    b = b.to(tl.float64)
    # sqrt((a.a)(b.b)), not |a||b|: identical keys then score exactly 0 and opposite keys
    # exactly 2 (DLA-2.1). Inputs of at most 32 bits cannot overflow this product in float64.
    den = tl.sqrt(tl.sum(a * a, axis=1) * tl.sum(b * b, axis=1))
    cos = tl.where(den > 0, tl.sum(a * b, axis=1) / tl.where(den > 0, den, 1.0), 0.0)
    cos = tl.minimum(tl.maximum(cos, -1.0), 1.0)
    tl.store(iota_ptr + tok * H + h, 1.0 - cos, mask=tok < n_tok)


def _cosine_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """DLA-2.1, DLA-2.2 for a few rows (the first token of each carried sequence)."""
    a, b = a.double(), b.double()
    den = torch.sqrt((a * a).sum(-1) * (b * b).sum(-1))  # exact for identical keys (DLA-2.1)
    cos = torch.where(den > 0, (a * b).sum(-1) / torch.where(den > 0, den, 1.0), 0.0)
    return cos.clamp(-1.0, 1.0)


def token_scores(k: torch.Tensor, rows: Rows, prev_key: torch.Tensor | None) -> torch.Tensor:
    """DLA-2.1 to DLA-2.3: ``iota [B * T, H]`` float64 from keys ``[B * T, H, K]``.

    A kernel scores every token against the flat token before it; the first
    token of each sequence is then set to 0 (fresh) or scored against the
    carried ``prev_key`` (DLA-2.3).
    """
    n_tok, H, K = k.shape
    padded = torch.empty((n_tok + 1, H), dtype=torch.float64, device=k.device)
    iota = padded[:n_tok]
    if n_tok:
        BLOCK = 32
        key_cosine_kernel[(triton.cdiv(n_tok, BLOCK), H)](
            k, iota, n_tok, H=H, K=K, BLOCK=BLOCK, BK=triton.next_power_of_2(K))
    first = rows.first_tokens(n_tok)  # row n_tok of ``padded`` is the spare of empty sequences
    padded[first] = 0.0  # first tokens score 0 (DLA-2.3)...
    if prev_key is not None and n_tok:  # ...unless they continue a cache: no mask, no sync
        carried = ((rows.pos0.long() > 0) & (rows.lens > 0))[:, None]
        kf = k[first.clamp(max=n_tok - 1)].to(torch.float64)
        pk = prev_key.to(device=k.device, dtype=torch.float64)
        padded[first] = torch.where(carried, 1.0 - _cosine_rows(kf, pk), 0.0)
    return iota


# ----------------------------------------------------------------- DLA scan (DLA-3)
SCAN_TUNING = {"warps": 1}  # benchmarks/bench_triton_gpu.py --sweep measures alternatives

def bucket(n: int) -> int:
    """A loop bound for ``n`` iterations, rounded up to a power of two so few variants compile."""
    return triton.next_power_of_2(max(n, 1))


@triton.jit
def _shift_down(x, j, CP: tl.constexpr, fill):
    """``y[i] = x[i + 1]`` (``fill`` past the end); a gather, exact."""
    y = tl.gather(x, tl.minimum(j + 1, CP - 1), 0)
    return tl.where(j + 1 < CP, y, fill)


@triton.jit
def dla_scan_kernel(
    iota_ptr, next_ptr, bos_ptr, lens_ptr, pos0_ptr, count0_ptr, starts0_ptr, info0_ptr,
    ev_count_ptr, ev_starts_ptr, info_out_ptr, n_tok,
    H: tl.constexpr, C: tl.constexpr, CP: tl.constexpr,
):
    """DLA-3.1 to DLA-3.5 for one (sequence, head), boundary after boundary.

    A token that is not a boundary only adds its score to the newest slot
    (DLA-3.2), so the scan folds those scores in order (the reference's running
    sum, bit for bit) and does the open / merge work only at boundaries, jumping
    to the next one with ``next`` (the next boundary at or after each token). The
    partition after each boundary is written at that boundary's token; the plan
    of every token is gathered from there afterwards, in parallel. ``iota``,
    ``next`` and the per-boundary outputs are head-major, ``[H, B * T, ...]``, so a
    row's tokens are contiguous; the final informations are ``[N, H, C]``.
    """
    r = tl.program_id(0)
    n = r // H
    h = r % H
    bos = tl.load(bos_ptr + n)
    length = tl.load(lens_ptr + n)
    p0 = tl.load(pos0_ptr + n)
    j = tl.arange(0, CP)
    live = j < C
    cnt = tl.load(count0_ptr + r)
    st = tl.load(starts0_ptr + r * C + j, mask=live, other=-1)
    inf = tl.load(info0_ptr + r * C + j, mask=live, other=0.0)
    row = h.to(tl.int64) * n_tok + bos
    t = bos * 0
    tb = tl.load(next_ptr + row, mask=length > 0, other=bos + length) - bos
    while tb < length:
        while t < tb:  # not boundaries: their scores join the newest slot, in order
            inf = tl.where(j == cnt - 1, inf + tl.load(iota_ptr + row + t), inf)
            t += 1
        x = tl.load(iota_ptr + row + tb)
        after = tl.load(next_ptr + row + tb + 1, mask=tb + 1 < length, other=bos + length) - bos
        opening = j == cnt  # DLA-3.1: open a slot, then write (DLA-3.2)
        st = tl.where(opening, p0 + tb, st)
        inf = tl.where(opening, 0.0, inf)
        cnt = cnt + 1
        inf = tl.where(j == cnt - 1, inf + x, inf)
        if cnt > C:  # DLA-3.4: merge the adjacent pair of least information, oldest on ties
            nxt = _shift_down(inf, j, CP, 0.0)
            cost = tl.where(j < C, inf + nxt, float("inf"))
            m = tl.argmin(cost, axis=0, tie_break_left=True)
            inf = tl.where(j < m, inf, tl.where(j == m, inf + nxt, nxt))
            st = tl.where(j <= m, st, _shift_down(st, j, CP, -1))
            cnt = cnt - 1
        tl.store(ev_starts_ptr + (row + tb) * C + j, st, mask=live)
        tl.store(ev_count_ptr + row + tb, cnt)
        t = tb + 1
        tb = after
    while t < length:
        inf = tl.where(j == cnt - 1, inf + tl.load(iota_ptr + row + t), inf)
        t += 1
    tl.store(info_out_ptr + r * C + j, inf, mask=live)


def _boundaries(iota_hm: torch.Tensor, rows: Rows, tau: float, count0: torch.Tensor
                ) -> torch.Tensor:
    """DLA-3.1, head-major ``[H, B * T]``: a score above ``tau``, or a token with no state
    (the first token of a sequence whose carried cache is empty)."""
    H, BT = iota_hm.shape
    bnd = torch.cat([iota_hm > tau, torch.zeros((H, 1), dtype=torch.bool,
                                                device=iota_hm.device)], 1)
    col = rows.first_tokens(BT)  # column BT is the spare
    bnd[:, col] |= (count0 == 0).T
    return bnd[:, :BT]


def _gather_plan(ev_count, ev_starts, bnd, rows: Rows, count0, starts0):
    """Every token's partition: that after the last boundary at or before it (the carried one
    if there is none yet in its sequence); token-major ``[B * T, H, ...]``."""
    H, BT = bnd.shape
    C = ev_starts.shape[-1]
    dev = bnd.device
    tok = torch.arange(BT, device=dev)
    last = torch.cummax(torch.where(bnd, tok, -1), 1).values  # [H, BT]
    seq = rows.sequence_of_tokens(BT)
    has = last >= rows.bos.long()[seq]
    li = last.clamp(min=0)
    count = torch.where(has, ev_count.gather(1, li), count0.T[:, seq])
    starts = torch.where(has[..., None], ev_starts.gather(1, li[..., None].expand(H, BT, C)),
                         starts0.permute(1, 0, 2)[:, seq])
    return count.T.contiguous(), starts.transpose(0, 1).contiguous()


def plan_dla(iota: torch.Tensor, rows: Rows, C: int, tau: float, init: tuple) -> DevicePlan:
    """Launch the DLA scan; ``init = (count0 [N,H], starts0 [N,H,C], info0 [N,H,C])``."""
    BT, H = iota.shape
    dev = iota.device
    count0, starts0, info0 = (x.contiguous() for x in init)
    hm = iota.t().contiguous()
    bnd = _boundaries(hm, rows, tau, count0)
    tok = torch.arange(BT, device=dev, dtype=torch.int32)
    big = torch.iinfo(torch.int32).max
    nxt = torch.cummin(torch.where(bnd, tok, big).flip(1), 1).values.flip(1).contiguous()
    ev_count = torch.empty((H, BT), dtype=torch.int32, device=dev)
    ev_starts = torch.empty((H, BT, C), dtype=torch.int32, device=dev)
    info = torch.empty((rows.N, H, C), dtype=torch.float64, device=dev)
    if rows.N * H:
        dla_scan_kernel[(rows.N * H,)](
            hm, nxt, rows.bos, rows.lens, rows.pos0, count0, starts0, info0,
            ev_count, ev_starts, info, BT,
            H=H, C=C, CP=triton.next_power_of_2(C + 1), num_warps=SCAN_TUNING["warps"],
        )
    count, starts = _gather_plan(ev_count, ev_starts, bnd, rows, count0, starts0)
    j = torch.arange(C, dtype=torch.int32, device=dev)
    rank = count[..., None] - 1 - j  # DLA-3.5: recency rank, computed in parallel after the scan
    labels = torch.where(rank >= 0, rank, -1).to(torch.int32)
    return DevicePlan(bnd.T.contiguous(), count, starts, labels, info)


# ----------------------------------------------------------------- Fenwick (DLA-4)
def fenwick_positions(rows: Rows, BT: int) -> torch.Tensor:
    """The absolute position (carried tokens included) of every flat token ``[B * T]``."""
    seq = rows.sequence_of_tokens(BT)
    local = torch.arange(BT, device=seq.device) - rows.bos.long()[seq]
    return rows.pos0.long()[seq] + local


def plan_fenwick(rows: Rows, BT: int, H: int, C: int, shared: bool = False) -> DevicePlan:
    """DLA-4.1, DLA-4.2: at position ``p`` level ``l >= 1`` exists iff bit ``l - 1`` of ``p`` is 1.

    Its tokens are ``[(p >> l) << l, ((p >> l) << l) + 2 ** (l - 1))``; level 0 is
    ``p`` alone. Slots list the levels from the highest (oldest) down. The partition
    depends on positions only, so with ``shared`` the plan has one head that every head
    reads (``[B * T, 1, ...]``: ``H`` times fewer bytes to write and read).
    """
    pos = fenwick_positions(rows, BT)  # capacity checked by validation.check_*_call (DLA-9.11)
    lv = torch.arange(C - 1, -1, -1, device=pos.device)  # levels, oldest first
    bit = (pos[:, None] >> (lv - 1).clamp(min=0)[None, :]) & 1
    exists = (lv[None, :] == 0) | ((lv[None, :] >= 1) & (bit == 1))
    lstart = (pos[:, None] >> lv[None, :]) << lv[None, :]
    slot = torch.cumsum(exists.long(), dim=1) - 1  # [BT, C]
    count = exists.sum(1)
    starts = torch.full((BT, C), -1, dtype=torch.int64, device=pos.device)
    labels = torch.full((BT, C), -1, dtype=torch.int64, device=pos.device)
    idx = torch.where(exists, slot, C)  # park missing levels in an extra column
    starts = torch.cat([starts, starts[:, :1]], 1).scatter(
        1, idx, torch.where(exists, lstart, -1))[:, :C]
    labels = torch.cat([labels, labels[:, :1]], 1).scatter(
        1, idx, torch.where(exists, lv[None, :].expand_as(idx), -1))[:, :C]

    PH = 1 if shared else H

    def rep(x: torch.Tensor) -> torch.Tensor:
        return x[:, None].expand(BT, PH, *x.shape[1:]).contiguous()

    return DevicePlan(
        boundary=torch.ones((BT, PH), dtype=torch.bool, device=pos.device),
        count=rep(count.to(torch.int32)), starts=rep(starts.to(torch.int32)),
        labels=rep(labels.to(torch.int32)), final_info=None,
    )
