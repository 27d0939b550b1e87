"""benchmarks/gpu_report.py --dry-run: the report's plumbing on cuda-sim, end to end, in a subprocess, and a
report built over several calls; and the hand-written SGD step of its PyTorch CUDA-graph run
(dev/speedrun_runs.py) against torch.optim.SGD + OneCycleLR."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest

from gpucnn.recipes import SPEEDRUN

from conftest import REPO, _sim_reason, mnist_dir, script_module

SECTIONS = ["Test suite", "Kernel benchmarks (bench_kernels.py)", "Training: gpucnn eager",
            "Training: gpucnn CUDA graphs", "Training: PyTorch eager", "Training: PyTorch CUDA graphs",
            "Speed-run recipe", "Launches and syncs per step"]
ROW = r"^\| 1 \| ([\d.]+) \| ([\d.]+) \| ([\d,]+) \| ([\d.]+) \| ([\d.]+) \|$"


def _report_module():
    return script_module("benchmarks/gpu_report.py")


def _torch_importable() -> bool:
    try:
        import torch  # noqa: F401
    except Exception:  # noqa: BLE001 - the report treats a broken install as missing too
        return False
    return True


@pytest.mark.skipif(_sim_reason() is not None, reason=_sim_reason() or "")
def test_dry_run_writes_every_section_with_numbers(tmp_path):
    command = [sys.executable, str(REPO / "benchmarks" / "gpu_report.py"), "--dry-run", "--out", str(tmp_path)]
    data = mnist_dir()
    if data is not None:
        command += ["--data-dir", str(data)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    reports = list(tmp_path.glob("dryrun-cuda-sim-*.md"))
    assert len(reports) == 1, list(tmp_path.iterdir())
    assert re.fullmatch(r"dryrun-cuda-sim-\d{4}-\d{2}-\d{2}\.md", reports[0].name)
    text = reports[0].read_text()
    for key in ("device", "driver", "CUDA", "CuPy", "PyTorch", "commit", "command"):
        assert re.search(rf"^\| {key} \| .+ \|$", text, re.M), key
    bodies = dict(re.findall(r"^## (.+?)\n\n(.*?)(?=^## |\Z)", text, re.M | re.S))
    assert list(bodies) == SECTIONS
    for heading, body in bodies.items():
        assert "failed:" not in body, f"{heading}: {body}"
        assert body.strip(), heading

    passed, failed = re.search(r"^\| (\d+) \| (\d+) \| \d+ \| 0 \| [\d.]+ \|$", bodies["Test suite"], re.M).groups()
    assert int(passed) > 0 and int(failed) == 0
    assert bodies["Kernel benchmarks (bench_kernels.py)"].startswith("skipped: ")

    eager = bodies["Training: gpucnn eager"]
    row = re.search(ROW, eager, re.M)
    assert row, eager
    assert float(row.group(1)) > 0 and 0 <= float(row.group(5)) <= 100
    assert float(re.search(r"warm-up \(.*?\): ([\d.]+) s", eager).group(1)) > 0
    assert float(re.search(r"time per epoch .*?: ([\d.]+) s", eager).group(1)) > 0

    graph = bodies["Training: gpucnn CUDA graphs"]  # captured and replayed on cuda-sim
    assert re.search(ROW, graph, re.M), graph
    assert "graph replay" in graph

    # every training run is the speed-run recipe of train_mnist.py --speedrun, not the default one
    training = [graph, eager]
    torch_eager, torch_graphs = bodies["Training: PyTorch eager"], bodies["Training: PyTorch CUDA graphs"]
    if _torch_importable():
        assert re.search(ROW, torch_eager, re.M), torch_eager
        # no capture on the CPU, but the graph step's code (device tables, counter, hand-written SGD) runs
        assert not torch_graphs.startswith("skipped"), torch_graphs
        assert re.search(ROW, torch_graphs, re.M), torch_graphs
        assert "run eagerly on the CPU, no capture" in torch_graphs
        training += [torch_eager, torch_graphs]
    else:
        assert torch_eager.startswith("skipped: ") and torch_graphs.startswith("skipped: ")
    for body in training:
        first = body.splitlines()[0]
        for words in ("--speedrun", "SGD Nesterov", "OneCycleLR peak lr 0.1", "pct_start 0.25", "weight decay 0.0005",
                      "batch 320", "label smoothing 0.1", "shifts 1"):
            assert words in first, (words, first)
        assert "cosine" not in first

    launches = bodies["Launches and syncs per step"]
    counts = re.search(r"^\| cuda-sim \| eager \| (\d+) \| ([\d.]+) \| ([\d.]+) \| 0 \| ([\d.]+) \| ([\d.]+) \|$",
                       launches, re.M)
    assert counts, launches
    steps, kernels, launched, transfers, syncs = (float(g) for g in counts.groups())
    assert steps >= 1 and kernels > 0 and launched == kernels
    assert transfers == 0 and syncs == 0
    replayed = re.search(r"^\| cuda-sim \| CUDA graph, replayed \| (\d+) \| (\d+) \(recorded at the capture\) \| "
                         r"([\d.]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|$", launches, re.M)
    assert replayed, launches
    steps, recorded, launched, replays, transfers, syncs = (float(g) for g in replayed.groups())
    # the graph holds the eager step's kernels plus the gather, the loss sum and the step counter
    assert steps >= 1 and recorded > kernels
    assert launched == 0 and replays == 1 and transfers == 0 and syncs == 0


def test_recipe_is_train_mnist_speedrun():
    """The recipe the report times is gpucnn.recipes.SPEEDRUN, the one train_mnist.py --speedrun runs
    (tests/test_speedrun.py checks the example's side)."""
    report = _report_module()
    recipe = report.Recipe.speedrun()
    for name in ("epochs", "batch_size", "lr", "momentum", "weight_decay", "pct_start", "label_smoothing", "shift"):
        assert getattr(recipe, name) == SPEEDRUN[name], name
    assert recipe.target == 0.99
    assert report.Recipe.speedrun(epochs=1, target=None).epochs == 1


def test_graph_step_sgd_matches_torch_sgd_with_one_cycle():
    """TableSGD (the update inside the PyTorch CUDA-graph step: lr and momentum read from device tables at
    a device counter) gives the weights of torch.optim.SGD(nesterov) stepped with torch's OneCycleLR."""
    torch = pytest.importorskip("torch")
    report = _report_module()
    runs = script_module("dev/speedrun_runs.py")
    assert report.torch_run is runs.torch_run  # the module gpu_report imported, not a second copy
    steps, max_lr, pct_start, weight_decay = 8, 0.1, 0.25, 5e-4  # the peak on step 1 (pct_start * 8 - 1)

    def model():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))

    generator = torch.Generator().manual_seed(1)
    batches = [(torch.randn(8, 12, generator=generator), torch.randint(0, 3, (8,), generator=generator))
               for _ in range(steps)]
    reference, ours = model(), model()
    opt = torch.optim.SGD(reference.parameters(), lr=max_lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=max_lr, total_steps=steps, pct_start=pct_start)
    lrs, momentums = runs.one_cycle_table(torch, max_lr, steps, pct_start)
    assert lrs[0] == pytest.approx(max_lr / 25) and momentums[0] == pytest.approx(0.95)
    assert max(lrs) == pytest.approx(max_lr) and min(momentums) == pytest.approx(0.85)
    table_sgd = runs.TableSGD(torch, list(ours.parameters()), lrs, momentums, weight_decay)

    def reference_step():
        opt.step()
        schedule.step()

    for x, y in batches:
        for net, update in ((reference, reference_step), (ours, table_sgd.step)):
            net.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(net(x), y, label_smoothing=0.1).backward()
            update()
    assert int(table_sgd.count) == steps
    for a, b in zip(reference.parameters(), ours.parameters(), strict=True):
        # not bit for bit: torch fuses a + alpha*b where the tensor-scalar form rounds twice
        np.testing.assert_allclose(b.detach().numpy(), a.detach().numpy(), rtol=1e-5, atol=1e-7)
    moved = [not torch.equal(a, b) for a, b in zip(model().parameters(), ours.parameters())]
    assert all(moved)


def test_report_sections_round_trip():
    """render_report -> report_sections gives the bodies back; sections no call ran say how to run them."""
    report = _report_module()
    info = {"device": "a GPU", "commit": "abc"}
    bodies = {"Test suite": "| passed |\n|---|\n| 3 |\n\n```\n## a log line\n```\n\n_section took 1.0 s, commit abc_\n",
              "Launches and syncs per step": "some numbers\n"}
    text = report.render_report("a GPU, 2026-11-24", info, bodies)
    parsed = report.report_sections(text)
    assert list(parsed) == SECTIONS
    for heading, body in bodies.items():
        assert parsed[heading] == body
    assert parsed["Training: gpucnn eager"].startswith(
        "not run yet: `python benchmarks/gpu_report.py --sections gpucnn-eager`")
    assert report.report_sections(report.render_report("a GPU, 2026-11-24", info, parsed)) == parsed


def test_unknown_section_is_refused():
    report = _report_module()
    with pytest.raises(SystemExit, match="--sections takes a comma-separated list from tests, kernels"):
        report.main(["--dry-run", "--sections", "tests,speed"])


@pytest.mark.skipif(_sim_reason() is not None, reason=_sim_reason() or "")
def test_later_call_keeps_the_sections_it_does_not_run(tmp_path):
    """A report built over two calls (a device call has a time limit): the second call's section replaces its
    own, the first call's stays, and the file is whole after each section."""
    report = _report_module()
    data = mnist_dir()
    common = ["--dry-run", "--out", str(tmp_path), "--commit", "0123456789abcdef"] + (
        ["--data-dir", str(data)] if data is not None else [])
    assert report.main([*common, "--sections", "launches"]) == 0
    (path,) = tmp_path.glob("dryrun-cuda-sim-*.md")
    first = report.report_sections(path.read_text())
    assert "| cuda-sim | eager |" in first["Launches and syncs per step"]
    assert "commit 0123456789ab_" in first["Launches and syncs per step"]
    assert first["Test suite"].startswith("not run yet")
    path.write_text(path.read_text().replace("| cuda-sim | eager |", "| cuda-sim | eager (first call) |"))

    assert report.main([*common, "--sections", "speedrun,launches"]) == 0
    text = path.read_text()
    second = report.report_sections(text)
    assert "(first call)" not in second["Launches and syncs per step"]  # run again: replaced
    assert not second["Speed-run recipe"].startswith("not run yet")
    assert second["Test suite"].startswith("not run yet")
    assert "| commit | 0123456789abcdef (given by --commit) |" in text
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no partial file left behind
