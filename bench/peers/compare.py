"""Back-to-back speed ratios of attention-zoo against its PyTorch peer on this machine.

For each mixer, alternates N pairs of `python3 reference.py --mixer M --json` (the peer, beside
this file) and `zoo bench reference --attention M --json`, then prints one table row per pair and
the median ratio, headed by the machine: CPU model, the ISA path the zoo's kernels dispatched to,
the threads of each side, and the torch version. Alternating pairs (not N runs of one side, then
N of the other) spreads a shared machine's drift over both sides.

    python3 bench/peers/compare.py                       # softmax linear gated_deltanet, 3 pairs
    python3 bench/peers/compare.py --pairs 5 deltanet    # chosen mixers and pair count
    ZOO=target/release/zoo python3 bench/peers/compare.py --json
    python3 bench/peers/compare.py --device wgpu --peer-device cuda   # the GPU path against CUDA

The zoo binary is $ZOO, else target/release/zoo (under $CARGO_TARGET_DIR when set), built with
`cargo build --release` if missing. Measure on a quiet machine (see README.md).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def zoo_binary():
    if os.environ.get("ZOO"):
        return os.environ["ZOO"]
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    path = os.path.join(target, "release", "zoo")
    if not os.path.exists(path):
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    return path


def last_json(stdout, what):
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    sys.exit(f"compare.py: {what} printed no JSON line:\n{stdout}")


def run(cmd, what):
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"compare.py: {what} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return last_json(done.stdout, what)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mixers", nargs="*", default=["softmax", "linear", "gated_deltanet"])
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--device", default="flex",
                    help="the zoo's --device (flex, wgpu, cuda); default flex")
    ap.add_argument("--peer-device", default="cpu",
                    help="PyTorch's --device (cpu, cuda, mps); default cpu")
    ap.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    a = ap.parse_args()
    if a.pairs < 1:
        sys.exit("compare.py: --pairs must be at least 1")
    zoo = zoo_binary()
    rows, machine = [], None
    for mixer in a.mixers:
        for pair in range(a.pairs):
            torch = run(
                [sys.executable, os.path.join(HERE, "reference.py"), "--mixer", mixer,
                 "--steps", str(a.steps), "--warmup", str(a.warmup), "--device", a.peer_device,
                 "--json"],
                f"reference.py --mixer {mixer} --device {a.peer_device}",
            )
            ours = run(
                [zoo, "bench", "reference", "--attention", mixer, "--steps", str(a.steps),
                 "--warmup", str(a.warmup), "--device", a.device, "--json"],
                f"zoo bench reference --attention {mixer} --device {a.device}",
            )
            machine = machine or {
                "cpu": ours.get("cpu"),
                "isa": ours.get("isa"),
                "zoo_threads": ours.get("threads"),
                "torch_threads": torch.get("threads"),
                "torch": torch.get("torch"),
                "zoo_device": a.device,
                "torch_device": a.peer_device,
                "gpu": torch.get("gpu"),
            }
            rows.append({
                "mixer": mixer,
                "pair": pair + 1,
                "torch_tokens_per_s": torch["tokens_per_s"],
                "zoo_tokens_per_s": ours["tokens_per_s"],
                "ratio": ours["tokens_per_s"] / torch["tokens_per_s"],
                "zoo_forward_s": ours.get("forward_s"),
                "zoo_backward_s": ours.get("backward_s"),
                "torch_forward_s": torch.get("forward_s"),
                "torch_backward_s": torch.get("backward_s"),
            })
    medians = {
        m: statistics.median(r["ratio"] for r in rows if r["mixer"] == m) for m in a.mixers
    }
    if a.json:
        print(json.dumps({"machine": machine, "pairs": rows, "median_ratio": medians}))
        return
    print(
        f"machine: {machine['cpu']}, zoo kernels {machine['isa']}, zoo {machine['zoo_threads']} "
        f"threads, torch {machine['torch']} {machine['torch_threads']} threads"
    )
    if a.device != "flex" or a.peer_device != "cpu":
        gpu = f" ({machine['gpu']})" if machine.get("gpu") else ""
        print(f"devices: zoo {a.device}, torch {a.peer_device}{gpu}")
    print(f"{'mixer':<16} {'pair':>4} {'torch tok/s':>12} {'zoo tok/s':>10} {'zoo/torch':>9}")
    for r in rows:
        print(
            f"{r['mixer']:<16} {r['pair']:>4} {r['torch_tokens_per_s']:>12.0f} "
            f"{r['zoo_tokens_per_s']:>10.0f} {r['ratio']:>9.2f}"
        )
    for m, ratio in medians.items():
        print(f"{m:<16} median ratio {ratio:.2f}")


if __name__ == "__main__":
    main()
