"""benchmarks/gpu_report.py --dry-run: the report's plumbing on cuda-sim, end to end, in a subprocess."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from conftest import REPO, _sim_reason, mnist_dir

pytestmark = pytest.mark.skipif(_sim_reason() is not None, reason=_sim_reason() or "")

SECTIONS = ["Test suite", "Kernel benchmarks (bench_kernels.py)", "Training: gpucnn eager",
            "Training: gpucnn CUDA graphs", "Training: PyTorch eager", "Training: PyTorch CUDA graphs",
            "Speed-run recipe", "Launches and syncs per step"]


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
    row = re.search(r"^\| 1 \| ([\d.]+) \| ([\d.]+) \| ([\d,]+) \| ([\d.]+) \| ([\d.]+) \|$", eager, re.M)
    assert row, eager
    assert float(row.group(1)) > 0 and 0 <= float(row.group(5)) <= 100
    assert float(re.search(r"warm-up \(.*?\): ([\d.]+) s", eager).group(1)) > 0
    assert float(re.search(r"time per epoch .*?: ([\d.]+) s", eager).group(1)) > 0

    graph = bodies["Training: gpucnn CUDA graphs"]  # captured and replayed on cuda-sim
    assert re.search(r"^\| 1 \| [\d.]+ \| [\d.]+ \| [\d,]+ \| [\d.]+ \| [\d.]+ \|$", graph, re.M), graph
    assert "graph replay" in graph
    torch_eager = bodies["Training: PyTorch eager"]
    assert torch_eager.startswith("skipped: ") or re.search(r"^\| 1 \| [\d.]+ \| [\d.]+ \|", torch_eager, re.M)
    assert bodies["Training: PyTorch CUDA graphs"].startswith("skipped: ")

    counts = re.search(r"^\| cuda-sim \| (\d+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|$",
                       bodies["Launches and syncs per step"], re.M)
    assert counts, bodies["Launches and syncs per step"]
    steps, launches, transfers, syncs = (float(g) for g in counts.groups())
    assert steps >= 1 and launches > 0
    assert transfers == 0 and syncs == 0
