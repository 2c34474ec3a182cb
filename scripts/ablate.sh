#!/usr/bin/env bash
# Ablation of the `ours` preset: trains it once with its full recipe and once with each
# ingredient switched off (same seed, same split, same epochs), keeps each log and metrics
# under results/accuracy/ablation-eEPOCHS/NAME/ (or $ABLATE_ROOT/NAME/), and prints a table of
# test accuracies.
#   usage: scripts/ablate.sh EPOCHS [extra train flags for every run...]
# (the preset's own budget is 22 epochs).
# ABLATE_PARALLEL=2 runs two variants at a time with --threads 1 each (on 2 cores that trains
# about 5% more images per second than one run on both; the figures do not depend on the
# thread count).
set -euo pipefail
cd "$(dirname "$0")/.."
epochs=${1:?usage: scripts/ablate.sh EPOCHS [flags...]}
shift
root=${ABLATE_ROOT:-results/accuracy/ablation-e$epochs}
mkdir -p "$root"
cargo build --release --quiet
# The `ours` recipe has no augmentation; "shifts-and-flips" adds the one it had before,
# "mixup" and "cutmix" add a batch blend each.
variants=(
  "full|"
  "no-label-smoothing|--label-smoothing 0"
  "adam-cosine|--optimizer adam --lr 1e-3 --weight-decay 0 --schedule cosine"
  "constant-lr|--schedule constant"
  "no-batch-norm|--no-batch-norm"
  "no-dropout|--no-dropout"
  "shifts-and-flips|--shift 2 --flip 0.5"
  "mixup|--mixup 0.2"
  "cutmix|--cutmix 1"
)
# ABLATE_VARIANTS="name name ..." runs only those.
if [ -n "${ABLATE_VARIANTS:-}" ]; then
  chosen=()
  for v in "${variants[@]}"; do
    for name in $ABLATE_VARIANTS; do
      if [ "${v%%|*}" = "$name" ]; then chosen+=("$v"); fi
    done
  done
  variants=("${chosen[@]}")
fi
parallel=${ABLATE_PARALLEL:-1}
threads=()
if [ "$parallel" -gt 1 ]; then threads=(--threads 1); fi
run_variant() {
  local name=${1%%|*} flags=${1#*|}
  shift
  local out=$root/$name
  rm -rf "$out"
  mkdir -p "$out"
  # shellcheck disable=SC2086
  {
    echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) $(uname -n) $(nproc) cores"
    echo "# command: target/release/fmnist train --model ours --epochs $epochs $flags ${threads[*]} $* --out $out"
    target/release/fmnist train --model ours --epochs "$epochs" $flags "${threads[@]}" "$@" --out "$out"
  } > "$out/train.log" 2>&1
  rm -f "$out/model.safetensors"
}
for ((i = 0; i < ${#variants[@]}; i += parallel)); do
  for v in "${variants[@]:i:parallel}"; do
    run_variant "$v" "$@" &
  done
  wait
done
for v in "${variants[@]}"; do
  name=${v%%|*}
  echo "$name: $(grep -h '^Test loss' "$root/$name/train.log")"
done
