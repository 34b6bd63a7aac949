"""Training speed: a BinaryConnect MLP step against the same MLP built from nn.Linear.

Times optimizer steps (forward, square hinge loss, backward, Adam, and for
BinaryConnect the clipping) on Fashion-MNIST-shaped batches of 100, after a
warm-up, and prints the overhead of binarization and of the A-bit activations.

    .venv/bin/python bench/train_speed.py --spec 784-1024-1024-1024-10 --steps 100
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from bchw.nn import BinaryMLP, parse_spec, square_hinge_loss


def plain_mlp(spec: str) -> nn.Module:
    """The same network with nn.Linear weights and ReLU: the float reference."""
    sizes = parse_spec(spec)
    layers: list[nn.Module] = []
    for k, (i, o) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers += [nn.Linear(i, o, bias=False), nn.BatchNorm1d(o, eps=1e-4, momentum=0.15)]
        if k < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def ms_per_step(model: nn.Module, steps: int, clip: bool, batch: int = 100) -> float:
    torch.manual_seed(0)
    n_in = next(p for p in model.parameters() if p.dim() == 2).shape[1]
    x = torch.randint(0, 256, (steps + 10, batch, n_in)).float()
    y = torch.randint(0, 10, (steps + 10, batch))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for k in range(steps + 10):
        if k == 10:
            started = time.perf_counter()
        loss = square_hinge_loss(model(x[k] if clip else x[k] / 255), y[k])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if clip:
            model.clip_()
    return 1000 * (time.perf_counter() - started) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="784-1024-1024-1024-10")
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    rows = [("nn.Linear + ReLU (float reference)", ms_per_step(plain_mlp(args.spec), args.steps,
                                                               clip=False)),
            ("BinaryConnect det., float activations",
             ms_per_step(BinaryMLP(args.spec, float_act=True), args.steps, clip=True)),
            ("BinaryConnect det., A = 8 activations",
             ms_per_step(BinaryMLP(args.spec), args.steps, clip=True)),
            ("BinaryConnect stoch., A = 8 activations",
             ms_per_step(BinaryMLP(args.spec, binarize="stoch"), args.steps, clip=True))]
    base = rows[0][1]
    print(f"{args.spec}, batch 100, {args.steps} steps, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    for name, ms in rows:
        print(f"  {name:<42} {ms:7.2f} ms/step  {100 * (ms / base - 1):+6.1f}%")


if __name__ == "__main__":
    main()
