"""Training recipes as plain data, in the package so that the example, the GPU report and the search tools
read one definition instead of each other's files. Only the standard library's ``types`` is imported:
``from gpucnn.recipes import SPEEDRUN`` costs nothing beyond ``import gpucnn``.

The keys are ``examples/train_mnist.py``'s flags (``batch_size`` is ``--batch-size``).
"""

from __future__ import annotations

from types import MappingProxyType

__all__ = ["SPEEDRUN"]

#: ``train_mnist.py --speedrun``: LeNet-5, the recipe that reached >= 99.0% MNIST test accuracy in the
#: fewest optimizer steps on at least 4 of 5 seeds (dev/speedrun_search.py,
#: benchmarks/results/speedrun-2026-11-23.md); flags given beside --speedrun override its values.
#: Read-only: every reader shares this one object, so a change made by one would leak into the others
SPEEDRUN = MappingProxyType(dict(
    epochs=4, batch_size=320, optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="onecycle",
    pct_start=0.25, label_smoothing=0.1, shift=1))
