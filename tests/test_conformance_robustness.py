"""The robustness level (DLA-12.10): canaries, layouts, read-only arguments, determinism,
decode chains and fuzzed calls, for every implementation, and the bugs it exists for."""

from __future__ import annotations

import numpy as np
import pytest

from dla.conformance import certify
from dla.conformance.broken import BROKEN
from dla.conformance.layouts import arrange, broadcast, is_view_of_larger_storage

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("impl", ["reference", "torch_cpu"])
def test_the_reference_and_torch_cpu_pass_the_level(impl: str) -> None:
    """DLA-12.10: both pass, and the report says what ran: canary and layout checks, the decode
    chains' length and error growth, and the number of fuzzed calls."""
    report = certify(impl, levels=["robustness"])
    assert report.passed, report.summary()
    checks = {r.check: r for r in report.results}
    assert sum("canaries around every argument" in c for c in checks) >= 4  # 2 calls x 2 dtypes
    assert {"transposed", "strided", "offset", "broadcast"} <= {
        c.split(" layout")[0] for c in checks if " layout: " in c}
    chains = [r for r in report.results if "decode chain" in r.check]
    assert chains and all("one-token calls after a prefill" in r.detail for r in chains)
    assert all("error/bound per 64 tokens" in r.detail for r in chains)
    fuzz = [r for r in report.results if r.check == "fuzzed malformed calls"]
    assert fuzz and all(int(r.detail.split(" fuzzed calls")[0].split()[-1]) >= 30 for r in fuzz)
    assert report.regimes().keys() >= {"canaries", "layouts", "decode_chain", "fuzz"}


@pytest.mark.parametrize(("name", "clause"), [
    ("reads_past_the_tail", "DLA-1.8"),          # an unmasked load one past T
    ("assumes_contiguous_q", "DLA-1.8"),         # reads q's buffer with contiguous strides
    ("writes_into_q", "DLA-1.7"),                # q *= scale in place
    ("decode_drops_newest_information", "DLA-7.2"),  # a decode step forgets the token's score
    ("g_finiteness_unchecked", "DLA-9.13"),      # NaN in g accepted: the fuzzed calls find it
])
def test_the_level_rejects_the_bugs_it_exists_for(name: str, clause: str) -> None:
    """Each bug certifies on tidy inputs but fails the robustness level, at the right clause."""
    impl, _ = BROKEN[name]
    report = certify(impl, levels=["robustness"])
    assert not report.passed
    assert clause in report.failed_clauses(), report.summary()


def test_a_leaking_argument_is_named() -> None:
    """DLA-1.8: a NaN from the padding is traced back to the argument whose bytes leaked."""
    impl, _ = BROKEN["reads_past_the_tail"]
    report = certify(impl, levels=["robustness"], dtype="float64")
    bad = [r for r in report.results if not r.passed and "canaries" in r.check]
    assert bad and any("the bytes around g leaked" in r.detail for r in bad)


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_layouts_keep_the_values_and_surround_them_with_canaries(kind: str) -> None:
    """DLA-1.8: every layout is a view with the same values; canaries hold NaN around them."""
    x = np.arange(2 * 5 * 3 * 4, dtype=np.float32).reshape(2, 5, 3, 4)
    if kind == "torch":
        x = torch.from_numpy(x)

    def host(a):
        return a.numpy() if kind == "torch" else np.asarray(a)

    for how in ("canary", "transposed", "strided", "offset"):
        y = arrange(x, how)
        assert np.array_equal(host(y), host(x)), how
    c = arrange(x, "canary")
    assert is_view_of_larger_storage(c)
    if kind == "numpy":
        assert np.isnan(c.base).sum() == c.base.size - c.size
        assert not arrange(x, "transposed").flags.c_contiguous
    else:
        assert not arrange(x, "transposed").is_contiguous()
        assert arrange(x, "offset").storage_offset() == 5
        assert arrange(x, "strided").stride()[-1] == 2
    g = np.repeat(np.arange(10.0).reshape(2, 5, 1), 3, axis=2)
    if kind == "torch":
        g = torch.from_numpy(g)
    b = broadcast(g, 2)
    strides = b.strides if kind == "numpy" else b.stride()
    assert np.array_equal(host(b), host(g)) and strides[2] == 0


def test_determinism_bound_is_read_from_the_claims() -> None:
    """DLA-1.9: a declared bound replaces the bitwise comparison; bad bounds are refused."""
    from dla.claims import ClaimsError, resolve

    assert resolve({"determinism": 1e-6}).determinism == 1e-6
    assert resolve(None).determinism == "bitwise"
    with pytest.raises(ClaimsError, match="determinism"):
        resolve({"determinism": "sometimes"})
