"""flash-linear-attention's naive recurrent simple GLA, certified as DLA at capacity 1.

With ``C = 1`` DLA keeps one state that holds every token (DLA-3.7), so it is
its base model, gated linear attention with a scalar decay per token and head
(DLA-5.5), read out with the weight ``lam_t[0]``. This adapter certifies
fla-core's ``naive_recurrent_simple_gla`` (``fla.ops.simple_gla.naive``,
fla-core 0.6.0) as it is, streaming and varlen included:

- fla's ``initial_state`` / final state ``[N, H, K, V]`` is the one state of a
  DLA cache (``states[:, :, 0]``); the cache's other fields (information,
  start, label, count, previous key, position) are bookkeeping the adapter
  keeps, with the token scores of the certified reference (DLA-2);
- ``cu_seqlens`` is served by one call per packed sequence;
- fla computes in float32 and returns the inputs' dtype, so float32, float16
  and bfloat16 are claimed, not float64; ``CLAIMS["sizes"]["C"]`` is 1.

``dla-conformance run --impl examples.fla_simple_gla``
"""

from __future__ import annotations

import numpy as np
import torch
from fla.ops.simple_gla.naive import naive_recurrent_simple_gla

import dla
from dla.impls import torch_cpu
from dla.reference.scores import token_scores
from dla.reference.validation import check_forward_call, check_plan_call

CLAIMS = {
    "levels": ("plan", "execute", "end_to_end", "streaming", "varlen", "gradients"),
    "dtypes": ("float32", "float16", "bfloat16"),
    "devices": ("cpu",),
    "array": "torch",
    "bases": ("gla",),
    "policies": ("dla",),
    "sizes": {"C": {"max": 1}},
}


def make_plan(config: dla.Config, *, k=None, scores=None, initial_cache=None, cu_seqlens=None):
    """At capacity 1 the plan holds one state from position 0 (DLA-3.7); torch_cpu makes it."""
    check_plan_call(config, kind="torch", k=k, scores=scores, initial_cache=initial_cache,
                    cu_seqlens=cu_seqlens, claims=CLAIMS)

    def wide(x):  # torch_cpu plans float32 and float64 keys; a 16-bit key is exact in float32
        return None if x is None or x.dtype == torch.float64 else x.float()

    return torch_cpu.make_plan(config, k=wide(k), scores=wide(scores),
                               initial_cache=initial_cache, cu_seqlens=cu_seqlens)


def _information(config, k, scores, cache, n: int) -> np.ndarray:
    """DLA-3.2: the one state's information after this call, ``[H]`` float64: the carried
    information (cache row ``n``) plus each token's score (``k``, ``scores``: this sequence
    alone, batch of one), added in token order."""
    H = k.shape[2]
    carried = cache is not None and int(cache.position[n]) > 0
    info = (cache.info[n, :, 0].double().cpu().numpy() if cache is not None
            else np.zeros(H))
    rows = k[0].transpose(0, 1).double().cpu().numpy()  # this sequence: [H, T, K]
    s = None if scores is None else scores[0].transpose(0, 1).double().cpu().numpy()
    prev = None if not carried else cache.prev_key[n].double().cpu().numpy()
    iota = token_scores(config.score, rows, s, prev, np.full(H, carried))
    for t in range(iota.shape[1]):
        info = info + iota[:, t]
    return info


def _one_sequence(q, k, v, g, lam, config, scores, cache, n: int, want_cache: bool):
    """fla on one sequence (batch row ``n``, or the ``n``-th packed sequence)."""
    state = None if cache is None else cache.states[n : n + 1, :, 0].float()
    o, S = naive_recurrent_simple_gla(q, k, v, g.float(), scale=config.resolved_scale(
        q.shape[-1]), initial_state=state, output_final_state=want_cache)
    o = (o.float() * lam[..., :1].float()).to(q.dtype)  # the readout weight lam_t[0] (DLA-5.3)
    if not want_cache:
        return o, None
    T, H, K = q.shape[1], q.shape[2], q.shape[3]
    P = 0 if cache is None else int(cache.position[n])
    if T == 0:
        return o, None if cache is None else _row(cache, n)
    info = torch.as_tensor(_information(config, k, scores, cache, n), dtype=torch.float64)
    one = torch.zeros(1, H, 1, dtype=torch.int64)
    return o, dla.Cache(
        states=S[:, :, None].float(), info=info[None, :, None],
        starts=one.clone(), labels=one.clone(), count=torch.ones(1, H, dtype=torch.int64),
        prev_key=k[:, -1].to(torch.float32).reshape(1, H, K),
        position=torch.tensor([P + T], dtype=torch.int64))


def _row(cache, n: int):
    return dla.Cache(**{f: getattr(cache, f)[n : n + 1] for f in dla.cache.CACHE_FIELDS})


def _empty(N: int, H: int, K: int, V: int):
    return dla.Cache(
        states=torch.zeros(N, H, 1, K, V), info=torch.zeros(N, H, 1, dtype=torch.float64),
        starts=torch.full((N, H, 1), -1), labels=torch.full((N, H, 1), -1),
        count=torch.zeros(N, H, dtype=torch.int64), prev_key=torch.zeros(N, H, K),
        position=torch.zeros(N, dtype=torch.int64))


def forward(q, k, v, g, lam, config: dla.Config, *, beta=None, scores=None, plan=None,
            initial_cache=None, output_final_cache=False, cu_seqlens=None):
    call = check_forward_call(q, k, v, g, lam, config, kind="torch", beta=beta, scores=scores,
                              plan=plan, initial_cache=initial_cache,
                              output_final_cache=output_final_cache, cu_seqlens=cu_seqlens,
                              claims=CLAIMS)
    # At C = 1 every well-formed plan is the one-state plan (DLA-3.7): nothing to inject.
    outs, rows = [], []
    for i, (a, b) in enumerate(call.segments):
        for n in range(call.cache_rows(i).start, call.cache_rows(i).stop):
            bb = 0 if call.packed else n

            def cut(x, bb=bb, a=a, b=b):
                return None if x is None else x[bb : bb + 1, a:b]

            o, c = _one_sequence(cut(q), cut(k), cut(v), cut(g), cut(lam), config, cut(scores),
                                 initial_cache, n, output_final_cache)
            outs.append((bb, a, b, o))
            rows.append(c)
    o = q.new_zeros(*q.shape[:3], v.shape[3])
    for bb, a, b, part in outs:
        o[bb : bb + 1, a:b] = part
    if not output_final_cache:
        return o, None
    N, H, K, V = call.N, call.H, q.shape[3], v.shape[3]
    caches = [c if c is not None else _row(_empty(N, H, K, V), 0) for c in rows]
    return o, dla.Cache(**{f: torch.cat([getattr(c, f) for c in caches])
                           for f in dla.cache.CACHE_FIELDS})
