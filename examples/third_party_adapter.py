"""How a third-party kernel plugs into the DLA conformance suite.

The "kernel" below stands for your own code. It has its own conventions, as
real kernels do: a ``[B, H, T, D]`` layout, separate plan tensors, no streaming
cache and no delta base. The adapter at the bottom is all the glue the suite
needs (spec DLA-11): ``forward``, ``make_plan`` and a ``CLAIMS`` declaration of
what is certified. Run it with::

    dla-conformance run --impl examples.third_party_adapter --levels execute end_to_end

from the repository root (or put the module anywhere on ``sys.path``).
"""

from __future__ import annotations

import torch

import dla
from dla.impls import torch_cpu


# ----------------------------------------------------------------- "your" kernel
def my_masked_dla(q, k, v, g, lam, starts, labels, counts, scale: float) -> torch.Tensor:
    """A masked-form DLA executor in ``[B, H, T, D]`` layout (one dense T x T product).

    ``starts``/``labels`` are ``[B, H, T, C]``, ``counts`` ``[B, H, T]``: the
    partition of ``[0, t]`` at every readout ``t`` (spec DLA-6.1).
    """
    T, C = q.shape[2], starts.shape[-1]
    s = torch.arange(T)
    used = torch.arange(C) < counts[..., None]  # [B, H, T, C]
    # slot of token s at readout t: the last used start <= s
    slot = ((starts[..., None, :] <= s[:, None]) & used[..., None, :]).sum(-1) - 1  # [B,H,T,T]
    label = torch.gather(labels, -1, slot.clamp(min=0))
    weight = torch.gather(lam, -1, label)  # lam_t[label_t(s)]
    G = torch.cumsum(g, dim=-1)
    causal = s[None, :] <= s[:, None]
    decay = torch.exp((G[..., :, None] - G[..., None, :]).masked_fill(~causal, -torch.inf))
    attn = (q @ k.transpose(-1, -2)) * decay * weight * causal
    return scale * attn @ v


# ----------------------------------------------------------------- the adapter
CLAIMS = {
    "levels": ("execute", "end_to_end"),
    "dtypes": ("float32",),
    "devices": ("cpu",),
    "array": "torch",
    "bases": ("gla",),
}

# This kernel only executes plans, so it borrows the certified plan stage of torch_cpu.
make_plan = torch_cpu.make_plan


def forward(q, k, v, g, lam, config: dla.Config, *, beta=None, scores=None, plan=None,
            initial_cache=None, output_final_cache=False, cu_seqlens=None):
    if config.base != "gla" or beta is not None:  # refuse what you do not implement
        raise ValueError("config.base: this kernel implements the gla base only (DLA-11.2)")
    if initial_cache is not None or output_final_cache or cu_seqlens is not None:
        raise ValueError("initial_cache: streaming and varlen are not supported here (DLA-11.2)")
    if plan is None:
        plan = make_plan(config, k=k, scores=scores)

    def bhtd(x):  # [B, T, H, ...] -> [B, H, T, ...]
        return x.transpose(1, 2)

    o = my_masked_dla(
        bhtd(q), bhtd(k), bhtd(v), g.transpose(1, 2), bhtd(lam).to(q.dtype),
        bhtd(plan.starts), bhtd(plan.labels), plan.count.transpose(1, 2),
        scale=config.resolved_scale(q.shape[-1]),
    )
    return o.transpose(1, 2), None
