"""CUDA graphs on cuda-sim: a captured training step replayed N times gives bit for bit the weights of
N eager steps (tests/test_cuda_graph.py drives gpucnn/cuda_graph.py and the devices' capture API).

cuda-sim's capture records launches without running them and refuses what a captured stream cannot
hold, so a step that leaned on anything but our kernels would fail here (or, for an operation on an
array made before the capture, give other weights than the eager run: the bitwise tests)."""

from __future__ import annotations

import collections

import numpy as np
import pytest
from test_launches import LENET5_STEP, lenet_step_counts, recording

import gpucnn
from gpucnn import nn
from gpucnn.cuda_graph import GraphedStep
from gpucnn.datasets import normalize
from gpucnn.training import Trainer

from conftest import _sim_reason

pytestmark = pytest.mark.skipif(_sim_reason() is not None, reason=_sim_reason() or "")

CAPTURE_ERROR = "not allowed during CUDA-graph capture"


def _data(count: int = 70, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count, 1, 28, 28), dtype=np.uint8), rng.integers(0, 10, count)


def _dropout_net() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 32, rng=np.random.default_rng(1)), nn.ReLU(),
                         nn.Dropout(0.3, rng=np.random.default_rng(2)), nn.Linear(32, 24, rng=np.random.default_rng(3)),
                         nn.Dropout(0.2, rng=np.random.default_rng(4)), nn.Linear(24, 10, rng=np.random.default_rng(5)))


def _setup(kind: str) -> tuple[nn.Module, gpucnn.optim.Optimizer, gpucnn.optim.LRSchedule]:
    """A model, its optimizer and a per-step OneCycleLR (which also cycles momentum / beta1)."""
    with gpucnn.use_backend("cuda-sim"):
        model = _dropout_net() if kind == "dropout" else gpucnn.LeNet5(rng=np.random.default_rng(0))
    if kind == "adam":
        opt = gpucnn.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
        return model, opt, gpucnn.optim.OneCycleLR(opt, max_lr=2e-3, total_steps=12)
    opt = gpucnn.optim.SGD(model.parameters(), lr=0.005, momentum=0.9, nesterov=True, weight_decay=5e-4)
    return model, opt, gpucnn.optim.OneCycleLR(opt, max_lr=0.01, total_steps=12)


def _train(kind: str, graph: bool, count: int = 70, epochs: int = 2, batch: int = 16,
           label_smoothing: float = 0.0):
    """(weights, trainer) after ``epochs`` epochs of Trainer on cuda-sim, shifts of 2 pixels."""
    images, labels = _data(count)
    model, opt, schedule = _setup(kind)
    trainer = Trainer(model, opt, schedule, batch_size=batch, max_shift=2, resident=True, progress=False,
                      prepare=normalize, log=lambda line: None, graph=graph, label_smoothing=label_smoothing)
    trainer.fit(images, labels, images[:20], labels[:20], epochs=epochs)
    return [p.numpy() for p in model.parameters()], trainer


@pytest.mark.parametrize(("kind", "smoothing"), [("sgd", 0.0), ("sgd", 0.1), ("adam", 0.0), ("dropout", 0.0),
                                                 ("dropout", 0.1)])
def test_graph_trainer_gives_the_eager_weights_bit_for_bit(kind, smoothing):
    """Two epochs of 70 images in batches of 16: per epoch one eager warm-up (first epoch), one
    capture, the other full batches replays, and the last batch of 6 eagerly. With label smoothing
    (the speed-run recipe's 0.1) the eager loss and the graphed one are the same fused op."""
    eager, eager_trainer = _train(kind, graph=False, label_smoothing=smoothing)
    graphed, trainer = _train(kind, graph=True, label_smoothing=smoothing)
    for a, b in zip(eager, graphed, strict=True):
        np.testing.assert_array_equal(a, b)
    step = trainer._graphed[2]
    assert step.graph is not None and step.graph.replays == 3 + 4  # epoch 1: steps 2-4, epoch 2: steps 1-4
    assert trainer.optimizer.step_count == eager_trainer.optimizer.step_count == 10
    assert trainer.optimizer.lr == eager_trainer.optimizer.lr
    for mine, theirs in zip(trainer.history, eager_trainer.history, strict=True):
        assert mine.train_loss == pytest.approx(theirs.train_loss, rel=1e-6)  # summed in another order
        assert mine.test_loss == theirs.test_loss


def test_graph_trainer_without_a_partial_batch():
    eager, _ = _train("sgd", graph=False, count=64)
    graphed, trainer = _train("sgd", graph=True, count=64)
    for a, b in zip(eager, graphed, strict=True):
        np.testing.assert_array_equal(a, b)
    assert trainer._graphed[2].graph.replays == 3 + 4  # no partial batch: every step but the warm-up


def test_dropout_in_the_graph_reads_a_new_key_every_step():
    _, trainer = _train("dropout", graph=True, epochs=1)
    step = trainer._graphed[2]
    names = [launch[0] for launch in step.graph.launches]
    assert names.count("dropout_forward_stepped") == 2 and "dropout_forward" not in names
    keys = step._host_keys  # (steps, dropout calls): drawn from each layer's own generator
    assert keys.shape == (5, 2) and len(np.unique(keys)) == keys.size


def test_a_captured_step_is_only_our_kernels():
    """The graph holds exactly the eager step's kernels plus the gather, the loss sum, the stepped
    update and the counter; and no array-library operation runs in a graphed step (the eager
    LeNet-5 step, recorded the same way, has some)."""
    backend = gpucnn.get_backend("cuda-sim")
    images, labels = _data(64)
    with gpucnn.use_backend("cuda-sim"), recording(backend) as host_ops:
        model, opt, schedule = _setup("sgd")
        step = GraphedStep(model, opt, normalize(images), labels, 16, max_shift=2)
        step.begin_epoch(np.random.default_rng(0), schedule)
        step.step()  # the warm-up creates the optimizer state (zeros) and uploads the dropout table
        host_ops.clear()
        for _ in range(3):
            step.step()
    assert dict(host_ops) == {}
    graph = collections.Counter(launch[0] for launch in step.graph.launches)
    assert dict(graph) == LENET5_STEP | {"gather_batch": 1, "loss_accumulate": 1, "sgd_update_many_stepped": 1,
                                         "step_advance": 1}
    assert sum(lenet_step_counts("sgd")[1].values()) > 0


def test_graphed_steps_copy_nothing_back_and_wait_for_nothing():
    backend = gpucnn.get_backend("cuda-sim")
    images, labels = _data(64)
    with gpucnn.use_backend("cuda-sim"):
        model, opt, _ = _setup("sgd")
        step = GraphedStep(model, opt, normalize(images), labels, 16)
        step.begin_epoch(np.random.default_rng(0))
        before = backend.host_transfer_count, backend.sync_count
        for _ in range(step.steps):
            step.step()
        assert (backend.host_transfer_count, backend.sync_count) == before
        assert step.loss_sum() > 0 and backend.host_transfer_count == before[0] + 1


def test_sim_capture_records_without_running_and_replays_in_order():
    backend = gpucnn.get_backend("cuda-sim")
    device = backend.device
    x = backend.asarray(np.array([-1.0, 2.0, -3.0], np.float32))
    counter = backend.asarray(np.zeros(1, np.int64))
    runs_before = device.launch_counts.get("step_advance", 0)
    device.begin_capture()
    try:
        y = backend.relu_forward(x)
        backend.step_advance(counter)
    finally:
        graph = device.end_capture()
    assert np.isnan(y).all() and counter[0] == 0  # a captured stream runs nothing
    assert device.launch_counts.get("step_advance", 0) == runs_before
    graph.replay()
    graph.replay()
    np.testing.assert_array_equal(y, [0.0, 2.0, 0.0])
    assert counter[0] == 2 and graph.replays == 2 and graph.kernel_launches == 2
    assert device.launch_counts["step_advance"] == runs_before + 2


@pytest.mark.parametrize("what", ["to_numpy", "synchronize", "asarray", "copy_from_host", "numpy op", "fill"])
def test_sim_capture_refuses_what_a_captured_stream_cannot_hold(what):
    backend = gpucnn.get_backend("cuda-sim")
    device = backend.device
    before = backend.asarray(np.zeros(3, np.float32))
    device.begin_capture()
    try:
        made = backend.relu_forward(before)  # allocated during the capture: it belongs to the graph
        attempts = {"to_numpy": lambda: backend.to_numpy(made), "synchronize": backend.synchronize,
                    "asarray": lambda: backend.asarray(np.ones(3, np.float32)),
                    "copy_from_host": lambda: device.copy_from_host(before, np.ones(3, np.float32)),
                    "numpy op": lambda: np.zeros_like(made) + made, "fill": lambda: made.fill(1.0)}
        with pytest.raises(RuntimeError, match=CAPTURE_ERROR):
            attempts[what]()
    finally:
        device.end_capture()
    assert not device.capturing
    np.testing.assert_array_equal(made * 2, np.full(3, np.nan))  # after the capture it is a plain array again


def test_a_second_capture_at_once_and_an_end_without_begin_are_refused():
    device = gpucnn.get_backend("cuda-sim").device
    with pytest.raises(RuntimeError, match="end_capture without begin_capture"):
        device.end_capture()
    device.begin_capture()
    try:
        with pytest.raises(RuntimeError, match="already under way"):
            device.begin_capture()
    finally:
        device.end_capture()


def test_graph_options_are_checked():
    images, labels = _data(16)
    with gpucnn.use_backend("numpy"):
        model = gpucnn.LeNet5(rng=np.random.default_rng(0))
    opt = gpucnn.optim.SGD(model.parameters(), lr=0.01)
    with pytest.raises(ValueError, match=r"Trainer: graph=True needs the cuda or cuda-sim backend \(the model is on "
                                         r"'numpy'\)"):
        Trainer(model, opt, graph=True)
    with pytest.raises(ValueError, match="GraphedStep: CUDA graphs need the model on the cuda or cuda-sim backend"):
        GraphedStep(model, opt, normalize(images), labels, 8)
    sim_model, sim_opt, _ = _setup("sgd")
    with pytest.raises(ValueError, match=r"needs resident data \(got resident=False\)$"):
        Trainer(sim_model, sim_opt, graph=True, resident=False, label_smoothing=0.1)
    Trainer(sim_model, sim_opt, graph=True, label_smoothing=0.1)  # label smoothing is graphed
    with pytest.raises(ValueError, match=r"GraphedStep: label_smoothing must be in \[0, 1\], got 1.5"):
        GraphedStep(sim_model, sim_opt, normalize(images), labels, 8, label_smoothing=1.5)
    step = GraphedStep(sim_model, sim_opt, normalize(images), labels + 5, 8)
    step.begin_epoch(np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"GraphedStep: labels must lie in \[0, 10\), got labels from 5 to 14"):
        step.step()


def test_steps_need_an_epoch_and_an_epoch_needs_its_steps_run():
    images, labels = _data(20)
    model, opt, _ = _setup("sgd")
    step = GraphedStep(model, opt, normalize(images), labels, 8)
    with pytest.raises(RuntimeError, match="call begin_epoch"):
        step.step()
    step.begin_epoch(np.random.default_rng(0))
    step.step()
    with pytest.raises(RuntimeError, match="2 steps of the last epoch have not run"):
        step.begin_epoch(np.random.default_rng(1))


# ------------------------------------------------------------------ the new ops against their references
def test_gather_batch_matches_the_reference(backend, rng):
    numpy_backend = gpucnn.get_backend("numpy")
    images = rng.standard_normal((10, 2, 5, 6)).astype(np.float32)
    labels, order = rng.integers(0, 10, 10).astype(np.int32), rng.permutation(10).astype(np.int32)
    offsets = rng.integers(-2, 3, (10, 2)).astype(np.int32)
    step, background = np.array([1], np.int64), np.array([-7.0], np.float32)
    for max_shift, table in ((2, offsets), (0, None)):
        args = (images, labels, order, table, step, 4, 3, max_shift, background)
        x, y = backend.gather_batch(*(backend.asarray(a) if isinstance(a, np.ndarray) else a for a in args))
        ref_x, ref_y = numpy_backend.gather_batch(*args)
        np.testing.assert_array_equal(backend.to_numpy(x), ref_x)
        np.testing.assert_array_equal(backend.to_numpy(y), ref_y)
    rows = order[4:7]  # step 1 of batches of 4: rows 4, 5, 6 of the order
    np.testing.assert_array_equal(ref_y, labels[rows])
    np.testing.assert_array_equal(ref_x, images[rows])
    shifted, _ = numpy_backend.gather_batch(images, labels, order, offsets, step, 4, 3, 2, background)
    dy, dx = offsets[4]
    assert shifted[0, 1, 2, 3] == images[rows[0], 1, 2 + dy, 3 + dx]


def test_gather_batch_shifts_as_random_shift_does(rng):
    """The eager path (datasets.random_shift with the set's background) and the kernel agree bit for bit."""
    from gpucnn.datasets import random_shift

    backend = gpucnn.get_backend("numpy")
    images = rng.standard_normal((6, 1, 8, 8)).astype(np.float32)
    offsets = rng.integers(-3, 4, (6, 2))
    eager = random_shift(images, 3, rng, np, offsets, images.min())
    x, _ = backend.gather_batch(images, np.zeros(6, np.int32), np.arange(6, dtype=np.int32),
                                offsets.astype(np.int32), np.zeros(1, np.int64), 6, 6, 3, images.min().reshape(1))
    np.testing.assert_array_equal(x, eager)


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 1.0])
def test_softmax_cross_entropy_accumulate_matches_the_reference(backend, rng, smoothing):
    logits = rng.standard_normal((37, 10)).astype(np.float32)
    labels = rng.integers(0, 10, 37).astype(np.int32)
    total = backend.asarray(np.array([1.5]))
    dlogits = backend.softmax_cross_entropy_accumulate(backend.asarray(logits), backend.asarray(labels), total,
                                                       smoothing)
    loss, expected = backend.softmax_cross_entropy(backend.asarray(logits), backend.asarray(labels), smoothing)
    np.testing.assert_array_equal(backend.to_numpy(dlogits), backend.to_numpy(expected))  # bit for bit
    ref_total = np.array([1.5])
    gpucnn.get_backend("numpy").softmax_cross_entropy_accumulate(logits, labels, ref_total, smoothing)
    np.testing.assert_allclose(backend.to_numpy(total), ref_total, rtol=1e-6)
    assert backend.to_numpy(total)[0] == pytest.approx(1.5 + 37 * float(backend.to_numpy(loss)), rel=1e-6)


def test_step_advance_and_dropout_forward_stepped(backend, rng):
    step = backend.asarray(np.array([1], np.int64))
    backend.step_advance(step)
    assert backend.to_numpy(step).tolist() == [2]
    from gpucnn.backends.base import dropout_key

    seeds = [[11, 12], [13, 14], [15, 16]]
    keys = backend.asarray(np.array([[dropout_key(s) for s in row] for row in seeds], np.uint32))
    x = backend.asarray(rng.standard_normal((4, 33)).astype(np.float32))
    y, mask = backend.dropout_forward_stepped(x, 0.4, keys, step, 1)
    ref_y, ref_mask = backend.dropout_forward(x, 0.4, 16)
    np.testing.assert_array_equal(backend.to_numpy(mask), backend.to_numpy(ref_mask))
    np.testing.assert_array_equal(backend.to_numpy(y), backend.to_numpy(ref_y))


def test_a_replay_after_the_weights_were_replaced_is_refused():
    """load_state_dict puts new arrays in the parameters: the graph still holds the old addresses."""
    images, labels = _data(48)
    model, opt, _ = _setup("sgd")
    step = GraphedStep(model, opt, normalize(images), labels, 16)
    step.begin_epoch(np.random.default_rng(0))
    step.step()
    step.step()  # captured and replayed
    model.load_state_dict({k: np.array(v) for k, v in model.state_dict().items()})
    with pytest.raises(RuntimeError, match="replaced since the step was captured"):
        step.step()
