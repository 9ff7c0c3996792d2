"""How a third-party kernel plugs into the DLA conformance suite.

The "kernel" below stands for your own code. It has its own conventions, as
real kernels do: a ``[B, H, T, D]`` layout, separate plan tensors, no streaming
cache and no delta base. The adapter at the bottom is all the glue the suite
needs (spec DLA-11): ``forward``, ``make_plan`` and a ``CLAIMS`` declaration of
what is certified. The shared validation (DLA-11.7) raises every error of the
spec and refuses what the claims leave out (DLA-9.14). Certify it, from the
repository root (or with the module anywhere on ``sys.path``), with::

    dla-conformance run --impl examples.third_party_adapter
"""

from __future__ import annotations

import torch

import dla
from dla.impls import torch_cpu
from dla.reference.validation import check_forward_call, check_plan_call


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
    "sizes": {"T": {"max": 4096}},  # one dense T x T product per row
}


def make_plan(config: dla.Config, *, k=None, scores=None, initial_cache=None, cu_seqlens=None):
    """This kernel only executes plans, so it borrows the certified plan stage of torch_cpu."""
    check_plan_call(config, kind="torch", k=k, scores=scores, initial_cache=initial_cache,
                    cu_seqlens=cu_seqlens, claims=CLAIMS)
    return torch_cpu.make_plan(config, k=k, scores=scores)


def forward(q, k, v, g, lam, config: dla.Config, *, beta=None, scores=None, plan=None,
            initial_cache=None, output_final_cache=False, cu_seqlens=None):
    check_forward_call(q, k, v, g, lam, config, kind="torch", beta=beta, scores=scores,
                       plan=plan, initial_cache=initial_cache,
                       output_final_cache=output_final_cache, cu_seqlens=cu_seqlens,
                       claims=CLAIMS)  # every DLA-9 error, and refusals outside CLAIMS
    if plan is None:
        plan = make_plan(config, k=k, scores=scores)

    def bhtd(x):  # [B, T, H, ...] -> [B, H, T, ...]
        return x.transpose(1, 2)

    o = my_masked_dla(
        bhtd(q), bhtd(k), bhtd(v), g.to(q.dtype).transpose(1, 2), bhtd(lam).to(q.dtype),
        bhtd(plan.starts), bhtd(plan.labels), plan.count.transpose(1, 2),
        scale=config.resolved_scale(q.shape[-1]),
    )
    return o.transpose(1, 2), None
