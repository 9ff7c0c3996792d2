"""flash-linear-attention's naive Log-Linear Attention, certified as the DLA ``fenwick`` policy.

Spec DLA-4.3 says that ``policy="fenwick"`` on the ``gla`` base *is* Log-Linear
Attention (Guo et al., 2025) with ``lam`` as its level scales. This adapter
certifies fla-core's reference code for it, ``naive_log_linear_attn``
(``fla.ops.log_linear_attn.naive``, fla-core 0.6.0), as it is: the kernel
itself is not modified, the adapter only maps the DLA call onto it. What fla's
function does not do, the adapter refuses by name (DLA-9.14):

- only the fenwick policy on the gla base (its partition is fixed, so
  ``CLAIMS["plans"] = "own"``: an injected plan other than the fenwick one is
  refused);
- no streaming cache, no ``cu_seqlens``;
- ``T >= 1``: fla computes ``int(np.ceil(np.log2(T)))`` levels, which raises for
  ``T = 0`` (an empty sequence), so ``T = 0`` is claimed unsupported.

``dla-conformance run --impl examples.fla_log_linear``
"""

from __future__ import annotations

from fla.ops.log_linear_attn.naive import naive_log_linear_attn

import dla
from dla.impls import torch_cpu
from dla.reference.validation import check_forward_call, check_plan_call, require_own_plan

CLAIMS = {
    "levels": ("plan", "execute", "end_to_end", "gradients"),
    "dtypes": ("float32", "float64"),
    "devices": ("cpu",),
    "array": "torch",
    "bases": ("gla",),
    "policies": ("fenwick",),
    "plans": "own",
    "sizes": {"T": {"min": 1}},
}


def make_plan(config: dla.Config, *, k=None, scores=None, initial_cache=None, cu_seqlens=None):
    """The fenwick partition (DLA-4.1) from the certified plan stage of torch_cpu."""
    check_plan_call(config, kind="torch", k=k, scores=scores, initial_cache=initial_cache,
                    cu_seqlens=cu_seqlens, claims=CLAIMS)
    return torch_cpu.make_plan(config, k=k, scores=scores)


def forward(q, k, v, g, lam, config: dla.Config, *, beta=None, scores=None, plan=None,
            initial_cache=None, output_final_cache=False, cu_seqlens=None):
    check_forward_call(q, k, v, g, lam, config, kind="torch", beta=beta, scores=scores,
                       plan=plan, initial_cache=initial_cache,
                       output_final_cache=output_final_cache, cu_seqlens=cu_seqlens,
                       claims=CLAIMS)
    if plan is not None:  # fla's partition is fixed: only that one can be executed
        require_own_plan(plan, make_plan(config, k=k, scores=scores))
    # fla's default scale is 1.0, not K ** -0.5: it MUST be passed (DLA-4.3)
    o = naive_log_linear_attn(q, k, v, g.to(q.dtype), level_scales=lam.to(q.dtype),
                              scale=config.resolved_scale(q.shape[-1]))
    return o, None
