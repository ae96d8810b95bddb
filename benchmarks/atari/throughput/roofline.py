"""How fast one CPU thread can train the Nature CNN at all: the bound under any library's
Breakout update that uses torch's kernels (rl-trust's and stable-baselines3's alike).

    python benchmarks/atari/throughput/roofline.py

Prints one thread's float32 matrix-multiply rate (a practical peak), the Nature CNN's
forward + backward rate on a minibatch of 256 84×84×4 frames (contiguous and channels-last,
float32, and bfloat16 autocast), and from them the least update time per env step at the
Breakout preset (4 epochs over each sample: 4 × 3 forward passes' FLOPs per env step).
Run it on a quiet machine.
"""

from __future__ import annotations

import time

import torch
from torch import nn

# multiply-accumulates of one forward pass: conv 8×8/4 → 20×20×32, 4×4/2 → 9×9×64,
# 3×3/1 → 7×7×64, linear 3136 → 512, heads 512 → 5 (Breakout's 4 actions and the value)
MACS = 20 * 20 * 32 * 8 * 8 * 4 + 9 * 9 * 64 * 4 * 4 * 32 + 7 * 7 * 64 * 3 * 3 * 64
MACS += 3136 * 512 + 512 * 5
FORWARD_FLOP = 2 * MACS
EPOCHS = 4  # the Breakout preset's n_epochs


def seconds(f, n: int = 5) -> float:
    f()  # warm-up
    start = time.perf_counter()
    for _ in range(n):
        f()
    return (time.perf_counter() - start) / n


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    peak = 2 * 1024**3 / seconds(lambda: a @ b, 10) / 1e9
    print(f"matmul 1024³ float32, 1 thread: {peak:.1f} GFLOP/s")
    net = nn.Sequential(
        nn.Conv2d(4, 32, 8, 4), nn.ReLU(), nn.Conv2d(32, 64, 4, 2), nn.ReLU(),
        nn.Conv2d(64, 64, 3, 1), nn.ReLU(), nn.Flatten(), nn.Linear(3136, 512), nn.ReLU(),
        nn.Linear(512, 5),
    )  # fmt: skip
    x = torch.rand(256, 4, 84, 84)

    def train_step(net: nn.Module, x: torch.Tensor) -> None:
        net.zero_grad()
        net(x).sum().backward()

    print(f"Nature CNN, {FORWARD_FLOP / 1e6:.1f} MFLOP per frame forward; minibatch 256:")
    rates = {}
    cases = [("float32", torch.contiguous_format, False)]
    cases += [("float32 channels-last", torch.channels_last, False)]
    cases += [("bfloat16 autocast channels-last", torch.channels_last, True)]
    for name, fmt, bf16 in cases:
        net_f, x_f = net.to(memory_format=fmt), x.contiguous(memory_format=fmt)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            t = seconds(lambda n=net_f, xx=x_f: train_step(n, xx))
        rates[name] = 3 * FORWARD_FLOP * 256 / t / 1e9
        print(f"  {name}: forward + backward {t * 1e3:.0f} ms, {rates[name]:.1f} GFLOP/s")
    per_step = EPOCHS * 3 * FORWARD_FLOP  # FLOP of update per env step
    print(f"update FLOP per env step at {EPOCHS} epochs: {per_step / 1e6:.0f} M")
    for name in ("float32 channels-last", "bfloat16 autocast channels-last"):
        print(f"  least update time per env step, {name}: {per_step / rates[name] / 1e6:.2f} ms")
    print(f"  at the matmul rate: {per_step / peak / 1e6:.2f} ms")


if __name__ == "__main__":
    main()
