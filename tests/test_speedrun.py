"""The speed-run pieces: OneCycleLR (against PyTorch's), the Trainer's per-step schedule hook and
label smoothing, per-epoch schedules as before, and ``train_mnist.py --speedrun``."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

import gpucnn
from gpucnn import functional as F
from gpucnn import optim, recipes
from gpucnn.datasets import BatchIterator
from gpucnn.nn import Linear, ReLU, Sequential
from gpucnn.training import Trainer

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "train_mnist.py"


def _example():
    spec = importlib.util.spec_from_file_location("train_mnist_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _net(seed=0):
    with gpucnn.use_backend("numpy"):
        return Sequential(Linear(12, 16, rng=np.random.default_rng(seed)), ReLU(),
                          Linear(16, 3, rng=np.random.default_rng(seed + 1)))


def _data(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 12)).astype(np.float32), rng.integers(0, 3, n)


def _ours(kind, total, **kwargs):
    opt = (optim.SGD(_net(), lr=0.1, momentum=0.9, nesterov=True) if kind == "sgd"
           else optim.Adam(_net(), lr=1e-3))
    schedule = optim.OneCycleLR(opt, total_steps=total, **kwargs)
    name = "momentum" if kind == "sgd" else "beta1"
    lrs, moms = [opt.lr], [getattr(opt, name)]
    for _ in range(total - 1):
        schedule.step()
        lrs.append(opt.lr)
        moms.append(getattr(opt, name))
    return lrs, moms


CASES = [dict(max_lr=0.4, pct_start=0.25), dict(max_lr=0.1, pct_start=0.3, anneal_strategy="linear"),
         dict(max_lr=2.0, pct_start=0.5, div_factor=10.0, final_div_factor=100.0, base_momentum=0.8)]


@pytest.mark.parametrize("kind", ["sgd", "adam"])
@pytest.mark.parametrize("kwargs", CASES, ids=["cos", "linear", "factors"])
def test_one_cycle_matches_pytorch(kind, kwargs):
    torch = pytest.importorskip("torch")
    total = 37
    p = torch.nn.Parameter(torch.zeros(2))
    opt = (torch.optim.SGD([p], lr=0.1, momentum=0.9, nesterov=True) if kind == "sgd"
           else torch.optim.Adam([p], lr=1e-3))
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, total_steps=total, **kwargs)
    group = opt.param_groups[0]
    lrs, moms = [], []
    for _ in range(total):
        lrs.append(group["lr"])
        moms.append(group["momentum"] if kind == "sgd" else group["betas"][0])
        opt.step()
        schedule.step() if len(lrs) < total else None
    ours_lr, ours_mom = _ours(kind, total, **kwargs)
    np.testing.assert_allclose(ours_lr, lrs, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(ours_mom, moms, rtol=1e-12, atol=1e-15)


def test_one_cycle_formula():
    """The shape without PyTorch: start max/25, peak at pct_start, end max/25/1e4, held after."""
    total, max_lr = 100, 0.4
    lrs, moms = _ours("sgd", total, max_lr=max_lr, pct_start=0.25)
    assert lrs[0] == pytest.approx(max_lr / 25) and moms[0] == pytest.approx(0.95)
    assert lrs[24] == pytest.approx(max_lr) and moms[24] == pytest.approx(0.85)
    assert max(lrs) == pytest.approx(max_lr)
    assert lrs[-1] == pytest.approx(max_lr / 25 / 1e4) and moms[-1] == pytest.approx(0.95)
    low = max_lr / 25 / 1e4  # the cosine down from step 24 (pct_start * total - 1) to step 99
    assert lrs[62] == pytest.approx(low + (max_lr - low) / 2 * (1 + math.cos(math.pi * (62 - 24) / 75)))
    default_lrs, _ = _ours("sgd", total, max_lr=max_lr)  # PyTorch's default pct_start, 0.3: the peak at step 29
    assert default_lrs[29] == pytest.approx(max_lr) and default_lrs[28] < max_lr and default_lrs[30] < max_lr
    opt = optim.SGD(_net(), lr=0.1, momentum=0.9)
    schedule = optim.OneCycleLR(opt, max_lr, total_steps=10)
    for _ in range(15):
        schedule.step()
    assert opt.lr == pytest.approx(max_lr / 25 / 1e4)  # held past the end
    with pytest.raises(ValueError, match="cycle_momentum"):
        optim.OneCycleLR(optim.SGD(_net(), lr=0.1), max_lr, total_steps=10)
    optim.OneCycleLR(optim.SGD(_net(), lr=0.1), max_lr, total_steps=10, cycle_momentum=False)


def _old_fit(epochs, batch_size=8, seed=0):
    """The Trainer's loop before per-step schedules: a per-epoch CosineLR stepped after each epoch."""
    x, y = _data()
    model = _net()
    opt = optim.SGD(model, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    schedule = optim.CosineLR(opt, total=epochs)
    batches = BatchIterator(x, y, batch_size, model.backend)
    lrs = []
    for epoch in range(epochs):
        batches.rng = np.random.default_rng([seed, epoch])
        lrs.append(opt.lr)
        for xb, yb in batches:
            opt.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
        schedule.step()
    return [p.data.copy() for p in model.parameters()], lrs


def test_per_epoch_schedule_as_before():
    x, y = _data()
    model = _net()
    opt = optim.SGD(model, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    schedule = optim.CosineLR(opt, total=3)
    history = Trainer(model, opt, schedule, batch_size=8, progress=False, log=lambda line: None).fit(
        x, y, x[:10], y[:10], 3)
    expected, lrs = _old_fit(3)
    assert [h.lr for h in history] == lrs
    assert schedule.count == 3
    for p, q in zip(model.parameters(), expected):
        np.testing.assert_array_equal(p.data, q)


def test_per_step_schedule_and_label_smoothing():
    x, y = _data()
    model = _net()
    opt = optim.SGD(model, lr=0.1, momentum=0.9, nesterov=True)
    steps = 2 * 5  # 40 images in batches of 8, two epochs
    schedule = optim.OneCycleLR(opt, max_lr=0.2, total_steps=steps)
    trainer = Trainer(model, opt, schedule, batch_size=8, progress=False, log=lambda line: None,
                      label_smoothing=0.1)
    history = trainer.fit(x, y, x[:10], y[:10], 2)
    assert schedule.count == opt.step_count == steps
    assert history[0].lr == pytest.approx(0.2 / 25)  # the first step's lr
    assert history[1].lr == pytest.approx(schedule.lr_at(5))
    assert opt.lr == pytest.approx(schedule.lr_at(steps))
    # smoothing is off unless asked for
    plain = Trainer(_net(), optim.SGD(_net(), lr=0.1), batch_size=8, progress=False, log=lambda line: None)
    assert plain.label_smoothing == 0.0


def test_per_step_schedule_resumes(tmp_path):
    x, y = _data()

    def make():
        model = _net()
        opt = optim.SGD(model, lr=0.1, momentum=0.9, nesterov=True)
        return model, opt, optim.OneCycleLR(opt, max_lr=0.2, total_steps=15)

    model, opt, schedule = make()
    Trainer(model, opt, schedule, batch_size=8, progress=False, log=lambda line: None).fit(x, y, x, y, 3)
    model2, opt2, schedule2 = make()
    first = Trainer(model2, opt2, schedule2, batch_size=8, progress=False, log=lambda line: None,
                    checkpoint=tmp_path / "c.npz")
    first.fit(x, y, x, y, 1)
    model3, opt3, schedule3 = make()
    resumed = Trainer(model3, opt3, schedule3, batch_size=8, progress=False, log=lambda line: None)
    resumed.resume(tmp_path / "c.npz")
    assert schedule3.count == 5 and opt3.lr == pytest.approx(schedule3.lr_at(5))
    resumed.fit(x, y, x, y, 3)
    assert opt3.lr == opt.lr
    for p, q in zip(model3.parameters(), model.parameters()):
        np.testing.assert_allclose(p.data, q.data, rtol=1e-6, atol=1e-7)


def test_speedrun_flag_sets_the_recipe():
    example = _example()
    assert example.SPEEDRUN is recipes.SPEEDRUN  # the one gpu_report.py and dev/speedrun_search.py read
    args = example.parse_args(["--speedrun"])
    for key, value in example.SPEEDRUN.items():
        assert getattr(args, key) == value, key
    args = example.parse_args(["--speedrun", "--epochs", "7", "--label-smoothing", "0"])
    assert args.epochs == 7 and args.label_smoothing == 0.0
    assert args.batch_size == example.SPEEDRUN["batch_size"]
    default = example.parse_args([])
    assert (default.schedule, default.label_smoothing, default.epochs, default.batch_size) == ("cosine", 0.0, 10, 128)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))


def test_speedrun_example_runs_and_resumes(mnist_path, tmp_path, capsys):
    """--speedrun on a subset: the one-cycle schedule spans the run, and a resumed run matches it."""
    example = _example()
    args = ["--speedrun", "--backend", "numpy", "--data-dir", str(mnist_path), "--limit", "1024",
            "--test-limit", "200", "--epochs", "2", "--no-progress"]
    full, part, resumed = tmp_path / "full.npz", tmp_path / "part.npz", tmp_path / "resumed.npz"
    assert example.main(args + ["--save", str(full)]) == 0
    assert example.main(args + ["--save", str(part), "--stop-after", "1"]) == 0
    assert example.main(args + ["--resume", str(part), "--save", str(resumed)]) == 0
    out = capsys.readouterr().out
    assert "lr 0.004\n" in out  # the first step's lr: 0.1 / 25
    with np.load(full) as a, np.load(resumed) as b:
        for key in a.files:
            if key != "meta":
                np.testing.assert_array_equal(a[key], b[key], err_msg=key)
