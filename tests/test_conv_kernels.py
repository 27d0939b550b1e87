"""conv2d.cu's variants (direct forward for one input channel per group, narrow 64x16 tiles, the
one-warp 16x32 weight-gradient tiles with many splits and the bias gradient in their ones column)
against the NumPy backend, on LeNet-5's shapes and on random ones; their determinism; and which
variant the launcher picks for which shape.

Tolerances as in test_ops.py: sums of products at rtol 1e-4 / atol 1e-5 in float32, 1e-10 in float64.
LeNet-5's batch of 128 sums up to 100,352 products per weight gradient, where float32 rounding alone
passes atol 1e-5 for both backends: those are compared with the float64 result, atol 1e-5 of its
largest value (an indexing error is off by whole products).
"""

from __future__ import annotations

import numpy as np
import pytest

import gpucnn
from gpucnn.backends.cuda.conv_plan import CONV_DIRECT, CONV_LAUNCH, CONV_NARROW, CONV_WIDE, conv2d_variants

SUM_TOL = dict(rtol=1e-4, atol=1e-5)
F64_TOL = dict(rtol=1e-10, atol=1e-10)
H100_MULTIPROCESSORS = 132

# N, C, H, W, K, (KH, KW), stride, (top, bottom, left, right), dilation, groups
LENET = {
    "conv1": (128, 1, 28, 28, 6, (5, 5), (1, 1), (2, 2, 2, 2), (1, 1), 1),     # LeNet5: direct forward
    "conv2": (128, 6, 14, 14, 16, (5, 5), (1, 1), (0, 0, 0, 0), (1, 1), 1),    # narrow tiles everywhere
    "classic_c1": (16, 1, 32, 32, 6, (5, 5), (1, 1), (0, 0, 0, 0), (1, 1), 1),  # LeNet5Classic
}
PATH_CASES = {  # one shape per variant of each product, with the variants expected
    "direct": ((2, 3, 9, 8, 6, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 3), CONV_DIRECT, CONV_NARROW, CONV_NARROW),
    "narrow": ((2, 6, 9, 9, 16, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1), CONV_NARROW, CONV_NARROW, CONV_NARROW),
    "wide": ((1, 17, 6, 7, 20, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1), CONV_WIDE, CONV_WIDE, CONV_WIDE),
    "mixed": ((1, 20, 6, 6, 8, (3, 3), (1, 1), (0, 0, 0, 0), (1, 1), 1), CONV_NARROW, CONV_WIDE, CONV_NARROW),
    "big_kernel": ((1, 1, 12, 12, 4, (9, 9), (1, 1), (0, 0, 0, 0), (1, 1), 1), CONV_NARROW, CONV_NARROW, CONV_NARROW),
}


def _random_case(rng, cg=None, kg=None):
    groups = int(rng.integers(1, 4))
    cg = int(rng.integers(1, 6)) if cg is None else cg
    kg = int(rng.integers(1, 24)) if kg is None else kg
    kh, kw = (int(v) for v in rng.integers(1, 6, 2))
    stride = tuple(int(v) for v in rng.integers(1, 4, 2))
    dilation = tuple(int(v) for v in rng.integers(1, 3, 2))
    padding = tuple(int(v) for v in rng.integers(0, 3, 4))
    h = int(rng.integers(1, 12)) + (kh - 1) * dilation[0]
    w = int(rng.integers(1, 12)) + (kw - 1) * dilation[1]
    return (int(rng.integers(1, 4)), cg * groups, h, w, kg * groups, (kh, kw), stride, padding, dilation, groups)


def _random_cases(count, seed, **fixed):
    rng = np.random.default_rng(seed)
    return [_random_case(rng, **fixed) for _ in range(count)]


RANDOM_CASES = (_random_cases(6, 1, cg=1) +                 # direct forward
                _random_cases(6, 2) +                       # mostly narrow
                _random_cases(3, 3, cg=17, kg=18))          # wide


def _case_id(case):
    n, c, h, w, k, ks, s, p, d, g = case
    return f"n{n}c{c}h{h}w{w}k{k}ks{ks[0]}x{ks[1]}s{s[0]}{s[1]}p{''.join(map(str, p))}d{d[0]}{d[1]}g{g}"


def _inputs(case, dtype, seed=7):
    n, c, h, w, k, (kh, kw), stride, padding, dilation, groups = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    wt = rng.standard_normal((k, c // groups, kh, kw)).astype(dtype)
    b = rng.standard_normal(k).astype(dtype)
    return x, wt, b, (stride, padding, dilation, groups)


def _run(backend, x, wt, b, args, relu=False, need_input_grad=True):
    """Forward (bias, optional relu) and backward on ``backend``, as NumPy arrays."""
    put = backend.asarray
    y = backend.conv2d_forward(put(x), put(wt), put(b), *args, relu=relu)
    dy = np.random.default_rng(11).standard_normal(y.shape).astype(x.dtype)
    grads = backend.conv2d_backward(put(dy), put(x), put(wt), *args, need_input_grad=need_input_grad)
    return [backend.to_numpy(y)] + [None if g is None else backend.to_numpy(g) for g in grads]


def _compare(backend, case, dtype=np.float32, relu=False, need_input_grad=True, large=False):
    x, wt, b, args = _inputs(case, dtype)
    got = _run(backend, x, wt, b, args, relu, need_input_grad)
    if large:
        x, wt, b = (a.astype(np.float64) for a in (x, wt, b))
    expected = _run(gpucnn.get_backend("numpy"), x, wt, b, args, relu, need_input_grad)
    tol = F64_TOL if dtype == np.float64 else SUM_TOL
    for name, g, e in zip(("y", "dx", "dw", "db"), got, expected):
        if e is None:
            assert g is None
        else:
            if large:
                tol = dict(rtol=1e-4, atol=1e-5 * np.abs(e).max())
            np.testing.assert_allclose(g, e, err_msg=name, **tol)


@pytest.fixture
def gpu_sized(backend, monkeypatch):
    """On cuda-sim, split weight gradients as for an H100 (132 multiprocessors), not for 2 CPU cores."""
    if backend.name == "cuda-sim":
        monkeypatch.setattr(backend.device, "multiprocessor_count", H100_MULTIPROCESSORS)
    return backend


@pytest.mark.parametrize("name", LENET)
def test_lenet_shapes(gpu_sized, name):
    _compare(gpu_sized, LENET[name], relu=name == "conv1", need_input_grad=name != "conv1", large=True)


@pytest.mark.parametrize("case", RANDOM_CASES, ids=_case_id)
def test_random_configurations(gpu_sized, case):
    _compare(gpu_sized, case)


@pytest.mark.parametrize("name", PATH_CASES)
def test_each_path_in_float64_with_relu(gpu_sized, name):
    _compare(gpu_sized, PATH_CASES[name][0], np.float64, relu=True)


@pytest.mark.parametrize("name", ["direct", "narrow", "wide"])
def test_each_path_with_64_bit_indices(backend, monkeypatch, name):
    if not hasattr(backend, "force_index64"):
        pytest.skip("the numpy backend has no index width")
    monkeypatch.setattr(backend, "force_index64", True)
    _compare(backend, PATH_CASES[name][0])


@pytest.mark.parametrize("name", ["conv1", "conv2"])
def test_two_runs_are_bit_identical(gpu_sized, name):
    x, wt, b, args = _inputs(LENET[name], np.float32)
    first = _run(gpu_sized, x, wt, b, args)
    second = _run(gpu_sized, x, wt, b, args)
    for a, c in zip(first, second):
        np.testing.assert_array_equal(a, c)


def _launches(backend, monkeypatch):
    """Record (kernel, variant, grid) of every conv2d product launch; the block size names the variant."""
    seen = []
    launch = backend.device.launch

    def recording(module, kernel, grid, block, args, *rest, **kw):
        if module == "conv2d" and kernel != "conv2d_reduce_weight_partials":
            product = kernel.removeprefix("conv2d_")
            (variant,) = [v for v, (threads, _, _) in CONV_LAUNCH[product].items() if threads == block[0]]
            seen.append((kernel, variant, grid))
        return launch(module, kernel, grid, block, args, *rest, **kw)

    monkeypatch.setattr(backend.device, "launch", recording)
    return seen


@pytest.mark.parametrize("name", PATH_CASES)
def test_launcher_picks_the_variant_meant_for_the_shape(gpu_sized, monkeypatch, name):
    if gpu_sized.name == "numpy":
        pytest.skip("the numpy backend launches no kernels")
    case, forward, backward_input, backward_weight = PATH_CASES[name]
    seen = _launches(gpu_sized, monkeypatch)
    x, wt, b, args = _inputs(case, np.float32)
    _run(gpu_sized, x, wt, b, args)
    expected = {"forward": forward, "backward_input": backward_input, "backward_weight": backward_weight}
    assert {kernel: variant for kernel, variant, _ in seen} == {f"conv2d_{p}": v for p, v in expected.items()}
    assert conv2d_variants(wt.shape, args[3]) == expected


def test_lenet_layers_take_the_small_shape_paths_and_fill_an_h100(gpu_sized, monkeypatch):
    """conv1: direct forward, one-warp weight-gradient tiles split so there are several warps per
    multiprocessor; conv2: narrow tiles for all three products."""
    if gpu_sized.name == "numpy":
        pytest.skip("the numpy backend launches no kernels")
    seen = _launches(gpu_sized, monkeypatch)
    x, wt, b, args = _inputs(LENET["conv1"], np.float32)
    _run(gpu_sized, x, wt, b, args, relu=True, need_input_grad=False)
    (_, forward, forward_grid), (_, weight, grid) = seen
    assert forward == CONV_DIRECT and forward_grid == (128 * 28 * 28 // 128, 1, 1)
    assert weight == CONV_NARROW
    assert grid[0] * grid[1] * grid[2] >= 4 * H100_MULTIPROCESSORS  # one tile (6 x 26) times the splits
    seen.clear()
    x, wt, b, args = _inputs(LENET["conv2"], np.float32)
    _run(gpu_sized, x, wt, b, args)
    assert [variant for _, variant, _ in seen] == [CONV_NARROW] * 3
