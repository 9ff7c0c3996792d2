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
contributions grouped by their slot at ``b - 1``, and the inter-chunk
readout ``Qe @ [S_0 .. S_{C-1}]``) is batched over every chunk at once; only
the state recurrence ``S <- Mem (Phi S) + U`` loops over chunks. No
exponential of a positive number is ever formed. The whole computation is
torch operations, so ``torch.autograd`` gives gradients for ``q, k, v, g,
beta, lam`` (and the carried states).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

_BIG = torch.iinfo(torch.int64).max


@dataclass
class ChunkIndex:
    """Integer structure of every chunk, shapes ``[R, NC, ...]`` (no gradients).

    ``lab_tt [L, L]``: label of token ``s`` at readout ``t`` (``-1`` above the
    diagonal); ``lab_old [L, C]``: label of old state ``j`` at ``t`` (``-1``
    for unused old slots); ``mem [C, C]``: old state ``i`` inside new state
    ``j`` at the chunk end; ``onehot [L, C]``: token ``s`` inside state ``j``
    at the chunk end.
    """

    lab_tt: torch.Tensor
    lab_old: torch.Tensor
    mem: torch.Tensor
    onehot: torch.Tensor


def _slot_of(st: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Slot of positions ``p [..., X]`` in sorted partitions ``st [..., C]`` (unused = BIG):
    the number of starts ``<= p``, minus one (a binary search per position)."""
    return torch.searchsorted(st.contiguous(), p.contiguous(), right=True) - 1


def chunk_index(starts: torch.Tensor, labels: torch.Tensor, count: torch.Tensor,
                pos: torch.Tensor, starts0: torch.Tensor, count0: torch.Tensor,
                L: int, dtype: torch.dtype) -> ChunkIndex:
    """Build :class:`ChunkIndex` from plan rows ``starts, labels [R, Tp, C]``,
    ``count [R, Tp]``, absolute positions ``pos [R, Tp]`` and the carried
    partition ``starts0 [R, C]``, ``count0 [R]``."""
    R, Tp, C = starts.shape
    NC = Tp // L
    ar = torch.arange(C)
    st = torch.where(ar < count.unsqueeze(-1), starts, _BIG).view(R, NC, L, C)
    lab = labels.view(R, NC, L, C)
    p = pos.view(R, NC, L)
    # labels of the chunk's tokens at each readout of the chunk
    slot_tt = _slot_of(st, p.unsqueeze(2).expand(R, NC, L, L)).clamp(min=0)
    lab_tt = torch.gather(lab, 3, slot_tt)
    causal = torch.ones(L, L, dtype=torch.bool).tril()
    lab_tt = torch.where(causal, lab_tt, -1)
    # partition at a - 1 of every chunk
    prev_st = torch.cat([starts0.unsqueeze(1), starts.view(R, NC, L, C)[:, :-1, -1]], 1)
    prev_cnt = torch.cat([count0.unsqueeze(1), count.view(R, NC, L)[:, :-1, -1]], 1)
    prev_used = ar < prev_cnt.unsqueeze(-1)  # [R, NC, C]
    prev_q = torch.where(prev_used, prev_st, 0)
    slot_old = _slot_of(st, prev_q.unsqueeze(2).expand(R, NC, L, C)).clamp(min=0)
    lab_old = torch.where(prev_used.unsqueeze(2), torch.gather(lab, 3, slot_old), -1)
    end_slot_old = slot_old[:, :, -1]  # [R, NC, C_old]
    mem = (end_slot_old.unsqueeze(-2) == ar.view(1, 1, C, 1)) & prev_used.unsqueeze(-2)
    end_slot_tok = _slot_of(st[:, :, -1], p).clamp(min=0)  # [R, NC, L]
    onehot = end_slot_tok.unsqueeze(-1) == ar
    return ChunkIndex(lab_tt, lab_old, mem.to(dtype), onehot.to(dtype))


def _gather_lam(lam: torch.Tensor, lab: torch.Tensor) -> torch.Tensor:
    """``lam_t[lab]`` with zero where ``lab < 0``; ``lam [R, NC, L, C]``, ``lab [R, NC, L, X]``."""
    w = torch.gather(lam, 3, lab.clamp(min=0))
    return torch.where(lab >= 0, w, torch.zeros((), dtype=lam.dtype))


@dataclass
class ChunkOps:
    """The chunk operators of the module docstring, shapes ``[R, NC, ...]``.
    ``phi`` is ``[R, NC]`` (a scalar decay) for gla and ``[R, NC, K, K]`` for delta."""

    A: torch.Tensor
    Qe: torch.Tensor
    W: torch.Tensor
    phi: torch.Tensor


def _decays(g: torch.Tensor, L: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``Gam [.., L, L]`` (exp of the masked in-chunk differences), ``exp(Gc)``, ``gamma``."""
    Gc = torch.cumsum(g, -1)
    causal = torch.ones(L, L, dtype=torch.bool).tril()
    diff = Gc.unsqueeze(-1) - Gc.unsqueeze(-2)
    gam = torch.exp(torch.where(causal, diff, float("-inf")))
    return gam, torch.exp(Gc), torch.exp(Gc[..., -1:] - Gc)


def ops_gla(q, k, g, L: int) -> ChunkOps:
    """DLA-5.1 chunk operators."""
    gam, e, gamma = _decays(g, L)
    A = (q @ k.transpose(-1, -2)) * gam
    return ChunkOps(A, q * e.unsqueeze(-1), k * gamma.unsqueeze(-1), e[..., -1])


def ops_delta(q, k, g, beta, L: int) -> ChunkOps:
    """DLA-5.2 chunk operators in the WY/UT form (one triangular solve per chunk)."""
    gam, e, gamma = _decays(g, L)
    KK = (k @ k.transpose(-1, -2)) * gam
    strict = torch.ones(L, L, dtype=torch.bool).tril(-1)
    M = torch.where(strict, beta.unsqueeze(-1) * KK, torch.zeros((), dtype=k.dtype))
    eye = torch.eye(L, dtype=k.dtype)
    Tm = torch.linalg.solve_triangular(M + eye, torch.diag_embed(beta), upper=False,
                                       unitriangular=True)
    A = ((q @ k.transpose(-1, -2)) * gam) @ Tm
    Ek = k * e.unsqueeze(-1)
    Qe = q * e.unsqueeze(-1) - A @ Ek
    Kg = k * gamma.unsqueeze(-1)
    W = Tm.transpose(-1, -2) @ Kg
    Kdim = k.shape[-1]
    phi = e[..., -1, None, None] * torch.eye(Kdim, dtype=k.dtype) - Kg.transpose(-1, -2) @ (Tm @ Ek)
    return ChunkOps(A, Qe, W, phi)


def _pad(x: torch.Tensor, Tp: int) -> torch.Tensor:
    T = x.shape[1]
    if Tp == T:
        return x
    pad = torch.zeros((x.shape[0], Tp - T, *x.shape[2:]), dtype=x.dtype)
    return torch.cat([x, pad], 1)


def _pad_last(x: torch.Tensor, Tp: int) -> torch.Tensor:
    """Pad the time axis by repeating the last position (the partition stays put)."""
    T = x.shape[1]
    if Tp == T:
        return x
    return torch.cat([x, x[:, -1:].expand(x.shape[0], Tp - T, *x.shape[2:])], 1)


def execute_chunked(q, k, v, g, lam, beta, starts, labels, count, pos0, S0, starts0, count0,
                    base: str, scale: float, chunk_size: int):
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
    pos = pos0.unsqueeze(1) + torch.arange(Tp)
    idx = chunk_index(starts, labels, count, pos, starts0, count0, L, q.dtype)
    qc, kc, vc = q.view(R, NC, L, Kd), k.view(R, NC, L, Kd), v.view(R, NC, L, Vd)
    gc, lamc = g.view(R, NC, L), lam.view(R, NC, L, C)
    if base == "gla":
        ops = ops_gla(qc, kc, gc, L)
    else:
        ops = ops_delta(qc, kc, gc, _pad(beta, Tp).view(R, NC, L), L)
    # token contributions to the states at the chunk end, grouped by slot: [R, NC, C, K, V]
    U = ((idx.onehot.unsqueeze(-1) * ops.W.unsqueeze(-2)).reshape(R, NC, L, C * Kd)
         .transpose(-1, -2) @ vc).view(R, NC, C, Kd, Vd)
    S = S0
    starts_of_chunk = []
    for n in range(NC):
        starts_of_chunk.append(S)
        if base == "gla":
            Sd = S * ops.phi[:, n, None, None, None]
        else:
            Sd = ops.phi[:, n].unsqueeze(1) @ S
        S = (idx.mem[:, n] @ Sd.reshape(R, C, Kd * Vd)).view(R, C, Kd, Vd) + U[:, n]
    Sst = torch.stack(starts_of_chunk, 1)  # [R, NC, C, K, V]
    qS = (ops.Qe @ Sst.permute(0, 1, 3, 2, 4).reshape(R, NC, Kd, C * Vd)).view(R, NC, L, C, Vd)
    w_old = _gather_lam(lamc, idx.lab_old)  # [R, NC, L, C]
    o_inter = (w_old.unsqueeze(-2) @ qS).squeeze(-2)
    o_intra = (ops.A * _gather_lam(lamc, idx.lab_tt)) @ vc
    o = scale * (o_inter + o_intra)
    return o.reshape(R, Tp, Vd)[:, :T], S
