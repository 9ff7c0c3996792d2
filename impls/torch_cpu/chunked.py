"""The chunked executor of ``torch_cpu`` (spec section DLA-5), both bases, differentiable.

Notation for one row and one chunk ``[a, b)`` of ``L`` tokens (local index
``i``): ``Gc_i = g_a + ... g_{a+i}`` (cumulative log decay inside the chunk),
``P`` the partition at ``a - 1`` with states ``S_j`` (taken from the plan,
or from the cache for the first chunk). Because the partition only coarsens
(DLA-3.6), each old state ``j`` lies inside exactly one state at a later
readout ``t``; its label there is the label of the slot of ``starts_t`` that
contains ``start_j``. Likewise token ``s`` of the chunk has label
``label_t(s)`` at ``t >= s``.

Every state obeys the same linear transition, so the output is linear in the
*atoms* (old states and single tokens), each weighted by ``lam_t`` at its
label (DLA-5.3)::

    o_t = scale * ( sum_j lam_t[lbl_t(j)] (Qe S_j)_t  +  sum_{s<=t} lam_t[lbl_t(s)] A_ts v_s )

and the states at ``b - 1`` are ``S'_j = sum_{i in j} Phi S_i + sum_{s in j} W_s v_s^T``.
The four chunk operators are:

* ``gla`` (DLA-5.1): ``A_ts = exp(Gc_t - Gc_s) q_t . k_s`` (masked ``s <= t``,
  the exponent is taken only where it is <= 0), ``Qe_t = exp(Gc_t) q_t``,
  ``W_s = exp(Gc_{L-1} - Gc_s) k_s``, ``Phi = exp(Gc_{L-1}) I`` (a scalar).
* ``delta`` (DLA-5.2), a chunked WY/UT form: with
  ``Gam_ts = exp(Gc_t - Gc_s)`` (``s <= t``) and the unit lower-triangular
  ``M = I + strict_lower(beta_t Gam_ts k_t . k_s)``, let
  ``Tm = M^{-1} diag(beta)`` (one triangular solve per chunk). Then
  ``A = (Gam * Q K^T) Tm``, ``Qe = E Q - A E K`` with ``E = diag(exp(Gc))``,
  ``W = Tm^T (gamma * K)`` with ``gamma_s = exp(Gc_{L-1} - Gc_s)``, and
  ``Phi = exp(Gc_{L-1}) I - (gamma * K)^T Tm E K`` (a ``K x K`` matrix).
  (Derivation: the gated delta recurrence from a zero state has
  ``S_t = sum_{s<=t} exp(G_t - G_s) k_s u_s^T`` with
  ``u = M^{-1} diag(beta) (V - E K S_0)``; apply it to one-hot values and to
  each old state.)

All intra-chunk work (labels, weights, ``A``, ``Qe``, ``W``, the token
contributions of every *piece*, i.e. every state at ``b - 1`` that holds
tokens of the chunk, about one per chunk) is batched over every chunk at
once. Only the chunk recurrence loops over chunks: the inter-chunk readout
``X @ [S_0; ..; S_{C-1}]`` with ``X[t, (j, k)] = lam_t[lbl_t(j)] Qe[t, k]``
(one ``[L, C K] @ [C K, V]`` matmul per chunk, done in the loop so that
the forward pass never holds the states of every chunk start together, which
the fully batched form needs: ``NC C K V`` floats) and the update
``S <- Mem (Phi S) + U``. No exponential of a positive number is ever
formed. The whole computation is
torch operations, so ``torch.autograd`` gives gradients for ``q, k, v, g,
beta, lam`` (and the carried states).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

_BIG = torch.iinfo(torch.int64).max


@dataclass
class ChunkIndex:
    """Integer structure of every chunk, shapes ``[R, NC, ...]`` (no gradients).

    ``part [L, C]``: the partition (starts, unused = BIG) at each readout, from
    which :func:`_intra_readout` counts the slot of each token of the chunk;
    ``slot_old [L, C]``: slot of old state ``j`` at ``t``, with ``old_used [C]``
    marking the old states that exist; ``mem [C, C]``: old state ``i`` inside new
    state ``j`` at the chunk end. The *pieces*
    ``(piece_r, piece_n, piece_c) [J]`` list every state ``c`` at the end of
    chunk ``n`` of row ``r`` that holds tokens of that chunk, and
    ``piece_mask [J, L]`` marks those tokens. States are contiguous, so most
    chunks have one piece: ``J`` is about ``R * NC``, not ``R * NC * C``.
    """

    part: torch.Tensor
    slot_old: torch.Tensor
    old_used: torch.Tensor
    mem: torch.Tensor
    piece_r: torch.Tensor
    piece_n: torch.Tensor
    piece_c: torch.Tensor
    piece_mask: torch.Tensor


def _slot_of(st: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Slot of positions ``p [..., X]`` in sorted partitions ``st [..., C]`` (unused = BIG):
    the number of starts ``<= p``, minus one (a binary search per position)."""
    return torch.searchsorted(st.contiguous(), p.contiguous(), right=True) - 1


def _token_slots(st: torch.Tensor, a: torch.Tensor, L: int) -> torch.Tensor:
    """Slot plus one of token ``s`` of the chunk (position ``a + s``) in the partition
    ``st [.., L, C]`` of every readout ``t``: ``#{c: st_t[c] <= a + s}``, a ``[.., L, L]`` table.

    The same count as :func:`_slot_of` on the ``L x L`` grid, but the positions of a chunk
    are consecutive, so each start only marks the first token it covers
    (``clamp(start - a, 0, L)``; column ``L`` means "none of the chunk") and a
    cumulative sum along ``s`` counts the starts ``<= a + s``: one pass over the table
    instead of a binary search per entry. In place, in the one int64 table that
    ``gather`` reads (no ``- 1`` pass: the reader prepends a zero column instead).
    """
    first = (st - a[..., None, None]).clamp_(0, L)
    marks = torch.zeros((*st.shape[:-1], L + 1), dtype=torch.int64, device=st.device)
    marks.scatter_add_(-1, first,
                       torch.ones((), dtype=torch.int64, device=st.device).expand(first.shape))
    return marks.cumsum_(-1)[..., :L]


def chunk_index(starts: torch.Tensor, labels: torch.Tensor, count: torch.Tensor,
                pos: torch.Tensor, starts0: torch.Tensor, count0: torch.Tensor,
                L: int, dtype: torch.dtype) -> ChunkIndex:
    """Build :class:`ChunkIndex` from plan rows ``starts, labels [R, Tp, C]``,
    ``count [R, Tp]``, absolute positions ``pos [R, Tp]`` and the carried
    partition ``starts0 [R, C]``, ``count0 [R]``."""
    R, Tp, C = starts.shape
    NC = Tp // L
    ar = torch.arange(C, device=starts.device)
    st = torch.where(ar < count.unsqueeze(-1), starts, _BIG).view(R, NC, L, C)
    p = pos.view(R, NC, L)
    # partition at a - 1 of every chunk
    prev_st = torch.cat([starts0.unsqueeze(1), starts.view(R, NC, L, C)[:, :-1, -1]], 1)
    prev_cnt = torch.cat([count0.unsqueeze(1), count.view(R, NC, L)[:, :-1, -1]], 1)
    prev_used = ar < prev_cnt.unsqueeze(-1)  # [R, NC, C]
    prev_q = torch.where(prev_used, prev_st, 0)
    slot_old = _slot_of(st, prev_q.unsqueeze(2).expand(R, NC, L, C)).clamp(min=0)
    end_slot_old = slot_old[:, :, -1]  # [R, NC, C_old]
    mem = (end_slot_old.unsqueeze(-2) == ar.view(1, 1, C, 1)) & prev_used.unsqueeze(-2)
    pr, pn, pc, pmask = _pieces(st[:, :, -1], count.view(R, NC, L)[:, :, -1], p[:, :, 0], L)
    return ChunkIndex(st, slot_old, prev_used.to(dtype), mem.to(dtype), pr, pn, pc,
                      pmask.to(dtype))


def _pieces(end_st: torch.Tensor, end_cnt: torch.Tensor, a: torch.Tensor, L: int):
    """The states at each chunk end ``end_st [R, NC, C]`` that hold tokens ``[a, a + L)``."""
    C = end_st.shape[-1]
    ar = torch.arange(C, device=end_st.device)
    first = _slot_of(end_st, a.unsqueeze(-1)).squeeze(-1).clamp(min=0)
    valid = (ar >= first.unsqueeze(-1)) & (ar < end_cnt.unsqueeze(-1))
    r, n, c = valid.nonzero(as_tuple=True)
    a_j, cnt_j = a[r, n], end_cnt[r, n]
    lo = (end_st[r, n, c] - a_j).clamp(min=0)
    nxt = end_st[r, n, (c + 1).clamp(max=C - 1)] - a_j
    hi = torch.where(c + 1 < cnt_j, nxt, L).clamp(max=L)
    l = torch.arange(L, device=end_st.device)
    mask = (l >= lo.unsqueeze(-1)) & (l < hi.unsqueeze(-1))
    return r, n, c, mask


def _slot_weights(lam: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``lam_t[labels_t[c]]`` per slot ``c`` (DLA-5.3), zero in unused slots: ``[R, NC, L, C]``."""
    w = torch.gather(lam, 3, labels.clamp(min=0))
    return torch.where(labels >= 0, w, torch.zeros((), dtype=lam.dtype, device=lam.device))


@dataclass
class ChunkOps:
    """The chunk operators of the module docstring but ``A`` (returned apart, so that it is
    freed once the intra-chunk readout is done), shapes ``[R, NC, ...]``.
    ``phi`` is ``[R, NC]`` (a scalar decay) for gla and ``[R, NC, K, K]`` for delta."""

    Qe: torch.Tensor
    W: torch.Tensor
    phi: torch.Tensor


def _decays(g: torch.Tensor, L: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``Gam [.., L, L]`` (exp of the masked in-chunk differences), ``exp(Gc)``, ``gamma``."""
    Gc = torch.cumsum(g, -1)
    causal = torch.ones(L, L, dtype=torch.bool, device=g.device).tril()
    # in place: two fewer [.., L, L] temporaries (sub and exp keep what backward needs)
    gam = (Gc.unsqueeze(-1) - Gc.unsqueeze(-2)).masked_fill_(~causal, float("-inf")).exp_()
    return gam, torch.exp(Gc), torch.exp(Gc[..., -1:] - Gc)


def ops_gla(q: Tensor, k: Tensor, g: Tensor, L: int) -> tuple[Tensor, ChunkOps]:
    """DLA-5.1 chunk operators ``A`` and the rest."""
    gam, e, gamma = _decays(g, L)
    A = (q @ k.transpose(-1, -2)) * gam
    return A, ChunkOps(q * e.unsqueeze(-1), k * gamma.unsqueeze(-1), e[..., -1])


def ops_delta(q: Tensor, k: Tensor, g: Tensor, beta: Tensor, L: int) -> tuple[Tensor, ChunkOps]:
    """DLA-5.2 chunk operators ``A`` and the rest, in the WY/UT form (one triangular solve
    per chunk)."""
    gam, e, gamma = _decays(g, L)
    KK = (k @ k.transpose(-1, -2)) * gam
    strict = torch.ones(L, L, dtype=torch.bool, device=k.device).tril(-1)
    M = torch.where(strict, beta.unsqueeze(-1) * KK,
                    torch.zeros((), dtype=k.dtype, device=k.device))
    eye = torch.eye(L, dtype=k.dtype, device=k.device)
    Tm = torch.linalg.solve_triangular(M + eye, torch.diag_embed(beta), upper=False,
                                       unitriangular=True)
    A = ((q @ k.transpose(-1, -2)) * gam) @ Tm
    Ek = k * e.unsqueeze(-1)
    Qe = q * e.unsqueeze(-1) - A @ Ek
    Kg = k * gamma.unsqueeze(-1)
    W = Tm.transpose(-1, -2) @ Kg
    Kdim = k.shape[-1]
    phi = (e[..., -1, None, None] * torch.eye(Kdim, dtype=k.dtype, device=k.device)
           - Kg.transpose(-1, -2) @ (Tm @ Ek))
    return A, ChunkOps(Qe, W, phi)


def _pad(x: torch.Tensor, Tp: int) -> torch.Tensor:
    T = x.shape[1]
    if Tp == T:
        return x
    pad = torch.zeros((x.shape[0], Tp - T, *x.shape[2:]), dtype=x.dtype, device=x.device)
    return torch.cat([x, pad], 1)


def _pad_last(x: torch.Tensor, Tp: int) -> torch.Tensor:
    """Pad the time axis by repeating the last position (the partition stays put)."""
    T = x.shape[1]
    if Tp == T:
        return x
    return torch.cat([x, x[:, -1:].expand(x.shape[0], Tp - T, *x.shape[2:])], 1)


def _piece_contributions(ops: ChunkOps, idx: ChunkIndex, vc: torch.Tensor, C: int
                         ) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    """Per chunk ``n``: the token contributions ``sum_{s in piece} W_s v_s^T`` of its pieces
    (``[J_n, K * V]``) and their destination rows ``r * C + c`` in the state tensor."""
    NC = vc.shape[1]
    order = torch.argsort(idx.piece_n, stable=True)
    pr, pn, pc = idx.piece_r[order], idx.piece_n[order], idx.piece_c[order]
    flat = pr * NC + pn  # index_select on [R * NC, L, .] is far cheaper than W[pr, pn]
    Wp = ops.W.flatten(0, 1).index_select(0, flat).mul_(idx.piece_mask[order].unsqueeze(-1))
    Up = (Wp.transpose(-1, -2) @ vc.flatten(0, 1).index_select(0, flat)).flatten(1)
    per_chunk = torch.bincount(pn, minlength=NC).tolist()
    return torch.split(Up, per_chunk), torch.split(pr * C + pc, per_chunk)


def _recurrence(ops: ChunkOps, idx: ChunkIndex, w_old: torch.Tensor, S0: torch.Tensor,
                U_n: tuple[Tensor, ...], dest_n: tuple[Tensor, ...], base: str
                ) -> tuple[Tensor, Tensor]:
    """The loop over chunks: inter-chunk readout ``[R, NC, L, V]`` and the final states.

    Readout of chunk ``n``: ``X @ [S_0; ..; S_{C-1}]`` with
    ``X[t, (j, k)] = lam_t[lbl_t(j)] Qe[t, k]``, one ``[L, C K] @ [C K, V]`` matmul.
    Update: ``S <- Mem (Phi S) + U``. Used slots are a prefix (``0 .. count - 1``), so
    both products only read the first ``c_n`` old states, ``c_n`` the largest count of
    any row at the start of chunk ``n`` (the rest have weight and membership zero).
    """
    R, C, Kd, Vd = S0.shape
    L = w_old.shape[2]
    S = S0.reshape(R, C, Kd * Vd)
    # per-chunk operands as views made once (fewer Python-level torch calls per chunk)
    w_n = w_old.unsqueeze(-1).unbind(1)  # [R, L, C, 1] each
    qe_n = ops.Qe.unsqueeze(-2).unbind(1)  # [R, L, 1, K] each
    if base == "gla":
        upd_n = (idx.mem * ops.phi[:, :, None, None]).unbind(1)  # Mem Phi, [R, C, C] each
    else:
        mem_n, phi_n = idx.mem.unbind(1), ops.phi.unsqueeze(2).unbind(1)
    used_n = idx.old_used.sum(-1).amax(0).clamp(min=1).to(torch.int64).tolist()
    outs = []
    for n, c in enumerate(used_n):
        Sc = S[:, :c]
        outs.append((w_n[n][:, :, :c] * qe_n[n]).view(R, L, c * Kd) @ Sc.view(R, c * Kd, Vd))
        if base == "gla":
            S = upd_n[n][:, :, :c] @ Sc
        else:
            S = mem_n[n][:, :, :c] @ (phi_n[n] @ Sc.view(R, c, Kd, Vd)).view(R, c, Kd * Vd)
        # in place: S is the fresh product above, which no backward formula reads
        S = S.view(R * C, Kd * Vd).index_add_(0, dest_n[n], U_n[n]).view(R, C, Kd * Vd)
    return torch.stack(outs, 1), S.view(R, C, Kd, Vd)


def execute_chunked(q: Tensor, k: Tensor, v: Tensor, g: Tensor, lam: Tensor,
                    beta: Tensor | None, starts: Tensor, labels: Tensor, count: Tensor,
                    pos0: Tensor, S0: Tensor, starts0: Tensor, count0: Tensor,
                    base: str, scale: float, chunk_size: int) -> tuple[Tensor, Tensor]:
    """DLA-5: run ``R`` rows of length ``T >= 1`` through a plan, chunk by chunk.

    ``q, k [R, T, K]``, ``v [R, T, V]``, ``g, beta [R, T]``, ``lam [R, T, C]``;
    plan rows ``starts, labels [R, T, C]``, ``count [R, T]`` (int64); ``pos0 [R]``
    the absolute position of token 0; ``S0 [R, C, K, V]``, ``starts0 [R, C]``,
    ``count0 [R]`` the carried states (DLA-7). Returns ``o [R, T, V]`` and the
    states after the last token ``[R, C, K, V]``.
    """
    R, T, Kd = q.shape
    Vd = v.shape[-1]
    C = lam.shape[-1]
    L = chunk_size
    NC = -(-T // L)
    Tp = NC * L
    q, k, v, g, lam = (_pad(x, Tp) for x in (q, k, v, g, lam))
    starts, labels, count = (_pad_last(x, Tp) for x in (starts, labels, count))
    pos = pos0.unsqueeze(1) + torch.arange(Tp, device=pos0.device)
    idx = chunk_index(starts, labels, count, pos, starts0, count0, L, q.dtype)
    qc, kc, vc = q.view(R, NC, L, Kd), k.view(R, NC, L, Kd), v.view(R, NC, L, Vd)
    gc, lamc = g.view(R, NC, L), lam.view(R, NC, L, C)
    if beta is None:  # gla (DLA-5.1); delta always comes with beta (DLA-9.12)
        A, ops = ops_gla(qc, kc, gc, L)
    else:
        A, ops = ops_delta(qc, kc, gc, _pad(beta, Tp).view(R, NC, L), L)
    lw = _slot_weights(lamc, labels.view(R, NC, L, C))
    # the [L, L] work first, so that its tables are freed before the chunk loop runs
    o_intra = _intra_readout(A, lw, idx.part, pos.view(R, NC, L)[:, :, 0], vc)
    del A
    U_n, dest_n = _piece_contributions(ops, idx, vc, C)
    w_old = torch.gather(lw, 3, idx.slot_old) * idx.old_used.unsqueeze(2)  # [R, NC, L, C]
    o_inter, S = _recurrence(ops, idx, w_old, S0, U_n, dest_n, base)
    o = scale * (o_inter + o_intra)
    return o.reshape(R, Tp, Vd)[:, :T], S


def _intra_readout(A: Tensor, lw: Tensor, part: Tensor, a: Tensor, vc: Tensor) -> Tensor:
    """``sum_{s <= t} lam_t[lbl_t(s)] A_ts v_s`` for every chunk (``A`` is zero above the
    diagonal): the slot of each token at each readout of its chunk (a plan covers
    ``[0, t]``, DLA-3.6) picks its weight from ``lw [.., L, C]``."""
    L, C = lw.shape[-2:]
    if C == 1:  # every token is in slot 0: the weight of readout t, broadcast along s
        return (A * lw) @ vc
    slot1 = _token_slots(part, a, L)  # the slot plus one: read through a zero column
    lw1 = torch.cat([torch.zeros_like(lw[..., :1]), lw], -1)
    return (A * torch.gather(lw1, 3, slot1)) @ vc
