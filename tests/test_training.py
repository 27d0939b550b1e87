"""Training end to end: determinism, backends agreeing on a loss curve, and MNIST learning."""

from __future__ import annotations

import numpy as np
import pytest

import gpucnn
from gpucnn.datasets import load_mnist, normalize
from gpucnn.training import Trainer


def _lenet_steps(backend_name, steps=3, batch=8, classic=False, seed=0):
    """(losses, final parameters) of a few SGD steps on fixed random data."""
    rng = np.random.default_rng(seed)
    size = 32 if classic else 28
    x = rng.standard_normal((steps, batch, 1, size, size)).astype(np.float32)
    y = rng.integers(0, 10, (steps, batch))
    with gpucnn.use_backend(backend_name) as backend:
        model = (gpucnn.LeNet5Classic if classic else gpucnn.LeNet5)(rng=np.random.default_rng(seed))
        opt = gpucnn.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4)
        loss_fn = gpucnn.CrossEntropyLoss()
        losses = []
        for step in range(steps):
            opt.zero_grad()
            loss = loss_fn(model(backend.asarray(x[step])), y[step])
            loss.backward()
            losses.append(loss.item())
            opt.step()
        params = [backend.to_numpy(p.data) for p in model.parameters()]
    return losses, params


def test_identical_training_steps_are_bitwise_equal(backend):
    """Backward passes are gathers and ordered reductions, never float atomics."""
    first_losses, first = _lenet_steps(backend.name)
    second_losses, second = _lenet_steps(backend.name)
    assert first_losses == second_losses
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("classic", [False, True], ids=["lenet5", "lenet5-classic"])
def test_backends_give_the_numpy_loss_curve(backend, classic):
    reference, ref_params = _lenet_steps("numpy", steps=4, classic=classic)
    losses, params = _lenet_steps(backend.name, steps=4, classic=classic)
    np.testing.assert_allclose(losses, reference, rtol=1e-4)
    for a, b in zip(params, ref_params):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


def test_mnist_subset_training_beats_90_percent(mnist_path):
    data = load_mnist(mnist_path, download=False)
    gpucnn.manual_seed(0)
    with gpucnn.use_backend("numpy"):
        model = gpucnn.LeNet5(rng=np.random.default_rng(0))
    opt = gpucnn.optim.SGD(model.parameters(), lr=0.02, momentum=0.9, nesterov=True)
    history = []
    trainer = Trainer(model, opt, batch_size=64, seed=0, progress=False, prepare=normalize, log=history.append)
    stats = trainer.fit(data.train_images[:4000], data.train_labels[:4000], data.test_images[:2000],
                        data.test_labels[:2000], epochs=3)
    assert stats[2].train_loss < stats[1].train_loss < stats[0].train_loss
    assert stats[2].test_accuracy > 0.90
    assert len(history) == 3 and "test acc" in history[0]


def test_accuracy_on_every_backend(backend):
    logits = backend.asarray(np.array([[0.1, 2.0, -1.0], [3.0, 0.0, 0.5], [0.0, 0.2, 0.1], [1.0, 0.0, 4.0]],
                                      np.float32))
    assert gpucnn.accuracy(logits, np.array([1, 0, 2, 2])) == 0.75
    assert gpucnn.accuracy(logits, backend.asarray(np.array([1, 0, 1, 2]))) == 1.0
