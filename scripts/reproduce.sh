#!/usr/bin/env bash
# Reproduces a write-up's result: trains PRESET with its recipe RUNS times (seeds 0..RUNS-1,
# each its own split) and keeps the log, the per-run metrics and the summary under
# results/accuracy/PRESET/ (model weights stay out of git: see .gitignore).
#   usage: scripts/reproduce.sh PRESET [RUNS] [extra train flags...]
set -euo pipefail
cd "$(dirname "$0")/.."
preset=${1:?usage: scripts/reproduce.sh PRESET [RUNS] [flags...]}
runs=${2:-3}
shift $(( $# >= 2 ? 2 : 1 ))
out=results/accuracy/$preset
rm -rf "$out"
mkdir -p "$out"
cargo build --release --quiet
{
  echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) $(uname -n) $(nproc) cores"
  echo "# command: target/release/fmnist train --model $preset --runs $runs --out $out $*"
  target/release/fmnist train --model "$preset" --runs "$runs" --out "$out" "$@"
} 2>&1 | tee "$out/train.log"
