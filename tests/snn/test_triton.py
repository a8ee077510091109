"""The Triton backend's kernels, run by Triton's CPU interpreter (no GPU needed).

Triton is optional: without it this test is skipped, unless SNNRUN_REQUIRE_TRITON=1
(set by .ci/run, which installs it), where a missing Triton fails the test.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

CHECK = textwrap.dedent(
    """
    import itertools, torch
    from snnrun.snn import LIFParams, lif_sequence
    from snnrun.snn.triton_lif import triton_lif_sequence, available
    assert available(torch.device("cpu")), "the interpreter is not active"
    grid = itertools.product(
        ("exp", "linear"), (True, False), (False, True), ("h1", "h2", "h3", "h4"),
        ("ge", "gt"),
    )
    worst = 0.0
    for rf, td, dr, sur, cmp in grid:
        p = LIFParams(decay=0.5, threshold=0.5, reset_form=rf, td_grad=td,
                      detach_reset=dr, surrogate=sur, spike_cmp=cmp,
                      surrogate_a=0.7).validate()
        for shape in ((1, 3, 5), (6, 2, 3, 2, 2), (9, 1, 1030)):
            g = torch.Generator().manual_seed(len(shape))
            x = torch.randn(shape, generator=g) * 0.9
            x.view(-1)[0] = 0.5  # an exact tie: ge and gt differ here
            x.requires_grad_()
            w = torch.randn(shape, generator=g)
            o1 = lif_sequence(x, p)
            (g1,) = torch.autograd.grad((o1 * w).sum(), x)
            o2 = triton_lif_sequence(x, p)
            (g2,) = torch.autograd.grad((o2 * w).sum(), x)
            assert torch.equal(o1, o2), (rf, td, dr, sur, cmp, shape)
            worst = max(worst, float((g1 - g2).abs().max() / g1.abs().max()))
    assert worst < 1e-5, worst
    print("triton kernels agree; worst relative gradient difference", worst)
    """
)


def test_triton_kernels_match_the_reference_under_the_interpreter() -> None:
    try:
        import triton  # noqa: F401
    except ImportError:
        if os.environ.get("SNNRUN_REQUIRE_TRITON") == "1":
            pytest.fail("SNNRUN_REQUIRE_TRITON=1 but triton is not installed")
        pytest.skip("triton is not installed (pip install triton); CI installs it")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run(
        [sys.executable, "-c", CHECK], capture_output=True, text=True, env=env,
        timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "triton kernels agree" in done.stdout
