#!/usr/bin/env bash
# Regenerates EXPERIMENTS.md's results: scripts/experiments.sh [a|b|c|d|e|f|all]... [--commit]
#
# Each experiment is one sweep file in experiments/ (c and e add evaluations of the trained runs).
# Sweeps train into sweeps/<name>/ (not committed: checkpoints) and resume where they stopped, so
# an interrupted run of this script continues the next time. When an experiment completes, its
# table and plots are copied to experiments/results/<name>/ together with the wall time and the
# machine, and with --commit committed, so the page never cites a result the repository lacks.
# Budget on a 2-core CPU (EXPERIMENTS.md has the measured times): ≤ 3 hours in all.
set -euo pipefail
cd "$(dirname "$0")/.."

ZOO=${ZOO:-}
# Runs trained at once (each on cores / JOBS threads): these models are small enough that two
# one-thread runs finish more work per hour than one two-thread run.
JOBS=${JOBS:-$(nproc)}
if [[ -z "$ZOO" ]]; then
  cargo build --release --quiet
  ZOO="${CARGO_TARGET_DIR:-target}/release/zoo"
fi
commit=0
wanted=()
for arg in "$@"; do
  case "$arg" in
    --commit) commit=1 ;;
    a|b|c|d|e|f) wanted+=("$arg") ;;
    all) wanted+=(a b c d e f) ;;
    *) echo "experiments.sh: unknown argument '$arg' (use a, b, c, d, e, f, all, --commit)" >&2; exit 2 ;;
  esac
done
[[ ${#wanted[@]} -gt 0 ]] || wanted=(a b c d e f)

declare -A FILE=([a]=a-mqar-zoology [b]=b-state-size [c]=c-positions [d]=d-progressive [e]=e-diagnostics [f]=f-delta-rule)

machine() {
  local cpu
  cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
  echo "$cpu, $(nproc) cores"
}

# Copies a finished sweep's table and plots into experiments/results/<name>/.
publish() {
  local name=$1 seconds=$2 out="experiments/results/$1"
  mkdir -p "$out"
  cp "sweeps/$name/results.csv" "sweeps/$name/results.json" "$out/"
  if [[ -d "sweeps/$name/plots" ]]; then cp -r "sweeps/$name/plots" "$out/"; fi
  # Each run's post-training MQAR results and figure (and any test-time scaled ones), and its
  # attention diagnostics where (e) measured them.
  mkdir -p "$out/per-run"
  for run in "sweeps/$name"/runs/*/; do
    id=$(basename "$run")
    for f in "$run"eval/mqar*.json "$run"eval/mqar*.svg "$run"eval/attention*; do
      [[ -f "$f" ]] && cp "$f" "$out/per-run/$id-$(basename "$f")"
    done
  done
  # The runs' own wall seconds (summary.json, summed over sessions when a run was resumed), and
  # this invocation's, which is short when the runs had finished before.
  local runs_seconds
  runs_seconds=$(python3 -c 'import json,sys; print(round(sum(r["wall_seconds"] or 0 for r in json.load(open(sys.argv[1]))["rows"])))' "$out/results.json")
  printf '{"wall_seconds_sum_of_runs": %s, "wall_seconds_this_invocation": %s, "machine": "%s", "date": "%s"}\n' \
    "$runs_seconds" "$seconds" "$(machine)" "$(date -u +%FT%TZ)" > "$out/provenance.json"
  if [[ $commit == 1 ]]; then
    git add "$out" && git commit -q -m "experiments: $name results" -- "$out" || true
  fi
}

run_sweep() {
  local name=${FILE[$1]} start=$SECONDS
  echo "== experiment $1: $name"
  "$ZOO" sweep "experiments/$name.toml" --out "sweeps/$name" --jobs "$JOBS"
  if [[ $1 == c ]]; then rope_scaled; fi
  if [[ $1 == e ]]; then diagnostics; fi
  publish "$name" $((SECONDS - start))
}

# (c) also: the RoPE runs evaluated with position interpolation and NTK scaling (factor 8 =
# 1024 / 128, the longest test length over the training length) applied at test time.
rope_scaled() {
  python3 - <<'PY'
import json, os, subprocess
zoo = os.environ["ZOO_BIN"]
with open("sweeps/c-positions/results.json") as f:
    rows = json.load(f)["rows"]
for r in rows:
    if r.get("model.position") != "rope" or "log_n" in str(r.get("model.mixer", "")):
        continue
    for flag in ("--rope-interpolation", "--ntk"):
        subprocess.run([zoo, "eval", "mqar", "--run", f"sweeps/c-positions/runs/{r['id']}",
                        "--lengths", "128,256,512,1024", "--pairs", "8", flag, "8", "--quiet"],
                       check=True)
PY
}

# (e): the attention diagnostics of each of its runs at 128–1024 tokens (published per run).
diagnostics() {
  python3 - <<'PY'
import json, os, subprocess
zoo = os.environ["ZOO_BIN"]
with open("sweeps/e-diagnostics/results.json") as f:
    rows = json.load(f)["rows"]
for r in rows:
    subprocess.run([zoo, "eval", "attention", "--run", f"sweeps/e-diagnostics/runs/{r['id']}",
                    "--lengths", "128,256,512,1024", "--samples", "16", "--quiet"], check=True)
PY
}

export ZOO_BIN="$ZOO"
for x in "${wanted[@]}"; do
  run_sweep "$x"
done
