#!/usr/bin/env bash
# Ablation of the `ours` preset: trains it once with its full recipe and once with each
# ingredient switched off (same seed, same split, same epochs), keeps each log and metrics
# under results/accuracy/ablation/NAME/, and prints a table of test accuracies.
#   usage: scripts/ablate.sh EPOCHS [extra train flags for every run...]
set -euo pipefail
cd "$(dirname "$0")/.."
epochs=${1:?usage: scripts/ablate.sh EPOCHS [flags...]}
shift
root=results/accuracy/ablation
mkdir -p "$root"
cargo build --release --quiet
variants=(
  "full|"
  "no-label-smoothing|--label-smoothing 0"
  "constant-lr|--schedule constant"
  "no-flips|--flip 0"
  "no-shifts|--shift 0"
  "no-augmentation|--no-augment"
  "no-batch-norm|--no-batch-norm"
)
for v in "${variants[@]}"; do
  name=${v%%|*}
  flags=${v#*|}
  out=$root/$name
  rm -rf "$out"
  mkdir -p "$out"
  # shellcheck disable=SC2086
  {
    echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) $(uname -n) $(nproc) cores"
    echo "# command: target/release/fmnist train --model ours --epochs $epochs $flags $* --out $out"
    target/release/fmnist train --model ours --epochs "$epochs" $flags "$@" --out "$out"
  } > "$out/train.log" 2>&1
  rm -f "$out/model.safetensors"
  echo "$name: $(grep -h '^Test loss' "$out/train.log")"
done
