#!/usr/bin/env python3
"""PyTorch as the oracle for fmnist's conventions (run in a virtualenv with torch and
safetensors, outside the repository; `cargo test` only reads the file it writes).

A tiny network with every layer kind fmnist has, built twice: here in PyTorch, and in
tests/oracle.rs from the same layer list. This script draws the initial weights and a batch,
then records what PyTorch computes:
  - the logits and the loss (softmax cross-entropy with label smoothing 0.1);
  - the gradient of every parameter;
  - the weights after 3 Adam steps on that batch (lr 0.01, betas 0.9/0.999, eps 1e-3);
  - the batch-norm running statistics after those steps.
Everything is stored under fmnist's parameter names and layouts (dense weights [IN, OUT]).

Conventions pinned by this oracle: batch-norm's momentum (ours 0.9 is PyTorch's 0.1) and its
normalisation with the biased variance; Adam's eps added to sqrt(v_hat); inverted dropout
(rate 0 here: a random mask cannot be shared, tests/gradcheck.rs checks the mask's
arithmetic); label smoothing t = s/K + (1 - s)[k = y]; asymmetric zero padding (a 4x4 kernel
padded 1 before and 2 after); max-, average- and global average pooling; residual adds.

One convention differs on purpose: PyTorch updates the running variance with the unbiased
batch variance (x M/(M-1)), Keras and fmnist with the biased one. The script records the
biased batch variance that PyTorch's own batch-norm normalised with (a forward hook) and
applies Keras's update to it, so the file holds the running variance fmnist must reach.

Usage: python3 tests/oracle/make_oracle.py tests/oracle/oracle.safetensors
"""
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

torch.manual_seed(1234)
torch.set_default_dtype(torch.float64)  # the oracle in f64; fmnist's f32 is compared with a tolerance


class Residual(nn.Module):
    def __init__(self, body, proj):
        super().__init__()
        self.body, self.proj = body, proj

    def forward(self, x):
        return self.body(x) + self.proj(x)


class Pad(nn.Module):
    def __init__(self, pads):
        super().__init__()
        self.pads = pads

    def forward(self, x):
        return F.pad(x, self.pads)


class GlobalAvgPool(nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3))


M = 0.9  # fmnist's (Keras's) batch-norm momentum; PyTorch's is 1 - M
M_PROJ = 0.99  # a projection's batch-norm takes Keras's default momentum
EPS = 1e-3
# (fmnist name prefix, module); the same list as tests/oracle.rs's `layers()`.
conv4 = nn.Conv2d(1, 3, 4)  # 'same' 4x4 on 8x8: pad 1 before, 2 after
res1 = Residual(nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3, eps=EPS, momentum=1 - M),
                              nn.ReLU(), nn.Conv2d(3, 3, 3, padding=1)), nn.Identity())
# 'same' 3x3 stride 2 on 4x4: pad 0 before, 1 after (the body only; the 1x1 projection sees the
# unpadded input).
res2 = Residual(nn.Sequential(Pad((0, 1, 0, 1)), nn.Conv2d(3, 4, 3, stride=2)),
                nn.Sequential(nn.Conv2d(3, 4, 1, stride=2), nn.BatchNorm2d(4, eps=EPS, momentum=1 - M_PROJ)))
net = nn.Sequential(
    nn.BatchNorm2d(1, eps=EPS, momentum=1 - M),  # 0
    nn.Sequential(Pad((1, 2, 1, 2)), conv4),  # 1 conv2d 3@4x4 same
    nn.ReLU(),  # 2
    nn.MaxPool2d(2, 2),  # 3: 8x8 -> 4x4
    res1,  # 4
    nn.ReLU(),  # 5
    res2,  # 6 residual with projection: 4x4 -> 2x2
    nn.AvgPool2d(2, 1),  # 7: 2x2 -> 1x1 ... then global average pooling of a 1x1 plane
    GlobalAvgPool(),  # 8
    nn.Dropout(0.0),  # 9
    nn.Linear(4, 6),  # 10
    nn.ReLU(),  # 11
    nn.BatchNorm1d(6, eps=EPS, momentum=1 - M),  # 12
    nn.Linear(6, 3),  # 13
)


def bn(prefix, m):
    return [(f"{prefix}.gamma", m.weight, False), (f"{prefix}.beta", m.bias, False)]


def wb(prefix, m, transpose=False):
    return [(f"{prefix}.weight", m.weight, transpose), (f"{prefix}.bias", m.bias, False)]


# fmnist's parameter names, in fmnist's creation order, with the PyTorch tensor behind each.
PARAMS = (bn("0.batch_norm", net[0]) + wb("1.conv2d", conv4)
          + wb("4.residual.0.conv2d", res1.body[0]) + bn("4.residual.1.batch_norm", res1.body[1])
          + wb("4.residual.3.conv2d", res1.body[3])
          + wb("6.residual.0.conv2d", res2.body[1]) + wb("6.residual.proj.conv2d", res2.proj[0])
          + bn("6.residual.proj.batch_norm", res2.proj[1])
          + wb("10.dense", net[10], transpose=True) + bn("12.batch_norm", net[12]) + wb("13.dense", net[13], transpose=True))
BNS = {"0.batch_norm": net[0], "4.residual.1.batch_norm": res1.body[1],
       "6.residual.proj.batch_norm": res2.proj[1], "12.batch_norm": net[12]}


def ours(t, transpose):
    return (t.detach().T if transpose else t.detach()).contiguous().float()


# Start from f32-representable weights and inputs, so both sides start equal.
with torch.no_grad():
    for _, p, _ in PARAMS:
        p.uniform_(-0.6, 0.6)
        p.copy_(p.float().double())
x = torch.rand(4, 1, 8, 8).float().double()
labels = torch.tensor([0, 2, 1, 2])

# Keras's running variance: the biased variance each batch-norm normalised with.
keras_var = {name: torch.ones(m.num_features) for name, m in BNS.items()}


def hook(name):
    def f(module, inputs, _out):
        xin = inputs[0]
        dims = (0, 2, 3) if xin.dim() == 4 else (0,)
        m = M_PROJ if "proj" in name else M
        keras_var[name] = m * keras_var[name] + (1 - m) * xin.var(dim=dims, unbiased=False).detach()
    return f


for name, m in BNS.items():
    m.register_forward_hook(hook(name))

out = {"x": x.float(), "labels": labels.float()}
for name, p, tr in PARAMS:
    out[f"init.{name}"] = ours(p, tr)
net.train()
# eps 1e-3, not Keras's 1e-7: where eps enters the update then shows in every weight, and a
# bias right before a batch-norm (whose gradient is zero but for rounding) is not pushed a
# full step by its rounding noise.
opt = torch.optim.Adam([p for _, p, _ in PARAMS], lr=0.01, betas=(0.9, 0.999), eps=1e-3)
for step in range(1, 4):
    opt.zero_grad()
    logits = net(x)
    loss = F.cross_entropy(logits, labels, label_smoothing=0.1)
    loss.backward()
    if step == 1:
        out["logits"] = logits.detach().float()
        out["loss"] = loss.detach().reshape(1).float()
        for name, p, tr in PARAMS:
            out[f"grad.{name}"] = ours(p.grad, tr)
    opt.step()
for name, p, tr in PARAMS:
    out[f"step3.{name}"] = ours(p, tr)
for name, m in BNS.items():
    out[f"step3.{name}.running_mean"] = m.running_mean.float()
    out[f"step3.{name}.running_var"] = keras_var[name].float()
save_file({k: v.contiguous() for k, v in out.items()}, sys.argv[1] if len(sys.argv) > 1 else "oracle.safetensors",
          metadata={"torch": torch.__version__, "script": "tests/oracle/make_oracle.py"})
print(f"wrote {len(out)} tensors; loss {loss.item():.6f} after 3 steps; torch {torch.__version__}")
