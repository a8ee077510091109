"""The fused LIF backend against the reference, over every switch (issue: speed).

Spikes must be bit-identical, input gradients equal up to float rounding, and the
hand-written section-4 backward must be the exact derivative of the recurrence
(float64 gradcheck with a smooth spike, where a true derivative exists).
"""

from __future__ import annotations

import itertools
import zlib

import pytest
import torch
from torch import Tensor
from torch.autograd.gradcheck import GradcheckError

import snnrun.snn.fused as fused
from snnrun.models import cnn, mlp
from snnrun.snn import LIFParams, fused_lif_sequence, lif_sequence, native
from snnrun.snn.backends import BACKENDS

from .lif_cases import params, run

GRID = list(
    itertools.product(
        ("exp", "linear"),  # reset_form
        (True, False),  # td_grad
        (False, True),  # detach_reset
        ("h1", "h2", "h3", "h4"),  # surrogate
        ("ge", "gt"),  # spike_cmp
    )
)
SHAPES = [(1, 4, 6), (5, 1, 6), (7, 3, 2, 4, 4), (30, 13, 9)]  # T=1, B=1, conv, odd


CPU = torch.device("cpu")


@pytest.mark.parametrize("backend", ["fused", "native"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("switches", GRID, ids=lambda s: "-".join(map(str, s)))
def test_same_spikes_and_gradients_as_the_reference(switches, dtype, backend) -> None:
    if backend == "native":
        assert native.available(), "the C++ kernel must build here (g++, ninja)"
    run_backend = BACKENDS[backend]
    p = params(*switches)
    # a seed per grid point that is the same in every process (str hashes are not)
    generator = torch.Generator().manual_seed(zlib.crc32(repr(switches).encode()))
    for shape in SHAPES:
        x = torch.randn(shape, generator=generator, dtype=dtype) * 0.9
        x[0].view(-1)[0] = p.threshold  # an exact tie: ge and gt disagree here
        weight = torch.randn(shape, generator=generator, dtype=dtype)
        ref_spikes, ref_grad = run(lif_sequence, x, weight, p)
        spikes, grad = run(run_backend, x, weight, p)
        assert torch.equal(spikes, ref_spikes), shape
        assert spikes.any() and not spikes.all()
        tol = 1e-12 if dtype == torch.float64 else 1e-5
        torch.testing.assert_close(grad, ref_grad, rtol=tol, atol=tol)


def smooth(u: Tensor) -> Tensor:
    return torch.sigmoid(4.0 * (u - 0.5))


def smooth_slope(u: Tensor) -> Tensor:
    s = smooth(u)
    return 4.0 * s * (1.0 - s)


def make_smooth_lif(p: LIFParams):
    """The fused forward and hand-written backward with a differentiable spike."""

    class SmoothFused(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            u = fused.potentials(x, p, smooth)
            ctx.save_for_backward(u)
            return smooth(u)

        @staticmethod
        def backward(ctx, grad):
            (u,) = ctx.saved_tensors
            return fused.input_gradient(u, grad, p, smooth, smooth_slope)

    return SmoothFused.apply


@pytest.mark.parametrize("reset_form", ["exp", "linear"])
def test_hand_written_backward_passes_gradcheck(reset_form: str) -> None:
    p = params(reset_form)
    x = (torch.randn(6, 2, 3, dtype=torch.float64) * 0.8).requires_grad_()
    assert torch.autograd.gradcheck(make_smooth_lif(p), (x,), eps=1e-6, atol=1e-8)


@pytest.mark.parametrize(
    "switch", [{"detach_reset": True}, {"td_grad": False}], ids=["detach", "no-td"]
)
def test_gradcheck_notices_a_dropped_path(switch: dict) -> None:
    """Dropping a temporal path is an ablation, not the derivative: gradcheck fails."""
    p = params(**switch)
    x = (torch.randn(6, 2, 3, dtype=torch.float64) * 0.8).requires_grad_()
    with pytest.raises(GradcheckError):
        torch.autograd.gradcheck(make_smooth_lif(p), (x,), eps=1e-6, atol=1e-8)


def test_one_node_saving_only_the_potentials() -> None:
    x = torch.randn(10, 4, 8, requires_grad=True)
    spikes = fused_lif_sequence(x, params())
    assert type(spikes.grad_fn).__name__ == "_FusedLIFBackward"
    (saved,) = spikes.grad_fn.saved_tensors
    assert saved.shape == x.shape
    with torch.no_grad():
        assert fused_lif_sequence(x, params()).grad_fn is None


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_networks_train_identically_on_every_backend(arch: str) -> None:
    grads, outputs = [], []
    for backend in ("reference", "fused", "native"):
        p = params()._replace(backend=backend)
        torch.manual_seed(0)
        if arch == "mlp":
            net = mlp.build(mlp.MLPConfig(hidden=[12]), (1, 5, 5), 3, p).double()
        else:
            spec = "4C3-P2-6"
            net = cnn.build(cnn.CNNConfig(spec=spec), (1, 6, 6), 3, p).double()
        torch.manual_seed(1)
        x = (torch.rand(8, 5, *net.in_shape) < 0.5).double()
        out = net(x)
        out.spikes.mean(0).square().sum().backward()
        outputs.append(out.spikes.detach())
        grads.append([param.grad for param in net.parameters()])
    for index in (1, 2):
        assert torch.equal(outputs[0], outputs[index])
        for ref, got in zip(grads[0], grads[index], strict=True):
            torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)


def test_start_up_check_catches_a_broken_backend(monkeypatch) -> None:
    p = params()._replace(backend="fused")
    assert (
        fused.disagreement(p._replace(backend="reference"), CPU, torch.float32) is None
    )
    native_p = p._replace(backend="native")
    assert fused.disagreement(native_p, CPU, torch.float32) is None
    assert fused.disagreement(p, CPU, torch.float32) is None
    assert fused.disagreement(p, CPU, torch.float64) is None

    def spatial_only(u, grad, p, fire, slope):  # a bug: the temporal paths are lost
        return grad * slope(u)

    monkeypatch.setattr(fused, "input_gradient", spatial_only)
    problem = fused.disagreement(p, CPU, torch.float32)
    assert problem is not None and "gradients differ" in problem


def test_auto_runs_native_on_the_cpu_and_reference_elsewhere() -> None:
    from snnrun.snn.backends import resolve

    assert native.available(), "the C++ kernel must build here (g++, ninja)"
    assert resolve("auto", "cpu") == "native"
    assert resolve("auto", "cuda") == "reference"  # until Triton is measured on a GPU
    assert resolve("auto", "meta") == "reference"
    assert resolve("fused", "cpu") == "fused"  # an explicit choice is kept
    p = params("exp", True, False, "h1", "ge")._replace(backend="auto")
    assert fused.disagreement(p, CPU, torch.float32) is None
    x = torch.randn(5, 3, 7)
    weight = torch.randn(5, 3, 7)
    auto = run(BACKENDS["auto"], x, weight, p)
    ours = run(BACKENDS["native"], x, weight, p)
    assert all(torch.equal(a, b) for a, b in zip(auto, ours, strict=True))


def test_auto_falls_back_to_the_reference_without_a_compiler(tmp_path) -> None:
    """A machine where the C++ kernel cannot be built (here: a compiler that fails,
    an empty extension cache) still trains: auto runs the reference, pools run
    torch's, and the build failure is a warning, not an error."""
    import os
    import subprocess
    import sys

    code = (
        "import torch\n"
        "from snnrun.snn.backends import BACKENDS, resolve\n"
        "from snnrun.snn import LIFParams, lif_sequence\n"
        "from snnrun.snn.layers import AvgPool2d\n"
        "print(resolve('auto', 'cpu'))\n"
        "x = torch.randn(4, 2, 6)\n"
        "p = LIFParams(backend='auto').validate()\n"
        "print(torch.equal(BACKENDS['auto'](x, p), lif_sequence(x, p)))\n"
        "y = torch.rand(2, 3, 4, 4)\n"
        "print(torch.equal(AvgPool2d(2)(y), torch.nn.functional.avg_pool2d(y, 2)))\n"
    )
    env = {**os.environ, "CXX": "/bin/false", "TORCH_EXTENSIONS_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["reference", "True", "True"]
    assert "could not be built" in done.stderr


def test_a_stale_build_lock_does_not_hang_the_next_run() -> None:
    """A run killed while torch held the extension's build lock leaves the file
    behind; torch waits on it forever. snnrun removes a lock older than any build."""
    import os
    import subprocess
    import sys
    import time
    from pathlib import Path

    from torch.utils.cpp_extension import _get_build_directory

    assert native.available()
    name = native.build_name()
    lock = Path(_get_build_directory(name, verbose=False)) / "lock"
    lock.touch()
    old = time.time() - 2 * native.STALE_LOCK_S
    os.utime(lock, (old, old))
    code = "from snnrun.snn import native; print(native.available())"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert done.stdout.split() == ["True"], done.stderr
    assert "stale build lock" in done.stderr and not lock.exists()


def test_two_copies_of_the_sources_share_one_build(tmp_path, monkeypatch) -> None:
    """Another checkout (same sources, another path) compiles from the same staged
    files, so torch's build file is not rewritten and nothing rebuilds; changed
    sources get a build of their own."""
    from pathlib import Path

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "cache"))
    original = list(native.SOURCES)
    name, staged = native.build_name(), native._staged(native.build_name())
    assert staged[0].parent == tmp_path / "cache" / name / "src"
    for path, copy in zip(original, staged, strict=True):
        assert copy.read_bytes() == path.read_bytes()
    other = tmp_path / "checkout"
    other.mkdir()
    copies = [other / p.name for p in original]
    for path, copy in zip(original, copies, strict=True):
        copy.write_bytes(path.read_bytes())
    monkeypatch.setattr(native, "SOURCES", copies)
    native._sources_digest.cache_clear()
    try:
        assert native.build_name() == name
        assert native._staged(name) == staged
        copies[0].write_bytes(copies[0].read_bytes() + b"\n// changed\n")
        native._sources_digest.cache_clear()
        assert native.build_name() != name
    finally:
        native._sources_digest.cache_clear()
    assert all(isinstance(p, Path) for p in staged)


@pytest.mark.parametrize("shape", [(1, 1), (7, 3, 5), (4, 2500), (10, 3, 1100)])
@pytest.mark.parametrize("reset_form", ["exp", "linear"])
@pytest.mark.parametrize("cmp", ["ge", "gt"])
def test_native_evaluation_pass_gives_the_same_spikes(shape, reset_form, cmp) -> None:
    """Without gradients the C++ loop keeps no potentials (two scratch rows a block
    instead of u [T, N]): the spikes are those of the reference, bit for bit, over
    block edges (1,024 neurons) and one step."""
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(len(shape))) * 0.6
    p = params(reset_form=reset_form, cmp=cmp, backend="native")
    with torch.no_grad():
        evaluated = native.native_lif_sequence(x, p)
    assert torch.equal(evaluated, lif_sequence(x, params(reset_form, cmp=cmp)))
    assert torch.equal(evaluated, native.native_lif_sequence(x.requires_grad_(), p))
