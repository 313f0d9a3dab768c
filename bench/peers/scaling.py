"""PyTorch peer for `zoo bench scaling`: one mixer layer's forward + backward against length.

Measures what `zoo bench scaling` measures, with the layers of reference.py: one mixer layer
(d_model 128, 4 heads, no position encoding, PyTorch's default initialisation, seed 0), input
x ~ N(0, 1) of shape [1, n, 128] with requires_grad, loss = sum of the layer's output, backward.
Per length: a warm-up run, then the median of at least 5 runs and at least 0.5 s of them; the
fitted exponent k of time ∝ n^k and memory ∝ n^k (least squares in log-log), as the zoo prints.

Memory per point:
  cuda   the caching allocator's reservation above what it held before the first run
         (torch.cuda.max_memory_reserved; comparable with the zoo's "device memory reserved by
         the allocator" on wgpu / cuda), and the peak of live tensors
         (max_memory_allocated) beside it;
  cpu    the peak resident size of a child process per point above its size before the first
         run (the zoo's "peak resident size of the process").

    python3 bench/peers/scaling.py --mixers softmax,linear --lengths 1024,2048,4096
    python3 bench/peers/scaling.py --device cuda --lengths 1024,4096,16384,65536 --json

Mixers: softmax (F.scaled_dot_product_attention, is_causal=True, no RoPE: the zoo's scaling
layer has no position encoding), linear (chunked elu+1, chunk 64), gated_deltanet, deltanet.
"""

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import reference  # noqa: E402  (the mixers and the machine description)

MIXERS = ("softmax", "linear", "gated_deltanet", "deltanet")


def causal_sdpa(q, k, v):
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def make_layer(mixer, d=128, heads=4):
    if mixer == "softmax":
        return reference.QkvMixer(d, heads, causal_sdpa)
    return reference.make_mixer(mixer, d, heads)


def rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def measure_point(mixer, n, device_name):
    """One (mixer, length) point in this process: {"seconds", "peak_mib", "memory", ...}."""
    device = torch.device(device_name)
    torch.manual_seed(0)
    layer = make_layer(mixer).to(device)
    x = torch.randn(1, n, 128, device=device, requires_grad=True)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        reserved0 = torch.cuda.memory_reserved(device)
        allocated0 = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    else:
        rss0 = rss_mib()

    def run():
        x.grad = None
        layer.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        layer(x).sum().backward()
        reference.sync(device)
        return time.perf_counter() - t0

    run()  # warm-up: kernel selection, first-touch page faults
    times = []
    while len(times) < 5 or (sum(times) < 0.5 and len(times) < 100):
        times.append(run())
    point = {"seconds": statistics.median(times)}
    if cuda:
        mib = 1024.0 * 1024.0
        point["peak_mib"] = (torch.cuda.max_memory_reserved(device) - reserved0) / mib
        point["peak_allocated_mib"] = (torch.cuda.max_memory_allocated(device) - allocated0) / mib
        point["memory"] = "device memory reserved by the allocator"
        point["gpu"] = torch.cuda.get_device_name(device)
    else:
        # ru_maxrss is in KiB on Linux.
        point["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0 - rss0
        point["memory"] = "peak resident size of the process"
    return point


def fitted_exponent(points):
    pts = [(math.log(n), math.log(max(y, 1e-3))) for n, y in points if y == y]
    if len(pts) < 2:
        return float("nan")
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    num = sum((a - mx) * (b - my) for a, b in pts)
    den = sum((a - mx) ** 2 for a, _ in pts)
    return num / den


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mixers", default="softmax,linear",
                    help=f"comma-separated, from {', '.join(MIXERS)}")
    ap.add_argument("--lengths", default="1024,2048,4096,8192,16384")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--json", action="store_true", help="one JSON array instead of the table")
    ap.add_argument("--point", nargs=2, metavar=("MIXER", "LEN"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    torch.set_num_threads(max(1, a.threads))
    if a.point:
        print(json.dumps(measure_point(a.point[0], int(a.point[1]), a.device)))
        return 0
    mixers = [m for m in a.mixers.split(",") if m]
    for m in mixers:
        if m not in MIXERS:
            sys.exit(f"scaling.py: unknown mixer `{m}`; choose from {', '.join(MIXERS)}")
    try:
        lengths = [int(n) for n in a.lengths.split(",") if n]
    except ValueError:
        sys.exit(f"scaling.py: --lengths takes comma-separated integers, got `{a.lengths}`")
    if not lengths or min(lengths) < 1:
        sys.exit("scaling.py: --lengths needs at least one length of 1 or more")
    if torch.device(a.device).type == "cuda" and not torch.cuda.is_available():
        sys.exit("scaling.py: --device cuda, but this PyTorch sees no CUDA device; use --device cpu")

    machine = {"cpu": reference.cpu_model(), "threads": torch.get_num_threads(),
               "torch": torch.__version__, "device": a.device}
    if not a.json:
        print(f"machine: {machine['cpu']}, torch {machine['torch']}, {machine['threads']} threads, "
              f"device {a.device}")
        print(f"{'mixer':>15} {'seq_len':>7} {'fwd+bwd s':>11} {'peak MiB':>12}")
    report, measured = [], None
    for mixer in mixers:
        times, memory, stopped = [], [], None
        for n in lengths:
            # A child process per point, so that each peak is that point's own (on the CPU the
            # resident high-water mark never comes down; on a GPU the caching allocator keeps its
            # reservation).
            done = subprocess.run(
                [sys.executable, os.path.abspath(__file__), "--point", mixer, str(n),
                 "--device", a.device, "--threads", str(a.threads)],
                capture_output=True, text=True)
            if done.returncode != 0:
                stopped = n  # out of memory or another failure: say where the mixer stopped
                tail = done.stderr.strip().splitlines()[-1:] or ["no message"]
                print(f"scaling.py: {mixer} at {n} failed: {tail[0]}", file=sys.stderr)
                break
            point = json.loads(done.stdout.strip().splitlines()[-1])
            measured = measured or point["memory"]
            times.append((n, point["seconds"]))
            memory.append((n, point["peak_mib"]))
            if not a.json:
                print(f"{mixer:>15} {n:>7} {point['seconds']:>11.4f} {point['peak_mib']:>12.1f}")
            report.append(dict(machine, mixer=mixer, seq_len=n, **point))
        kt, km = fitted_exponent(times), fitted_exponent(memory)
        report.append(dict(machine, mixer=mixer, time_exponent=kt, memory_exponent=km,
                           stopped_before=stopped))
        if not a.json:
            note = f" (stopped before {stopped})" if stopped else ""
            print(f"{mixer:>15} exponents: time {kt:.2f}, memory {km:.2f}{note}")
    if a.json:
        print(json.dumps(report))
    elif measured:
        print(f"peak MiB: {measured}, above what the layer and its input hold before the first run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
