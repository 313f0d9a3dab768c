"""Back-to-back speed of two zoo binaries (before / after a change) on this machine.

Alternates ROUNDS rounds of `zoo bench reference --attention M --json` for each binary and
mixer, the order reversed every other round, and prints per mixer the median step, forward + loss
and backward time of each binary and the after / before ratio of the step round by round (the
figure to read on a machine that drifts: both binaries of a round ran within seconds of each
other). The before/after tables of docs/benchmarks.md come from it.

    cp target/release/zoo /tmp/zoo-before     # build the old commit first
    python3 bench/before_after.py /tmp/zoo-before target/release/zoo softmax linear
    python3 bench/before_after.py A B --rounds 8 --steps 15 gated_deltanet
"""

import argparse
import json
import os
import statistics
import subprocess
import sys


def step(binary, mixer, steps):
    cmd = [binary, "bench", "reference", "--attention", mixer, "--steps", str(steps), "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"before_after.py: {' '.join(cmd)} failed ({done.returncode}):\n"
                 f"{done.stderr[-2000:]}")
    for line in reversed(done.stdout.splitlines()):
        if line.strip().startswith("{"):
            row = json.loads(line)
            return row["median_step_s"], row["forward_s"], row["backward_s"], row
    sys.exit(f"before_after.py: {' '.join(cmd)} printed no JSON line")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("before", help="the zoo binary before the change")
    ap.add_argument("after", help="the zoo binary after the change")
    ap.add_argument("mixers", nargs="*", default=["softmax", "linear"])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--steps", type=int, default=15)
    a = ap.parse_args()
    if a.rounds < 1:
        sys.exit("before_after.py: --rounds must be at least 1")
    for path in (a.before, a.after):
        if not os.access(path, os.X_OK):
            sys.exit(f"before_after.py: {path} is not an executable zoo binary; build it first")
    times = {}
    machine = None
    for r in range(a.rounds):
        for mixer in a.mixers:
            order = [("before", a.before), ("after", a.after)]
            for label, binary in order if r % 2 == 0 else order[::-1]:
                *t, row = step(binary, mixer, a.steps)
                machine = machine or f"{row.get('cpu')}, {row.get('isa')} kernels, " \
                                     f"{row.get('threads')} threads"
                times.setdefault((mixer, label), []).append(t)
    print(f"machine: {machine}; {a.rounds} rounds of {a.steps} steps")
    print(f"{'mixer':16} {'':7} {'step s':>8} {'fwd+loss':>9} {'backward':>9}")
    for mixer in a.mixers:
        for label in ("before", "after"):
            rows = times[(mixer, label)]
            med = [statistics.median(x[i] for x in rows) for i in range(3)]
            print(f"{mixer:16} {label:7} {med[0]:8.4f} {med[1]:9.4f} {med[2]:9.4f}")
        ratios = [b[0] / a_[0] for a_, b in zip(times[(mixer, "before")], times[(mixer, "after")])]
        print(f"{mixer:16} after/before per round {min(ratios):.2f}–{max(ratios):.2f}, "
              f"median {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
