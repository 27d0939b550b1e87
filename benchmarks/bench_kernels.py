"""Time gpucnn's CUDA kernels against PyTorch + cuDNN on the same GPU, in the same run.

Needs a GPU, CuPy and PyTorch. Each case is validated against PyTorch (relative error
||ours - torch|| / ||torch||, in float32 with TF32 off) before it is timed; timings are the median
of CUDA-event-timed repetitions after a warm-up. ReLU and pooling also report the fraction of the
device-to-device copy bandwidth measured at the start of the run.

    python benchmarks/bench_kernels.py [--out results.md] [--repeat 50]
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cupy as cp  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import gpucnn  # noqa: E402

torch.backends.cudnn.allow_tf32 = False
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.benchmark = True


def time_cupy(fn, repeat: int, warmup: int = 5) -> float:
    """Median milliseconds of fn() timed with CUDA events on CuPy's stream."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start, stop = cp.cuda.Event(), cp.cuda.Event()
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(cp.cuda.get_elapsed_time(start, stop))
    return statistics.median(times)


def time_torch(fn, repeat: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times)


def rel_err(ours, theirs) -> float:
    a = cp.asnumpy(ours).astype(np.float64)
    b = theirs.detach().double().cpu().numpy()
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def copy_bandwidth() -> float:
    """GB/s of a large device-to-device copy, counting bytes read plus written."""
    src = cp.random.standard_normal(1 << 28, dtype=cp.float32)  # 1 GiB
    dst = cp.empty_like(src)
    ms = time_cupy(lambda: dst.__setitem__(slice(None), src), 20)
    return 2 * src.nbytes / ms / 1e6


def as_torch(a):
    return torch.from_dlpack(a)


def conv_cases():
    # name, N, C, H, W, K, k, stride, pad
    for batch in (128, 256):
        yield f"lenet C1 b{batch}", batch, 1, 28, 28, 6, 5, 1, 2
        yield f"lenet C3 b{batch}", batch, 6, 14, 14, 16, 5, 1, 0
    yield "3x3 64->64 56x56 b32", 32, 64, 56, 56, 64, 3, 1, 1


def bench(repeat: int) -> tuple[list[dict], float]:
    be = gpucnn.get_backend("cuda")
    rows = []
    peak = copy_bandwidth()
    rng = cp.random.default_rng(0)

    def add(op, case, ours_ms, torch_ms, err, bytes_moved=None):
        row = {"op": op, "case": case, "gpucnn_ms": ours_ms, "torch_ms": torch_ms, "ratio": ours_ms / torch_ms,
               "rel_err": err}
        if bytes_moved:
            row["bandwidth_fraction"] = bytes_moved / ours_ms / 1e6 / peak
        rows.append(row)
        print(f"{op:18s} {case:24s} gpucnn {ours_ms:8.4f} ms  torch {torch_ms:8.4f} ms  ratio {ours_ms / torch_ms:5.2f}"
              f"  err {err:.1e}" + (f"  {100 * row['bandwidth_fraction']:.0f}% of copy BW" if bytes_moved else ""),
              flush=True)

    for name, n, c, h, w, k, ks, s, p in conv_cases():
        x = rng.standard_normal((n, c, h, w), dtype=cp.float32)
        wt = rng.standard_normal((k, c, ks, ks), dtype=cp.float32) * 0.1
        b = rng.standard_normal(k, dtype=cp.float32)
        args = ((s, s), (p, p, p, p), (1, 1), 1)
        xt, wtt, bt = as_torch(x).requires_grad_(), as_torch(wt).requires_grad_(), as_torch(b).requires_grad_()
        y = be.conv2d_forward(x, wt, b, *args)
        yt = F.conv2d(xt, wtt, bt, s, p)
        add("conv2d fwd", name, time_cupy(lambda: be.conv2d_forward(x, wt, b, *args), repeat),
            time_torch(lambda: F.conv2d(xt, wtt, bt, s, p), repeat), rel_err(y, yt))
        dy = rng.standard_normal(y.shape, dtype=cp.float32)
        dx, dw, db = be.conv2d_backward(dy, x, wt, *args)
        gx, gw, gb = torch.autograd.grad(yt, (xt, wtt, bt), as_torch(dy), retain_graph=True)
        err = max(rel_err(dx, gx), rel_err(dw, gw), rel_err(db, gb))

        def torch_backward():
            torch.autograd.grad(yt, (xt, wtt, bt), as_torch(dy), retain_graph=True)

        add("conv2d bwd", name, time_cupy(lambda: be.conv2d_backward(dy, x, wt, *args), repeat),
            time_torch(torch_backward, repeat), err)

    for batch in (128, 256):
        x = rng.standard_normal((batch, 6, 28, 28), dtype=cp.float32)
        xt = as_torch(x)
        y, idx = be.maxpool2d_forward(x, (2, 2), (2, 2), (0, 0), False)
        add("maxpool fwd", f"6x28x28 b{batch}",
            time_cupy(lambda: be.maxpool2d_forward(x, (2, 2), (2, 2), (0, 0), False), repeat),
            time_torch(lambda: F.max_pool2d(xt, 2), repeat), rel_err(y, F.max_pool2d(xt, 2)),
            x.nbytes + y.nbytes + idx.nbytes)
        dy = rng.standard_normal(y.shape, dtype=cp.float32)
        xg = as_torch(x).clone().requires_grad_()
        yt = F.max_pool2d(xg, 2)
        gx, = torch.autograd.grad(yt, xg, as_torch(dy), retain_graph=True)
        dx = be.maxpool2d_backward(dy, idx, x.shape, (2, 2), (2, 2), (0, 0))
        add("maxpool bwd", f"6x28x28 b{batch}",
            time_cupy(lambda: be.maxpool2d_backward(dy, idx, x.shape, (2, 2), (2, 2), (0, 0)), repeat),
            time_torch(lambda: torch.autograd.grad(yt, xg, as_torch(dy), retain_graph=True), repeat),
            rel_err(dx, gx), dy.nbytes + idx.nbytes + dx.nbytes)
        add("relu fwd", f"6x28x28 b{batch}", time_cupy(lambda: be.relu_forward(x), repeat),
            time_torch(lambda: F.relu(xt), repeat), rel_err(be.relu_forward(x), F.relu(xt)), 2 * x.nbytes)

    big = rng.standard_normal(1 << 26, dtype=cp.float32)
    bigt = as_torch(big)
    add("relu fwd", "64M elements", time_cupy(lambda: be.relu_forward(big), repeat),
        time_torch(lambda: F.relu(bigt), repeat), rel_err(be.relu_forward(big), F.relu(bigt)), 2 * big.nbytes)
    rows.extend(bench_lenet_step(repeat))
    return rows, peak


def bench_lenet_step(repeat: int) -> list[dict]:
    rows = []
    for batch in (128, 256):
        x = np.random.default_rng(1).standard_normal((batch, 1, 28, 28)).astype(np.float32)
        labels = np.random.default_rng(2).integers(0, 10, batch)
        with gpucnn.use_backend("cuda") as be:
            model = gpucnn.LeNet5(rng=np.random.default_rng(0))
            opt = gpucnn.optim.SGD(model, lr=0.01, momentum=0.9)
            loss_fn = gpucnn.CrossEntropyLoss()
            xd, yd = be.asarray(x), be.asarray(labels)

            def ours():
                opt.zero_grad()
                loss_fn(model(xd), yd).backward()
                opt.step()

        net = torch.nn.Sequential(
            torch.nn.Conv2d(1, 6, 5, padding=2), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(6, 16, 5), torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(),
            torch.nn.Linear(400, 120), torch.nn.ReLU(), torch.nn.Linear(120, 84), torch.nn.ReLU(),
            torch.nn.Linear(84, 10)).cuda()
        topt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
        xt, yt = torch.from_numpy(x).cuda(), torch.from_numpy(labels).cuda()

        def theirs():
            topt.zero_grad()
            F.cross_entropy(net(xt), yt).backward()
            topt.step()

        ours_ms, torch_ms = time_cupy(ours, repeat), time_torch(theirs, repeat)
        rows.append({"op": "lenet5 train step", "case": f"b{batch}", "gpucnn_ms": ours_ms, "torch_ms": torch_ms,
                     "ratio": ours_ms / torch_ms, "rel_err": None})
        print(f"{'lenet5 train step':18s} b{batch:<23d} gpucnn {ours_ms:8.4f} ms  torch {torch_ms:8.4f} ms  "
              f"ratio {ours_ms / torch_ms:5.2f}", flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--out", default=None, help="write a markdown table and JSON next to it")
    args = parser.parse_args()
    rows, peak = bench(args.repeat)
    device = torch.cuda.get_device_name()
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = "unknown"
    header = (f"device {device}, {datetime.date.today()}, commit {commit or 'unknown'}, torch {torch.__version__}, "
              f"cupy {cp.__version__}, copy bandwidth {peak:.0f} GB/s, float32, TF32 off")
    print(header)
    if args.out:
        lines = [f"# Kernel benchmark\n\n{header}\n",
                 "| op | case | gpucnn ms | torch ms | ratio | rel err | % copy BW |", "|---|---|---|---|---|---|---|"]
        for r in rows:
            bw = f"{100 * r['bandwidth_fraction']:.0f}" if "bandwidth_fraction" in r else ""
            err = f"{r['rel_err']:.1e}" if r["rel_err"] is not None else ""
            lines.append(f"| {r['op']} | {r['case']} | {r['gpucnn_ms']:.4f} | {r['torch_ms']:.4f} | {r['ratio']:.2f} "
                         f"| {err} | {bw} |")
        Path(args.out).write_text("\n".join(lines) + "\n")
        Path(args.out).with_suffix(".json").write_text(json.dumps({"header": header, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
