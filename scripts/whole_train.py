#!/usr/bin/env python3
"""Whole training runs as a user waits for them: ours against Keras on write-up E's network.

For each thread count, runs `fmnist train --model cmasch --static-copies 0` (the 48,000
training images of the split, no copies, validation after every epoch) and the Keras peer
script (`../shared/peers/keras_fmnist.py --model cmasch --no-infer`, the same 48,000 images)
for 1 and for 3 epochs, alternating ours and Keras round by round, and times each whole
process (start-up, data loading, training, evaluation). The marginal epoch, (T3 - T1) / 2,
cancels what a run pays once; 48,000 / that is the training speed a user sees.

    python3 scripts/whole_train.py --threads 1,2 --rounds 2 --out results/speed/xeon-whole-train

Writes each run's console output and a `table.md` into --out.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

IMAGES = 48_000

ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
ap.add_argument("--rounds", type=int, default=2, help="alternating rounds per thread count")
ap.add_argument("--out", required=True, help="results folder")
ap.add_argument("--fmnist", default="target/release/fmnist", help="our binary (built with --release)")
ap.add_argument("--tf-python", default=os.path.expanduser("~/peers-tf/bin/python"))
ap.add_argument("--peers-dir", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "peers"))
args = ap.parse_args()

for path, what in [(args.fmnist, "our binary (cargo build --release)"), (args.tf_python, "the Keras virtualenv")]:
    if not os.path.exists(path):
        sys.exit(f"error: {path} not found: {what}")
keras = os.path.join(args.peers_dir, "keras_fmnist.py")
if not os.path.exists(keras):
    sys.exit(f"error: {keras} not found (--peers-dir)")
os.makedirs(args.out, exist_ok=True)


def run(engine, threads, epochs, rnd):
    """Wall seconds of one whole process; its output goes to a log in --out."""
    folder = None
    if engine == "ours":
        folder = tempfile.mkdtemp(prefix="fmnist-whole-train-")
        cmd = [args.fmnist, "train", "--model", "cmasch", "--static-copies", "0", "--epochs", str(epochs),
               "--threads", str(threads), "--out", os.path.join(folder, "run")]
    else:
        cmd = [args.tf_python, keras, "--model", "cmasch", "--epochs", str(epochs), "--threads", str(threads),
               "--no-infer"]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if folder:
        shutil.rmtree(folder, ignore_errors=True)
    log = os.path.join(args.out, f"{engine}-t{threads}-e{epochs}-r{rnd}.log")
    with open(log, "w") as f:
        f.write("$ " + " ".join(cmd) + f"\n# wall {wall:.2f} s, exit {done.returncode}\n" + done.stdout + done.stderr)
    if done.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} failed (exit {done.returncode}); see {log}")
    print(f"  {engine:5} {threads} thread(s) {epochs} epoch(s), round {rnd}: {wall:7.2f} s", flush=True)
    return wall


results = {}
lines = ["| threads | engine | 1 epoch (s) | 3 epochs (s) | marginal epoch (s) | img/s |", "|---|---|---|---|---|---|"]
for threads in [int(t) for t in args.threads.split(",")]:
    walls = {(e, n): [] for e in ("ours", "keras") for n in (1, 3)}
    for rnd in range(args.rounds):
        for epochs in (1, 3):
            for engine in ("ours", "keras"):
                walls[(engine, epochs)].append(run(engine, threads, epochs, rnd))
    speed = {}
    for engine in ("ours", "keras"):
        t1, t3 = statistics.median(walls[(engine, 1)]), statistics.median(walls[(engine, 3)])
        marginal = (t3 - t1) / 2
        speed[engine] = IMAGES / marginal
        lines.append(f"| {threads} | {engine} | {t1:.1f} | {t3:.1f} | {marginal:.1f} | {speed[engine]:,.0f} |")
        results[f"{engine}-t{threads}"] = {"walls_1": walls[(engine, 1)], "walls_3": walls[(engine, 3)],
                                           "marginal_epoch_s": marginal, "images_per_second": speed[engine]}
    # Round by round too: the host's speed drifts between minutes, so a ratio within one round
    # (four runs back to back) is the steadier figure.
    per_round = []
    for rnd in range(args.rounds):
        marg = {e: (walls[(e, 3)][rnd] - walls[(e, 1)][rnd]) / 2 for e in ("ours", "keras")}
        per_round.append(marg["keras"] / marg["ours"])
    results[f"ratio-t{threads}"] = {"of_medians": speed["ours"] / speed["keras"], "per_round": per_round}
    rounds = ", ".join(f"{r:.2f}x" for r in per_round)
    print(f"{threads} thread(s): ours {speed['ours']:,.0f} img/s, Keras {speed['keras']:,.0f}: "
          f"{speed['ours'] / speed['keras']:.2f}x (round by round: {rounds})", flush=True)
    lines.append(f"| {threads} | ours / Keras | | | | **{speed['ours'] / speed['keras']:.2f}x** (rounds: {rounds}) |")

table = "\n".join(lines) + (
    "\n\nWhole-process wall times, medians over the rounds; the marginal epoch is (3 epochs - 1 epoch) / 2, "
    f"and img/s is {IMAGES:,} over it. Ours validates after every epoch; Keras's fit does not.\n")
with open(os.path.join(args.out, "table.md"), "w") as f:
    f.write(table)
with open(os.path.join(args.out, "results.json"), "w") as f:
    json.dump(results, f, indent=1)
print(table)
