#!/usr/bin/env python3
"""Train the same models on the same images with this engine (`fmnist-speed`) and with the
PyTorch and Keras peer scripts (`../shared/peers/`), back to back, and print how they compare.

For each model and thread count, four runs, one after the other, each through
`../shared/peers/guard.py` (which waits for a quiet machine and reports the CPU time other
processes took while the run ran) and `/usr/bin/time` (peak RSS):

    ours           target/release/fmnist-speed --model P --threads T
    pytorch        pytorch_fmnist.py --model M --epochs E --threads T
    pytorch-fast   the same with --channels-last --malloc-tune (the fastest PyTorch set-up)
    keras          keras_fmnist.py --model M --epochs E --threads T   (C1 and E only)

| --models | ours | peers' name | batch |
|---|---|---|---|
| c1 | c1 | seed002 | 512 |
| ab | b (the A/B network) | seed000 | 512 |
| e | cmasch | cmasch | 250 |

Figures compared: training images/s (forward + backward + optimizer step, with the batch
gathering: ours times one epoch's worth of steps after 5 warm-up steps, the peers' figure is
their mean epoch wall time over the epochs after the first, which includes warm-up, hence
`--epochs 2` at least), inference images/s at batch 1000 (best of 3 passes over the test set),
one-image latency (median, microseconds) and peak RSS (`/usr/bin/time`'s maximum resident set,
MiB: the whole process, data and framework included).

A peer whose virtual environment is missing (~/peers for PyTorch, ~/peers-tf for Keras; see
`../shared/peers/README.md`) is reported as missing; a run that fails as failed, with its log.

Output, in the results folder (default `results/speed/<UTC timestamp>/` in the repository):
one raw log per run (`<model>-t<threads>-<engine>.log`, the quietest attempt when guard re-ran
it; with `--keep-attempts` also `.attemptK`, every attempt, and `.console`, guard's whole
output, which otherwise are deleted: they repeat the log), `results.json` with every parsed
figure and its foreign_frac, and `table.md`, the table this script also prints. A figure whose
foreign_frac (the phase's own, else guard's for the whole run) is above 0.05 is marked `*`:
measured under contention, not to be trusted.

usage: scripts/compare.py [--models c1,ab,e] [--threads 2,1] [--epochs 2]
                          [--engines ours,pytorch,pytorch-fast,keras] [--out DIR] [--no-build]
"""
import argparse
import datetime
import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODELS = {  # --models name: (our preset, peers' model name, batch, keras has it)
    "c1": ("c1", "seed002", 512, True),
    "ab": ("b", "seed000", 512, False),
    "e": ("cmasch", "cmasch", 250, True),
}
ENGINES = ["ours", "pytorch", "pytorch-fast", "keras"]
PEERS = ["pytorch", "pytorch-fast", "keras"]
UNRELIABLE = 0.05  # foreign_frac above which a figure was measured under contention
METRICS = [  # key, label, unit, higher is better
    ("train_ips", "training img/s", "img/s", True),
    ("infer_ips", "inference img/s, batch 1000", "img/s", True),
    ("latency_us", "one image, median", "us", False),
    ("rss_mib", "peak RSS", "MiB", False),
]


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="c1,ab,e", help="comma-separated: c1, ab, e (default all)")
    ap.add_argument("--threads", default="2,1", help="comma-separated thread counts (default 2,1)")
    ap.add_argument("--epochs", type=int, default=2,
                    help="peer epochs; the first is warm-up and not counted (default 2)")
    ap.add_argument("--engines", default=",".join(ENGINES), help="comma-separated subset of " + ", ".join(ENGINES))
    ap.add_argument("--out", type=Path, default=None, help="results folder (default results/speed/<timestamp>/)")
    ap.add_argument("--our-steps", type=int, default=None,
                    help="fmnist-speed --steps (default: one epoch of the training split)")
    ap.add_argument("--peers-dir", type=Path, default=REPO.parent / "shared" / "peers")
    ap.add_argument("--torch-python", type=Path, default=Path.home() / "peers" / "bin" / "python")
    ap.add_argument("--tf-python", type=Path, default=Path.home() / "peers-tf" / "bin" / "python")
    ap.add_argument("--speed-bin", type=Path, default=REPO / "target" / "release" / "fmnist-speed")
    ap.add_argument("--no-build", action="store_true", help="do not run cargo build first")
    ap.add_argument("--wait-max", type=float, default=300, help="guard.py --wait-max (seconds)")
    ap.add_argument("--retries", type=int, default=1,
                    help="guard.py --retries: re-run a run measured with foreign_frac above --max-foreign "
                         "this many times, keeping the quietest attempt (default 1)")
    ap.add_argument("--max-foreign", type=float, default=UNRELIABLE, help="guard.py --max-foreign (default 0.05)")
    ap.add_argument("--keep-attempts", action="store_true",
                    help="keep guard's every attempt (.attemptK) and whole output (.console) beside each log")
    ap.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    a = ap.parse_args()
    a.models = [m for m in a.models.split(",") if m]
    a.threads = [int(t) for t in a.threads.split(",") if t]
    a.engines = [e for e in a.engines.split(",") if e]
    for m in a.models:
        if m not in MODELS:
            ap.error(f"unknown model {m!r}; one of {', '.join(MODELS)}")
    for e in a.engines:
        if e not in ENGINES:
            ap.error(f"unknown engine {e!r}; one of {', '.join(ENGINES)}")
    if a.epochs < 2:
        print("warning: --epochs 1 gives the peers' warm-up epoch only", file=sys.stderr)
    return a


def has_module(python, module):
    """Whether `python` exists and can find `module`, without importing it (cheap)."""
    if not python.exists():
        return False
    code = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is None)"
    return subprocess.run([str(python), "-c", code], capture_output=True).returncode == 0


def command(a, engine, model, threads):
    """The command line of one run, or None with the reason when the engine cannot run it."""
    ours, peer, batch, keras_has = MODELS[model]
    if engine == "ours":
        cmd = [str(a.speed_bin), "--model", ours, "--threads", str(threads), "--batch-size", str(batch)]
        if a.our_steps is not None:
            cmd += ["--steps", str(a.our_steps)]
        return cmd, None
    if engine.startswith("pytorch"):
        cmd = [str(a.torch_python), str(a.peers_dir / "pytorch_fmnist.py"), "--model", peer,
               "--epochs", str(a.epochs), "--threads", str(threads), "--batch", str(batch)]
        if engine == "pytorch-fast":
            cmd += ["--channels-last", "--malloc-tune"]
        return cmd, None
    if not keras_has:
        return None, "n/a (keras_fmnist.py has no such model)"
    return [str(a.tf_python), str(a.peers_dir / "keras_fmnist.py"), "--model", peer,
            "--epochs", str(a.epochs), "--threads", str(threads), "--batch", str(batch)], None


def num(s):
    return float(s.replace(",", ""))


def parse_ours(text):
    r = {}
    js = [ln for ln in text.splitlines() if ln.startswith("{")]
    if not js:
        return r
    d = json.loads(js[-1])
    if d.get("train"):
        r["train_ips"] = (d["train"]["images_per_second"], d["train"]["foreign_frac"])
    if d.get("inference"):
        r["infer_ips"] = (d["inference"]["images_per_second"], d["inference"]["foreign_frac"])
    if d.get("latency"):
        r["latency_us"] = (d["latency"]["median_us"], d["latency"]["foreign_frac"])
    if d.get("peak_rss_mib") is not None:
        r["vmhwm_mib"] = d["peak_rss_mib"]
    return r


def epoch_foreign(text, first_col_re):
    """Largest per-epoch foreign share over the epochs after the first (the last column of the
    peers' epoch lines)."""
    ff = []
    for ln in text.splitlines():
        m = first_col_re.match(ln)
        if m and int(m.group(1)) > 1:
            try:
                ff.append(float(ln.split()[-1]))
            except ValueError:
                pass
    return max(ff) if ff else None


def parse_peer(text):
    r = {}
    epoch_line = re.compile(r"^\s*(\d+)\s+\d+\.\d+\s")
    m = re.search(r"train throughput \(epochs excl\. first\): ([\d,]+) img/s", text)
    if m:
        r["train_ips"] = (num(m.group(1)), epoch_foreign(text, epoch_line))
    m = re.search(r"inference batch 1000[^:]*: ([\d,]+) img/s.*?foreign ([\d.]+)", text)
    if m:
        r["infer_ips"] = (num(m.group(1)), float(m.group(2)))
    m = re.search(r"latency batch 1[^:]*: median ([\d.]+) us.*?foreign ([\d.]+)", text)
    if m:
        r["latency_us"] = (num(m.group(1)), float(m.group(2)))
    m = re.search(r"FINAL test \(last epoch \d+\): loss [\d.]+\s+acc ([\d.]+)", text)
    if m:
        r["test_acc"] = float(m.group(1))
    return r


def parse_common(text, r):
    m = re.findall(r"GUARD rc=(-?\d+) wall=([\d.]+)s .*?foreign_frac=([\d.]+)", text)
    if m:
        rc, wall, ff = m[-1]
        r["guard_rc"], r["guard_wall_s"], r["guard_foreign_frac"] = int(rc), float(wall), float(ff)
    m = re.findall(r"^PEAK_RSS_KB (\d+)", text, re.M)
    if m:
        r["rss_mib"] = (int(m[-1]) / 1024.0, None)
    return r


def run_one(a, engine, model, threads, out):
    cmd, why = command(a, engine, model, threads)
    if cmd is None:
        return {"status": why}
    if engine == "ours":
        if not a.speed_bin.exists() and not a.dry_run:
            return {"status": f"missing ({a.speed_bin} not built)"}
    elif engine.startswith("pytorch"):
        if not a.dry_run and not has_module(a.torch_python, "torch"):
            return {"status": f"missing (no torch in {a.torch_python}; see {a.peers_dir}/README.md)"}
    elif not a.dry_run and not has_module(a.tf_python, "tensorflow"):
        return {"status": f"missing (no tensorflow in {a.tf_python}; see {a.peers_dir}/README.md)"}
    log = out / f"{model}-t{threads}-{engine}.log"
    # guard.py writes the run's output to `log`; with retries, every attempt to `log.attemptK`
    # and the quietest one to `log`, which is what is parsed.
    full = [sys.executable, str(a.peers_dir / "guard.py"), "--wait-max", str(a.wait_max), "--log", str(log)]
    if a.retries > 0:
        full += ["--retries", str(a.retries), "--max-foreign", str(a.max_foreign)]
    full += ["--", "/usr/bin/time", "-f", "PEAK_RSS_KB %M"] + cmd
    print("$ " + " ".join(full), flush=True)
    if a.dry_run:
        return {"status": "dry run"}
    p = subprocess.run(full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    text = log.read_text() if log.exists() else p.stdout
    if a.keep_attempts:
        (out / f"{log.name}.console").write_text(p.stdout)
    else:
        for attempt in out.glob(f"{log.name}.attempt*"):
            attempt.unlink()
    for ln in p.stdout.splitlines():
        if ln.startswith(("GUARD", "fmnist-speed", "train throughput", "inference", "latency", "FINAL")):
            print("  " + ln, flush=True)
    r = parse_ours(text) if engine == "ours" else parse_peer(text)
    parse_common(text, r)
    r["status"] = "ok" if p.returncode == 0 else f"failed (exit {p.returncode}, see {log.name})"
    r["command"] = " ".join(cmd)
    r["log"] = log.name
    return r


def fmt_val(v, unit):
    if unit == "us":
        return f"{v:,.0f} us"
    if unit == "MiB":
        return f"{v:,.0f} MiB"
    return f"{v:,.0f}"


def fmt_cell(res, key, unit):
    if res.get("status") not in ("ok",) and key not in res:
        return res.get("status", "-").split(" (")[0]
    if key not in res:
        return "-"
    v, ff = res[key]
    if unit == "MiB":  # memory does not depend on what else runs
        return fmt_val(v, unit)
    ff = ff if ff is not None else res.get("guard_foreign_frac")
    mark = "*" if ff is not None and ff > UNRELIABLE else ""
    ffs = f" (ff {ff:.2f}){mark}" if ff is not None else ""
    return fmt_val(v, unit) + ffs


def advantage(ours, peer, higher_better):
    """Factor by which ours is better: ours/peer for rates, peer/ours for times and memory."""
    if ours is None or peer is None or ours <= 0 or peer <= 0:
        return None
    return ours / peer if higher_better else peer / ours


def table(a, results):
    lines = []
    engines = [e for e in ENGINES if e in a.engines]
    peers = [e for e in PEERS if e in a.engines]
    for model in a.models:
        for threads in a.threads:
            res = results[f"{model}-t{threads}"]
            ours_p, peer_m, batch, _ = MODELS[model]
            lines.append(f"### {model} (ours: {ours_p}, peers: {peer_m}), batch {batch}, {threads} thread(s)\n")
            head = "| figure | " + " | ".join(engines) + " | ours vs best peer | " + \
                " | ".join(f"vs {p}" for p in peers) + " |"
            lines.append(head)
            lines.append("|" + "---|" * (head.count("|") - 1))
            for key, label, unit, hib in METRICS:
                row = [f"{label}"]
                for e in engines:
                    row.append(fmt_cell(res.get(e, {}), key, unit))
                ours = res.get("ours", {}).get(key, (None,))[0]
                vals = {p: res.get(p, {}).get(key, (None,))[0] for p in peers}
                have = {p: v for p, v in vals.items() if v is not None}
                if have:
                    best_p = (max if hib else min)(have, key=have.get)
                    adv = advantage(ours, have[best_p], hib)
                    row.append(f"{adv:.2f}x ({best_p})" if adv else "-")
                else:
                    row.append("-")
                for p in peers:
                    adv = advantage(ours, vals[p], hib)
                    row.append(f"{adv:.2f}x" if adv else "-")
                lines.append("| " + " | ".join(row) + " |")
            lines.append("")
    lines.append("Factors: > 1 means ours is better (img/s: ours / peer; latency and RSS: peer / ours). "
                 "`ff`: foreign_frac, the share of the machine's CPU other processes used during that "
                 f"measurement (the phase's own where the tool reports one, else guard's for the run); "
                 f"`*`: above {UNRELIABLE}, measured under contention. Peers' training figure: mean epoch "
                 "wall time over the epochs after the first; ours: one epoch's worth of steps after 5 warm-up steps. "
                 "RSS: /usr/bin/time's maximum resident set of the whole process.")
    return "\n".join(lines)


def main():
    a = parse_args()
    out = a.out or REPO / "results" / "speed" / datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    if not a.dry_run:
        out.mkdir(parents=True, exist_ok=True)
    if "ours" in a.engines and not a.no_build and not a.dry_run:
        subprocess.run(["cargo", "build", "--release", "--bin", "fmnist-speed"], cwd=REPO, check=True)
    results = {}
    for model in a.models:
        for threads in a.threads:
            res = {}
            for engine in a.engines:
                res[engine] = run_one(a, engine, model, threads, out)
            results[f"{model}-t{threads}"] = res
            if not a.dry_run:  # keep what is done so far, should a later run be interrupted
                (out / "results.json").write_text(json.dumps(results, indent=1))
    if a.dry_run:
        return
    md = table(a, results)
    (out / "table.md").write_text(md + "\n")
    print()
    print(md)
    print(f"\nWrote {out}")


if __name__ == "__main__":
    main()
