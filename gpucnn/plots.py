"""PNG pictures of a training run (needs matplotlib: ``pip install 'gpucnn[examples]'``).

Curves of loss and accuracy, the confusion matrix, the first conv layer's filters and one
digit's feature maps after it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .core.autograd import no_grad


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError("plotting needs matplotlib: pip install 'gpucnn[examples]'") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def curves(history: Sequence[Any], path: str | Path) -> Path:
    plt = _pyplot()
    epochs = [h.epoch for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    left.plot(epochs, [h.train_loss for h in history], "o-", label="train")
    left.plot(epochs, [h.test_loss for h in history], "s-", label="test")
    left.set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss")
    left.legend()
    right.plot(epochs, [100 * h.test_accuracy for h in history], "s-", color="tab:green")
    right.set(xlabel="epoch", ylabel="accuracy (%)", title="Test accuracy")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    return _save(fig, Path(path))


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, classes: int = 10) -> np.ndarray:
    """counts[true, predicted]."""
    return np.bincount(labels * classes + predicted, minlength=classes * classes).reshape(classes, classes)


def confusion(labels: np.ndarray, predicted: np.ndarray, path: str | Path) -> Path:
    plt = _pyplot()
    counts = confusion_matrix(labels, predicted)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.imshow(np.log1p(counts), cmap="Blues")
    for (i, j), value in np.ndenumerate(counts):
        ax.text(j, i, str(value), ha="center", va="center", fontsize=7,
                color="white" if i == j else "black")
    ax.set(xlabel="predicted", ylabel="true", xticks=range(10), yticks=range(10),
           title=f"Confusion matrix ({100 * np.trace(counts) / counts.sum():.2f}% correct)")
    return _save(fig, Path(path))


def _first_conv(model: Any) -> Any:
    from .nn.conv import Conv2d

    for module in model.modules():
        if isinstance(module, Conv2d):
            return module
    raise ValueError("plots: the model has no Conv2d layer")


def filters(model: Any, path: str | Path) -> Path:
    plt = _pyplot()
    conv = _first_conv(model)
    w = conv.dense_weight().numpy()
    k, c = w.shape[:2]
    # constrained layout reserves room for the suptitle: with a fixed y it sat on the top row's titles,
    # the figure being only one or two rows of filters high
    fig, axes = plt.subplots(c, k, figsize=(1.3 * k, 1.4 * c + 0.4), squeeze=False, layout="constrained")
    limit = np.abs(w).max()
    for (ci, ki), ax in np.ndenumerate(axes):
        ax.imshow(w[ki, ci], cmap="RdBu_r", vmin=-limit, vmax=limit)
        ax.set_xticks([])
        ax.set_yticks([])
        if ci == 0:  # one title a column: each further row is the same filter's next input channel
            ax.set_title(f"filter {ki}", fontsize=7)
        if ki == 0 and c > 1:
            ax.set_ylabel(f"channel {ci}", fontsize=7)
    fig.suptitle("First conv layer's learned filters")
    return _save(fig, Path(path))


def feature_maps(model: Any, image: np.ndarray, path: str | Path) -> Path:
    """The input digit and the first conv layer's maps for it (after its activation)."""
    plt = _pyplot()
    backend = model.backend
    was_training = model.training
    model.eval()
    x = backend.asarray(image[:1])
    conv = _first_conv(model)
    maps = None
    for layer in getattr(model, "layers", [model]):
        with no_grad():
            x = layer(x)
        if maps is not None:  # the layer after the conv: its activation
            maps = x
            break
        if layer is conv:
            maps = x
    model.train(was_training)
    maps = maps.numpy()[0]
    fig, axes = plt.subplots(1, len(maps) + 1, figsize=(1.6 * (len(maps) + 1), 1.9))
    axes[0].imshow(image[0, 0], cmap="gray")
    axes[0].set_title("input", fontsize=8)
    for i, (ax, fmap) in enumerate(zip(axes[1:], maps)):
        ax.imshow(fmap, cmap="viridis")
        ax.set_title(f"map {i}", fontsize=8)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    return _save(fig, Path(path))


def write_all(path: str | Path, history: Sequence[Any], labels: np.ndarray, predicted: np.ndarray,
              model: Any, image: np.ndarray) -> list[Path]:
    """Curves at ``path``; confusion matrix, filters and feature maps beside it."""
    path = Path(path)
    stem = path.with_suffix("")
    return [curves(history, path), confusion(labels, predicted, f"{stem}_confusion.png"),
            filters(model, f"{stem}_filters.png"), feature_maps(model, image, f"{stem}_feature_maps.png")]
