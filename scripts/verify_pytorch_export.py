#!/usr/bin/env python3
"""Checks a model exported by `fmnist export` against fmnist itself, with PyTorch.

Usage (in a virtualenv with torch, numpy and safetensors, outside the repository):

    fmnist export --model-file RUN/model.safetensors --pytorch OUT
    fmnist eval --model-file RUN/model.safetensors --predictions OUT/fmnist.csv
    python3 scripts/verify_pytorch_export.py OUT [--data /usr/share/datasets/fashion-mnist]

It loads OUT/model.py and OUT/state_dict.safetensors with `load_state_dict(strict=True)`, runs
the 10,000 test images, and compares PyTorch's predictions and logits with fmnist's
(OUT/fmnist.csv). Exits 1 if a prediction differs or a logit is off by more than --tol.
"""
import argparse
import csv
import gzip
import importlib.util
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file


def read_idx_images(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    n, rows, cols = (int.from_bytes(data[i:i + 4], "big") for i in (4, 8, 12))
    return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(n, 1, rows, cols)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--data", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    ap.add_argument("--tol", type=float, default=1e-4)
    a = ap.parse_args()

    spec = importlib.util.spec_from_file_location("model", a.out / "model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    net = mod.Net().eval()
    missing = net.load_state_dict(load_file(a.out / "state_dict.safetensors"), strict=True)
    print(f"load_state_dict(strict=True): {missing}")

    images = read_idx_images(a.data / "t10k-images-idx3-ubyte.gz")
    with torch.no_grad():
        logits = torch.cat([net(torch.from_numpy(images[i:i + 1000].astype(np.float32)))
                            for i in range(0, len(images), 1000)]).numpy()

    rows = list(csv.DictReader(open(a.out / "fmnist.csv")))
    ours = np.array([[float(r[f"logit_{c}"]) for c in range(logits.shape[1])] for r in rows], dtype=np.float64)
    ours_pred = np.array([int(r["predicted"]) for r in rows])
    labels = np.array([int(r["label"]) for r in rows])
    torch_pred = logits.argmax(axis=1)
    diff = np.abs(ours - logits)
    same = int((torch_pred == ours_pred).sum())
    print(f"test images: {len(rows)}; same prediction: {same}; "
          f"accuracy fmnist {100 * (ours_pred == labels).mean():.2f}%, PyTorch {100 * (torch_pred == labels).mean():.2f}%")
    print(f"logits: max |fmnist - PyTorch| = {diff.max():.3g}, mean {diff.mean():.3g} (tolerance {a.tol:g})")
    ok = same == len(rows) and diff.max() <= a.tol
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
