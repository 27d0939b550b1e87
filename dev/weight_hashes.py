"""Bit-for-bit check of a refactor on the NumPy backend: a few training steps of several nets on fixed
random data, then a sha256 of every state_dict (and of the losses and eval outputs). Runs each
configuration in a subprocess: threads off (default) and GPUCNN_CPU_THREADS=2 (the batch-halves path).

    python dev/weight_hashes.py [CHECKOUT] > after.txt     # CHECKOUT: a folder holding gpucnn/ (default: this one)
    git worktree add /tmp/base <commit> && python dev/weight_hashes.py /tmp/base > before.txt
    diff <(grep -v package before.txt) <(grep -v package after.txt)
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
from pathlib import Path


def digest(arrays) -> str:
    h = hashlib.sha256()
    for name, a in arrays:
        import numpy as np

        a = np.ascontiguousarray(np.asarray(a))
        h.update(name.encode())
        h.update(str(a.dtype).encode() + str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:24]


def nets():
    import numpy as np

    import gpucnn

    def rng():
        return np.random.default_rng(0)

    def mnist_net():
        gpucnn.manual_seed(0)
        return gpucnn.Sequential(gpucnn.Conv2d(1, 32, 3, rng=rng()), gpucnn.ReLU(),
                                 gpucnn.Conv2d(32, 64, 3, rng=rng()), gpucnn.ReLU(),
                                 gpucnn.MaxPool2d(2), gpucnn.Dropout(0.25), gpucnn.Flatten(),
                                 gpucnn.Linear(9216, 128, rng=rng()), gpucnn.ReLU(), gpucnn.Dropout(0.5),
                                 gpucnn.Linear(128, 10, rng=rng()))

    def misc_net():
        # a non-tiling max pool after conv + ReLU (the fused op's composed path), strided and 1x1
        # convolutions, BatchNorm, the other activations and poolings
        return gpucnn.Sequential(
            gpucnn.Conv2d(3, 32, 3, padding=1, rng=rng()), gpucnn.ReLU(), gpucnn.MaxPool2d(3, 2, padding=1),
            gpucnn.Conv2d(32, 16, 3, padding=1, rng=rng()), gpucnn.ReLU(), gpucnn.MaxPool2d(3, 2, padding=1),
            gpucnn.Conv2d(16, 16, 3, stride=2, padding=1, rng=rng()), gpucnn.BatchNorm2d(16), gpucnn.LeakyReLU(0.1),
            gpucnn.Conv2d(16, 16, 1, rng=rng()), gpucnn.Tanh(),
            gpucnn.AvgPool2d(2), gpucnn.Conv2d(16, 8, 3, padding=1, rng=rng()), gpucnn.Sigmoid(),
            gpucnn.LPPool2d(2, 2), gpucnn.Flatten(), gpucnn.Linear(8, 32, rng=rng()), gpucnn.ReLU(),
            gpucnn.Dropout(0.3), gpucnn.Linear(32, 10, rng=rng()))

    return [
        ("lenet5", lambda: gpucnn.LeNet5(rng=rng()), (96, 1, 28, 28), "sgd", 3),
        ("lenet5-classic", lambda: gpucnn.LeNet5Classic(rng=rng()), (64, 1, 32, 32), "sgd", 2),
        ("mnist-net", mnist_net, (64, 1, 28, 28), "adam", 2),
        ("resnet8", lambda: gpucnn.ResNet(8, width=16, in_channels=3, rng=rng()), (64, 3, 32, 32), "sgd", 2),
        ("misc", misc_net, (64, 3, 32, 32), "adamw", 3),
    ]


def run_one() -> None:
    import numpy as np

    import gpucnn

    gpucnn.set_backend("numpy")
    print(f"package: {os.path.dirname(gpucnn.__file__)}")
    for name, build, shape, opt_name, steps in nets():
        gpucnn.manual_seed(0)
        model = build()
        if opt_name == "sgd":
            opt = gpucnn.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
        elif opt_name == "adam":
            opt = gpucnn.optim.Adam(model.parameters(), lr=1e-3)
        else:
            opt = gpucnn.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
        data = np.random.default_rng(1)
        loss_fn = gpucnn.CrossEntropyLoss()
        losses = []
        for _ in range(steps):
            x = data.standard_normal(shape).astype(np.float32)
            y = data.integers(0, 10, shape[0])
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            losses.append(np.asarray(loss.numpy()))
        model.eval()
        with gpucnn.no_grad():
            out = model(data.standard_normal((130, *shape[1:])).astype(np.float32)).numpy()
        state = [(k, v.numpy() if hasattr(v, "numpy") else v) for k, v in model.state_dict().items()]
        print(f"{name:15s} state {digest(state)} losses {digest([('l', np.stack(losses))])} "
              f"eval {digest([('e', out)])}")
    halves = sorted({t.name.split('_')[0] for t in threading.enumerate() if "gpucnn-half" in t.name})
    print(f"threads used: {halves or 'none'}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--one":
        run_one()
        return
    # the package to test: a folder holding gpucnn/ (default: the checkout this script is in)
    root = sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).resolve().parents[1])
    for threads in ("1", "2"):
        env = dict(os.environ, GPUCNN_CPU_THREADS=threads, PYTHONPATH=root)
        print(f"== GPUCNN_CPU_THREADS={threads}", flush=True)
        done = subprocess.run([sys.executable, __file__, "--one"], env=env, capture_output=True, text=True,
                              cwd=root)
        sys.stdout.write(done.stdout)
        if done.returncode:
            sys.stdout.write(done.stderr)
            raise SystemExit(done.returncode)
        sys.stdout.flush()


if __name__ == "__main__":
    main()
