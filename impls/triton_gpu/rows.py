"""Row and chunk layout shared by the Triton kernels (DLA-1.1, DLA-8.1).

A *row* is one (sequence, head) pair. Tensors keep the ``[B, T, H, ...]``
layout; the kernels see them flattened to ``[B * T, H, ...]`` and address a
sequence ``n`` by its first token ``bos[n]`` and length ``lens[n]``. Without
``cu_seqlens`` sequence ``n`` is batch row ``n``; with it, sequence ``n`` is
``[cu_seqlens[n], cu_seqlens[n+1])`` of the single batch row.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Rows:
    """Where each sequence lives, and how it is cut into chunks of ``chunk`` tokens."""

    N: int  # sequences
    H: int
    bos: torch.Tensor  # [N] int32: first flat token of each sequence
    lens: torch.Tensor  # [N] int32
    pos0: torch.Tensor  # [N] int32: carried tokens (DLA-7: positions include them)
    chunk: int
    chunk_table: torch.Tensor  # [NC, 2] int32: (sequence, chunk index within it)
    # [N] int32: first state snapshot of sequence n; NT_n + 1 places, snapshot i = the states
    # at the start of chunk i (the last place is not written: final states come from elsewhere)
    hofs: torch.Tensor
    n_snapshots: int
    max_len: int

    def first_tokens(self, spare: int) -> torch.Tensor:
        """``[N]`` int64: the first flat token of each sequence, ``spare`` (a padding index)
        for empty ones, so that a scatter needs no mask and no device sync."""
        return torch.where(self.lens > 0, self.bos, spare).long()

    def sequence_of_tokens(self, n_tok: int) -> torch.Tensor:
        """``[n_tok]`` int64: the sequence of every flat token (the sequences tile the
        ``n_tok = B * T`` tokens in order, DLA-8.1); no device sync."""
        return torch.repeat_interleave(torch.arange(self.N, device=self.bos.device),
                                       self.lens.long(), output_size=n_tok)


def make_rows(B: int, T: int, H: int, cu: list[int] | None, pos0: list[int], chunk: int,
              device: torch.device) -> Rows:
    """Build the row layout; ``cu`` is the validated ``cu_seqlens`` as a list (or None)."""
    if cu is None:
        bos = [b * T for b in range(B)]
        lens = [T] * B
    else:
        bos = cu[:-1]
        lens = [b - a for a, b in itertools.pairwise(cu)]
    table, hofs, acc = [], [], 0
    for n, length in enumerate(lens):
        nt = -(-length // chunk)
        hofs.append(acc)
        acc += nt + 1
        table += [(n, i) for i in range(nt)]

    N = len(lens)
    flat = [*bos, *lens, *pos0, *hofs, *(x for pair in table for x in pair)]
    packed = torch.tensor(flat, dtype=torch.int32)
    if torch.device(device).type == "cuda":  # pinned and asynchronous: no device sync
        packed = packed.pin_memory().to(device, non_blocking=True)
    else:
        packed = packed.to(device)
    bos_t, lens_t, pos0_t, hofs_t, table_t = packed.split([N, N, N, N, 2 * len(table)])
    return Rows(
        N=N, H=H, bos=bos_t, lens=lens_t, pos0=pos0_t, chunk=chunk,
        chunk_table=table_t.reshape(-1, 2), hofs=hofs_t, n_snapshots=acc,
        max_len=max(lens, default=0),
    )
