"""Search for the MNIST speed-run recipe: LeNet-5 to >= 99.0% test accuracy in the fewest optimizer steps.

Accuracy does not depend on the hardware, so the search runs on the CPU (numpy backend). Each
candidate recipe (batch size, optimizer, one-cycle schedule, label smoothing, shifts, epochs) is
trained with several seeds, each in its own worker process; the test set is evaluated once, at the
end of a run. Every finished run is appended as one JSON line to ``--out`` (so a long search can be
stopped and its runs kept), and a summary table is printed at the end.

    OMP_NUM_THREADS=1 python dev/speedrun_search.py --data-dir /work/shared/data/mnist \\
        --recipes sgd512-lr0.4-e3,adam512-e3 --seeds 0,1,2,3,4 --workers 2 --out runs/speedrun.jsonl
    python dev/speedrun_search.py --list          # the named candidates
    ... --recipes 'sgd256-lr0.1-e3+shift=1+label_smoothing=0'   # a named one with keys overridden
    ... --recipes 'speedrun,speedrun+shift=2'      # train_mnist.py --speedrun's recipe (gpucnn.recipes), and a variant
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpucnn.recipes import SPEEDRUN  # noqa: E402

#: name -> recipe; the keys are those of ``train_one``
CANDIDATES: dict[str, dict] = {}


def _add(name: str, **recipe: object) -> None:
    base = dict(batch_size=512, optimizer="sgd", max_lr=0.4, pct_start=0.25, anneal="cos", momentum=0.9,
                weight_decay=5e-4, label_smoothing=0.1, shift=2, epochs=3)
    CANDIDATES[name] = base | recipe


for _bs, _lr in ((128, 0.1), (128, 0.2), (256, 0.1), (256, 0.2), (512, 0.1), (512, 0.2), (512, 0.4), (1024, 0.2)):
    for _e in (2, 3, 4):
        _add(f"sgd{_bs}-lr{_lr}-e{_e}", batch_size=_bs, max_lr=_lr, epochs=_e)
for _bs, _lr in ((128, 3e-3), (256, 3e-3), (256, 5e-3), (512, 3e-3), (512, 5e-3), (512, 1e-2), (1024, 1e-2)):
    for _e in (2, 3, 4):
        _add(f"adam{_bs}-lr{_lr}-e{_e}", optimizer="adam", batch_size=_bs, max_lr=_lr, epochs=_e, weight_decay=0.0)
_add("sgd512-lr0.4-e3-ls0", label_smoothing=0.0)
_add("sgd512-lr0.4-e3-shift0", shift=0)
_add("sgd512-lr0.4-e3-shift1", shift=1)
_add("sgd512-lr0.4-e3-linear", anneal="linear")
_add("sgd512-lr0.4-e3-pct0.15", pct_start=0.15)


def _from_example(recipe: dict) -> dict:
    """A recipe in train_mnist.py's flags (``gpucnn.recipes``) in this search's keys: there --lr is
    OneCycleLR's peak and the one-cycle schedule anneals by cosine, OneCycleLR's default."""
    if recipe["schedule"] != "onecycle":
        raise ValueError(f"speedrun_search trains under OneCycleLR only, not schedule={recipe['schedule']!r}")
    keys = ("batch_size", "optimizer", "pct_start", "momentum", "weight_decay", "label_smoothing", "shift", "epochs")
    return {"max_lr": recipe["lr"], "anneal": "cos", **{k: recipe[k] for k in keys}}


# the recipe --speedrun runs today, so that a change to it can be run against the candidates it won over
_add("speedrun", **_from_example(dict(SPEEDRUN)))


def recipe_of(name: str) -> dict:
    """A named candidate, or one with overrides: ``sgd256-lr0.1-e3+shift=1+label_smoothing=0``."""
    base, *overrides = name.split("+")
    recipe = dict(CANDIDATES[base])
    for item in overrides:
        key, _, value = item.partition("=")
        if key not in recipe:
            raise KeyError(f"{name}: no recipe key {key!r}")
        recipe[key] = type(recipe[key])(value) if not isinstance(recipe[key], float) else float(value)
    return recipe


def train_one(recipe: dict, seed: int, data_dir: str | None) -> dict:
    """Train LeNet-5 with ``recipe`` and ``seed`` on the numpy backend; test once at the end."""
    import numpy as np

    import gpucnn
    from gpucnn import optim
    from gpucnn.datasets import BatchIterator, load_mnist, normalize
    from gpucnn.models import LeNet5
    from gpucnn.training import evaluate, train_epoch

    gpucnn.set_backend("numpy")
    data = load_mnist(data_dir, download=False)
    train_x = normalize(data.train_images)
    gpucnn.manual_seed(seed)
    model = LeNet5(rng=np.random.default_rng(seed))
    if recipe["optimizer"] == "sgd":
        optimizer = optim.SGD(model, lr=recipe["max_lr"], momentum=recipe["momentum"],
                              weight_decay=recipe["weight_decay"], nesterov=True)
    else:
        optimizer = optim.Adam(model, lr=recipe["max_lr"], weight_decay=recipe["weight_decay"])
    batches = BatchIterator(train_x, data.train_labels, recipe["batch_size"], model.backend,
                            max_shift=recipe["shift"])
    total = recipe["epochs"] * len(batches)
    schedule = optim.OneCycleLR(optimizer, recipe["max_lr"], total, pct_start=recipe["pct_start"],
                                anneal_strategy=recipe["anneal"])
    started = time.process_time()
    wall = time.perf_counter()
    losses = []
    for epoch in range(recipe["epochs"]):  # the Trainer's seeding: (seed, epoch)
        batches.rng = np.random.default_rng([seed, epoch])
        loss, _ = train_epoch(model, optimizer, batches, schedule=schedule,
                              label_smoothing=recipe["label_smoothing"])
        losses.append(round(loss, 4))
    train_cpu = time.process_time() - started
    _, accuracy, _ = evaluate(model, data.test_images, data.test_labels, prepare=normalize)
    return {"seed": seed, "steps": optimizer.step_count, "accuracy": accuracy, "train_losses": losses,
            "train_cpu_s": round(train_cpu, 1), "wall_s": round(time.perf_counter() - wall, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipes", default="sgd512-lr0.4-e3", help="comma-separated names from --list")
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 1)))
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default=None, help="JSON-lines file each finished run is appended to")
    p.add_argument("--target", type=float, default=0.99)
    p.add_argument("--list", action="store_true")
    args = p.parse_args(argv)
    if args.list:
        for name, recipe in CANDIDATES.items():
            print(name, json.dumps(recipe))
        return 0
    names = args.recipes.split(",")
    unknown = [n for n in names if n.split("+")[0] not in CANDIDATES]
    if unknown:
        p.error(f"unknown recipes {unknown}; see --list")
    seeds = [int(s) for s in args.seeds.split(",")]
    jobs = [(name, seed) for name in names for seed in seeds]
    results: dict[str, list[dict]] = {name: [] for name in names}
    with ProcessPoolExecutor(args.workers) as pool:
        futures = [(name, pool.submit(train_one, recipe_of(name), seed, args.data_dir)) for name, seed in jobs]
        for name, future in futures:
            run = future.result()
            run = {"recipe": name, **recipe_of(name), **run}
            results[name].append(run)
            print(json.dumps(run), flush=True)
            if args.out:
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                with open(args.out, "a") as f:
                    f.write(json.dumps(run) + "\n")
    print(f"\n{'recipe':28s} {'steps':>6s} {'hits':>5s} {'mean':>7s} {'min':>7s}  per seed")
    for name, runs in results.items():
        accs = [r["accuracy"] for r in runs]
        hits = sum(a >= args.target for a in accs)
        print(f"{name:28s} {runs[0]['steps']:6d} {hits:2d}/{len(runs):<2d} {100 * sum(accs) / len(accs):6.2f}% "
              f"{100 * min(accs):6.2f}%  " + " ".join(f"{100 * a:.2f}" for a in accs))
    return 0 if all(math.isfinite(r["accuracy"]) for runs in results.values() for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
