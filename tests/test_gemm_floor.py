"""dev/gemm_floor.py: the products it records from a training step, and its hot-operand timing.
(The timings against PyTorch are the benchmark's own business; these tests need no PyTorch.)"""

from __future__ import annotations

import numpy as np
import pytest

import gpucnn

from conftest import script_module


def _floor_module():
    return script_module("dev/gemm_floor.py")


def _lenet_step(batch: int):
    floor = _floor_module()
    gpucnn.manual_seed(0)
    model = gpucnn.LeNet5(rng=np.random.default_rng(0))
    optimizer = gpucnn.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, batch)
    return floor, model, optimizer, x, y


def test_lenet5_step_records_each_layers_products():
    floor, model, optimizer, x, y = _lenet_step(8)
    before = [p.data.copy() for p in model.parameters()]
    layers = floor.recorded_products(model, optimizer, x, y)
    assert [layer[0].layer for layer in layers] == [  # the order the backward pass meets them
        "linear 84->10", "linear 120->84", "linear 400->120", "conv 6->16 5x5/1 at 14x14", "conv 1->6 5x5/1 at 28x28"]
    products = [product for layer in layers for product in layer]
    got = sorted((p.layer, p.kind, p.groups, p.rows, p.inner, p.columns) for p in products)
    conv1, conv2 = "conv 1->6 5x5/1 at 28x28", "conv 6->16 5x5/1 at 14x14"
    expected = [
        (conv1, "forward", 1, 6, 25, 8 * 28 * 28), (conv1, "weight grad", 1, 6, 8 * 28 * 28, 25),
        # the first layer's input (the images) needs no gradient: no input-gradient product
        (conv2, "forward", 1, 16, 150, 8 * 10 * 10), (conv2, "weight grad", 1, 16, 8 * 10 * 10, 150),
        (conv2, "input grad", 1, 150, 16, 8 * 10 * 10),
    ]
    for inp, out in ((400, 120), (120, 84), (84, 10)):
        name = f"linear {inp}->{out}"
        expected += [(name, "forward", 1, 8, inp, out), (name, "weight grad", 1, out, 8, inp),
                     (name, "input grad", 1, 8, out, inp)]
    assert got == sorted(expected)
    # a real step ran, and the backend has its own methods back
    assert any(not np.array_equal(b, p.data) for b, p in zip(before, model.parameters()))
    backend = gpucnn.get_backend()
    assert not {"conv2d_backward", "conv2d_relu_maxpool2d_backward", "linear_backward"} & set(vars(backend))


def test_grouped_strided_convolution_products():
    floor = _floor_module()
    products = floor._conv_products((4, 8, 9, 9), (6, 4, 3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 2, True)
    # output 5x5; per group 3 filters over 4 channels * 9 offsets, 4 * 25 columns
    assert [(p.kind, p.groups, p.rows, p.inner, p.columns) for p in products] == [
        ("forward", 2, 3, 36, 100), ("weight grad", 2, 3, 100, 36), ("input grad", 2, 36, 3, 100)]
    assert {p.flops for p in products} == {2 * 6 * 36 * 100}


def test_recording_restores_the_backend_when_the_step_fails():
    floor, model, optimizer, x, y = _lenet_step(4)
    with pytest.raises(ValueError):
        floor.recorded_products(model, optimizer, x[:, :, :20], y)  # 20x20 images: 400 features no longer fit
    assert "linear_backward" not in vars(gpucnn.get_backend())


@pytest.mark.parametrize("kind", ["forward", "weight grad"])
def test_hot_product_chunks_the_long_axis(kind):
    floor = _floor_module()
    if kind == "forward":  # (16 x 144) @ (144 x 10000): columns chunked
        product = floor.Product("conv", kind, 1, 16, 144, 10_000)
    else:  # (16 x 10000) @ (10000 x 144): the inner axis chunked
        product = floor.Product("conv", kind, 1, 16, 10_000, 144)
    hot = floor._HotProduct(product, 144 * 4 * 1000, np.random.default_rng(0))
    assert hot.chunks == pytest.approx(10.0)
    assert hot.a.shape[0] == 1 and hot.out.shape == (1, hot.a.shape[1], hot.b.shape[2])
    assert hot.a.shape[2] == hot.b.shape[1]  # the operands multiply
    assert hot.seconds(repeats=2) > 0
