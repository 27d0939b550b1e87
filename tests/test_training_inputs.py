"""What Trainer, train_epoch and BatchIterator do with data they cannot train on: empty sets, array-likes,
labels outside the model's classes, a loss that stops being finite, and a checkpoint of another run."""

from __future__ import annotations

import math

import numpy as np
import pytest

import gpucnn
from gpucnn.datasets import BatchIterator, normalize
from gpucnn.serialization import CheckpointError, save
from gpucnn.training import NonFiniteLossError, Trainer, evaluate, train_epoch, train_epoch_graphed

from conftest import _sim_reason

needs_sim = pytest.mark.skipif(_sim_reason() is not None, reason=_sim_reason() or "")


def _data(count: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count, 1, 28, 28), dtype=np.uint8), rng.integers(0, 10, count)


def _trainer(backend: str = "numpy", lines: list | None = None, **options) -> Trainer:
    with gpucnn.use_backend(backend):
        model = gpucnn.LeNet5(rng=np.random.default_rng(0))
    opt = gpucnn.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    options = {"batch_size": 8, "progress": False, "prepare": normalize, **options}
    return Trainer(model, opt, log=(lines.append if lines is not None else lambda line: None), **options)


def _weights(trainer: Trainer) -> list[np.ndarray]:
    return [p.numpy().copy() for p in trainer.model.parameters()]


def _with_nan_pixel(images: np.ndarray, index: int) -> np.ndarray:
    x = normalize(images)
    x[index, 0, 14, 14] = np.nan
    return x


class _Bar:
    """A progress bar that notes nothing: train_epoch reads the loss back when it refreshes one."""

    def update(self, n: int) -> None:
        pass

    def set_postfix_str(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------------------------- empty sets
def test_an_empty_training_set_is_refused_before_training():
    images, labels = _data()
    trainer = _trainer()
    with pytest.raises(ValueError, match="Trainer.fit: the training set is empty"):
        trainer.fit(images[:0], labels[:0], images, labels, epochs=1)
    assert trainer.optimizer.step_count == 0


def test_an_empty_test_set_is_refused_before_training():
    images, labels = _data()
    trainer = _trainer()
    with pytest.raises(ValueError, match="Trainer.fit: the test set is empty"):
        trainer.fit(images, labels, images[:0], labels[:0], epochs=1)
    assert trainer.optimizer.step_count == 0  # not after an epoch of training, in evaluation


def test_sets_whose_images_and_labels_differ_in_number_are_refused():
    images, labels = _data()
    with pytest.raises(ValueError, match="Trainer.fit: 32 test_images but 31 test_labels"):
        _trainer().fit(images, labels, images, labels[:-1], epochs=1)


def test_evaluate_and_train_epoch_refuse_nothing_to_average():
    images, labels = _data()
    trainer = _trainer()
    with pytest.raises(ValueError, match="evaluate: the set is empty"):
        evaluate(trainer.model, images[:0], labels[:0], prepare=normalize)
    batches = BatchIterator(normalize(images[:0]), labels[:0], 8, trainer.model.backend)
    with pytest.raises(ValueError, match="train_epoch: the batches held no images"):
        train_epoch(trainer.model, trainer.optimizer, batches)


# --------------------------------------------------------------------------------------------- array-likes
def test_batch_iterator_takes_lists():
    images, labels = _data(10)
    backend = gpucnn.get_backend("numpy")
    from_arrays = list(BatchIterator(images, labels, 4, backend, shuffle=False))
    from_lists = list(BatchIterator(images.tolist(), labels.tolist(), 4, backend, shuffle=False))
    assert len(from_lists) == len(from_arrays) == 3
    for (xa, ya), (xl, yl) in zip(from_arrays, from_lists):
        np.testing.assert_array_equal(xa, xl)
        np.testing.assert_array_equal(ya, yl)
    assert BatchIterator(images.tolist(), labels.tolist(), 4, backend).label_range == (labels.min(), labels.max())


def test_batch_iterator_refuses_what_is_no_array_of_numbers():
    backend = gpucnn.get_backend("numpy")
    with pytest.raises(TypeError, match="BatchIterator: images must be an array .* of numbers of one shape"):
        BatchIterator([[1.0, 2.0], [3.0]], [0, 1], 1, backend)
    with pytest.raises(TypeError, match="BatchIterator: labels must be integers .* got an array of dtype <U3"):
        BatchIterator(np.zeros((2, 1, 2, 2)), ["cat", "dog"], 1, backend)
    with pytest.raises(TypeError, match="BatchIterator: images must be numbers, got an array of dtype object"):
        BatchIterator(np.array([None, None]), [0, 1], 1, backend)


def test_trainer_takes_lists():
    images, labels = _data(16)
    stats = _trainer().fit(images.tolist(), labels.tolist(), images[:8].tolist(), labels[:8].tolist(), epochs=1)
    assert len(stats) == 1 and math.isfinite(stats[0].train_loss)


def test_trainer_refuses_labels_that_are_no_integers():
    images, labels = _data(16)
    with pytest.raises(TypeError, match=r"Trainer.fit: train_labels must be integers \(class indices\), got an "
                                        r"array of dtype float64"):
        _trainer().fit(images, labels.astype(np.float64), images, labels, epochs=1)


# --------------------------------------------------------------------------------------------- label range
def test_a_bad_training_label_is_named_before_the_first_step():
    images, labels = _data(300)
    labels[123] = 10
    labels[200] = 12
    trainer = _trainer()
    before = _weights(trainer)
    with pytest.raises(ValueError, match=r"Trainer.fit: labels must lie in \[0, 10\) .*; train_labels\[123\] is 10$"):
        trainer.fit(images, labels, images[:10], labels[:10], epochs=1)
    assert trainer.optimizer.step_count == 0  # not at the step whose batch holds it
    for a, b in zip(before, _weights(trainer)):
        np.testing.assert_array_equal(a, b)


def test_a_bad_test_label_is_named_before_training():
    images, labels = _data(40)
    test_labels = labels.copy()
    test_labels[4] = -1
    trainer = _trainer()
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\) .*; test_labels\[4\] is -1"):
        trainer.fit(images, labels, images, test_labels, epochs=1)
    assert trainer.optimizer.step_count == 0  # not after an epoch, when evaluation meets it


def test_the_classes_are_those_of_the_model():
    images, labels = _data(16)
    labels[3] = 7
    with gpucnn.use_backend("numpy"):
        model = gpucnn.LeNet5(num_classes=5, rng=np.random.default_rng(0))
    trainer = Trainer(model, gpucnn.optim.SGD(model.parameters(), lr=0.01), batch_size=8, progress=False,
                      prepare=normalize, log=lambda line: None)
    with pytest.raises(ValueError, match=r"\[0, 5\) \(the model gives 5 classes\); train_labels\[\d+\] is [5-9]"):
        trainer.fit(images, labels, images, labels, epochs=1)


def test_batch_iterator_checks_labels_against_classes():
    images, labels = _data(20)
    labels[17] = 10
    backend = gpucnn.get_backend("numpy")
    with pytest.raises(ValueError, match=r"BatchIterator: .* \[0, 10\) \(classes=10\); labels\[17\] is 10"):
        BatchIterator(images, labels, 4, backend, classes=10)
    BatchIterator(images, labels, 4, backend, classes=11)
    with pytest.raises(TypeError, match="BatchIterator: labels must be integers"):
        BatchIterator(images, labels.astype(np.float32), 4, backend).check_labels(10)


def test_train_epoch_names_a_bad_label_before_its_first_update():
    """Without Trainer: the iterator's label range, compared with the first logits, stops the epoch at once."""
    images, labels = _data(64)
    labels[50] = 10
    trainer = _trainer()
    batches = BatchIterator(normalize(images), labels, 8, trainer.model.backend, shuffle=False)
    before = _weights(trainer)
    with pytest.raises(ValueError, match=r"\(the model's logits have 10 classes\); labels\[50\] is 10"):
        train_epoch(trainer.model, trainer.optimizer, batches)
    assert trainer.optimizer.step_count == 0
    for a, b in zip(before, _weights(trainer)):
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------------------------- non-finite loss
def test_a_nan_pixel_stops_training_naming_the_epoch_and_steps():
    images, labels = _data(40)
    x = _with_nan_pixel(images, 17)
    lines: list[str] = []
    trainer = _trainer(lines=lines, prepare=None)
    with pytest.raises(NonFiniteLossError) as info:
        trainer.fit(x, labels, x[:8], labels[:8], epochs=3)
    error = info.value
    assert isinstance(error, FloatingPointError)
    assert (error.epoch, error.first_step, error.last_step) == (1, 1, 5) and math.isnan(error.loss)
    # without a progress bar the loss is read at the end of the epoch only: the message says so
    assert "in epoch 1, between steps 1 and 5 of 5" in str(error) and "at the end of an epoch" in str(error)
    assert "stop_on_nonfinite=False" in str(error)
    assert trainer.epoch == 0 and trainer.history == [] and lines == []


def test_the_epoch_that_went_non_finite_is_neither_logged_nor_saved(tmp_path):
    images, labels = _data(40)
    good, bad = normalize(images), _with_nan_pixel(images, 3)
    trainer = _trainer(prepare=None, checkpoint=tmp_path / "ck.npz")
    trainer.fit(good, labels, good[:8], labels[:8], epochs=1)
    with pytest.raises(NonFiniteLossError, match="in epoch 2, between steps 1 and 5 of 5"):
        trainer.fit(bad, labels, bad[:8], labels[:8], epochs=2)
    assert len(trainer.history) == 1
    again = _trainer(prepare=None)
    again.resume(tmp_path / "ck.npz")
    assert again.epoch == 1 and all(np.isfinite(w).all() for w in _weights(again))


def test_the_progress_bar_readings_narrow_the_steps_down():
    """Read every 3 steps (as the bar is refreshed), a NaN in step 7's batch is seen after step 9."""
    images, labels = _data(80)
    x = _with_nan_pixel(images, 6 * 8 + 2)  # step 7 of 10, unshuffled
    trainer = _trainer()
    batches = BatchIterator(x, labels, 8, trainer.model.backend, shuffle=False)
    with pytest.raises(NonFiniteLossError) as info:
        train_epoch(trainer.model, trainer.optimizer, batches, _Bar(), refresh_every=3, stop_on_nonfinite=True,
                    epoch=4)
    assert (info.value.epoch, info.value.first_step, info.value.last_step) == (4, 7, 9)
    message = str(info.value)
    assert "in epoch 4, between steps 7 and 9 of 10" in message and "every 3 steps" in message
    assert "the reading after step 6 was finite" in message
    assert trainer.optimizer.step_count == 9  # it stopped at the reading, not at the end of the epoch

    trainer = _trainer()
    batches = BatchIterator(x, labels, 8, trainer.model.backend, shuffle=False)
    with pytest.raises(NonFiniteLossError, match="train_epoch: the training loss became nan, at step 7 of 10"):
        train_epoch(trainer.model, trainer.optimizer, batches, _Bar(), refresh_every=1, stop_on_nonfinite=True)


def test_stop_on_nonfinite_false_trains_on():
    images, labels = _data(40)
    x = _with_nan_pixel(images, 17)
    trainer = _trainer(prepare=None, stop_on_nonfinite=False)
    stats = trainer.fit(x, labels, x[:8], labels[:8], epochs=2)
    assert len(stats) == 2 and all(math.isnan(s.train_loss) for s in stats)
    # and train_epoch alone keeps its old default: the mean comes back, NaN
    batches = BatchIterator(x, labels, 8, trainer.model.backend)
    assert math.isnan(train_epoch(trainer.model, trainer.optimizer, batches)[0])


@needs_sim
def test_the_graph_path_stops_too():
    images, labels = _data(40)
    x = _with_nan_pixel(images, 17)
    trainer = _trainer("cuda-sim", prepare=None, graph=True)
    with pytest.raises(NonFiniteLossError, match="train_epoch_graphed: .* in epoch 1, between steps 1 and 5 of 5"):
        trainer.fit(x, labels, x[:8], labels[:8], epochs=2)
    assert trainer.history == []
    keep_going = _trainer("cuda-sim", prepare=None, graph=True, stop_on_nonfinite=False)
    assert all(math.isnan(s.train_loss) for s in keep_going.fit(x, labels, x[:8], labels[:8], epochs=2))


@needs_sim
def test_the_graph_path_reads_at_the_bar_refreshes():
    from gpucnn.cuda_graph import GraphedStep

    images, labels = _data(64)
    x = _with_nan_pixel(images, 4 * 8 + 3)  # step 5 of 8, unshuffled
    trainer = _trainer("cuda-sim")
    step = GraphedStep(trainer.model, trainer.optimizer, x, labels, 8, shuffle=False)
    with pytest.raises(NonFiniteLossError) as info:
        train_epoch_graphed(step, np.random.default_rng(0), _Bar(), refresh_every=2, stop_on_nonfinite=True, epoch=1)
    assert (info.value.first_step, info.value.last_step) == (5, 6)


@needs_sim
def test_the_graph_path_names_a_bad_label_before_the_first_step():
    images, labels = _data(40)
    labels[33] = 10
    trainer = _trainer("cuda-sim", graph=True)
    with pytest.raises(ValueError, match=r"Trainer.fit: labels must lie in \[0, 10\) .*; train_labels\[33\] is 10"):
        trainer.fit(images, labels, images, labels, epochs=1)
    assert trainer.optimizer.step_count == 0


# --------------------------------------------------------------------------------------------- resume
def _checkpoint(tmp_path, **options) -> tuple[str, Trainer]:
    images, labels = _data(16)
    path = tmp_path / "ck.npz"
    trainer = _trainer(checkpoint=path, **options)
    trainer.fit(images, labels, images, labels, epochs=1)
    return path, trainer


def test_resume_says_which_settings_differ(tmp_path):
    path, _ = _checkpoint(tmp_path, seed=1, batch_size=4)
    other = _trainer(seed=0, batch_size=8)
    before = _weights(other)
    with pytest.raises(CheckpointError, match=f"Trainer.resume: checkpoint {path} was written with seed=1, "
                                              f"batch_size=4; this trainer has seed=0, batch_size=8"):
        other.resume(path)
    assert other.epoch == 0
    for a, b in zip(before, _weights(other)):  # nothing was loaded
        np.testing.assert_array_equal(a, b)
    with pytest.raises(CheckpointError, match="written with batch_size=4; this trainer has batch_size=8"):
        _trainer(seed=1, batch_size=8).resume(path)
    same = _trainer(seed=1, batch_size=4)
    same.resume(path)
    assert same.epoch == 1


def test_resume_says_the_model_differs(tmp_path):
    path, _ = _checkpoint(tmp_path)
    with gpucnn.use_backend("numpy"):
        model = gpucnn.LeNet5Classic(rng=np.random.default_rng(0))
    other = Trainer(model, gpucnn.optim.SGD(model.parameters(), lr=0.01), batch_size=8, progress=False)
    with pytest.raises(CheckpointError, match="written with model=LeNet5; this trainer has model=LeNet5Classic"):
        other.resume(path)
    # the same class with other shapes: load's own error, naming what does not fit
    with gpucnn.use_backend("numpy"):
        model = gpucnn.LeNet5(num_classes=5, rng=np.random.default_rng(0))
    other = Trainer(model, gpucnn.optim.SGD(model.parameters(), lr=0.01), batch_size=8, progress=False)
    with pytest.raises(CheckpointError, match="does not fit LeNet5"):
        other.resume(path)


def test_checkpoints_without_the_settings_still_resume(tmp_path):
    """Written before the batch size (or anything but the epoch) was stored: nothing to hold against them."""
    trainer = _trainer()
    model, opt = trainer.model, trainer.optimizer
    save(tmp_path / "old.npz", model, opt, extra={"epoch": 2, "seed": 0, "history": []})
    save(tmp_path / "older.npz", model, opt, extra={"epoch": 3})
    resumed = _trainer(batch_size=32)
    resumed.resume(tmp_path / "old.npz")
    assert resumed.epoch == 2
    resumed = _trainer(seed=7, batch_size=32)
    resumed.resume(tmp_path / "older.npz")
    assert resumed.epoch == 3
    with pytest.raises(CheckpointError, match="written with seed=0; this trainer has seed=7"):
        _trainer(seed=7).resume(tmp_path / "old.npz")
