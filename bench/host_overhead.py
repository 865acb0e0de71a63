"""Host cost of one call: the op's eager overhead next to native ATen ops.

    python bench/host_overhead.py [--device cpu|cuda] [--rounds 30] [--calls 200]

A tiny table (1 x (1 + 4*4) x 8 -> 6x6 grid) makes the kernels' own work
negligible, so what is timed is the host's: Python, argument conversion, the
dispatcher, autograd. Every contender is timed in the same run, interleaved
round by round (slow spells of a shared machine hit all of them), and each
keeps its best round. On CUDA a call is timed back to back without syncing:
the host's issue rate, which is what a training step's host pays.

Ratios printed (lower is better):
  forward:  torch.ops.vitpe.interpolate_pos_embed and vitpe_ext.interpolate_pos_embed
            against ATen's upsample_bicubic2d on the same tiny grid;
  fwd+bwd:  torch.autograd.grad through the op against the same through x * 2
            (a native op with a native backward) and through upsample_bicubic2d.
vitpe's autograd is Python (an autograd.Function registered as the op's
Autograd kernel: torch's stable C ABI has no autograd API), so the floor of
any op built that way is printed too: x * 2 inside an autograd.Function.
"""
from __future__ import annotations

import argparse
import time

import torch

import vitpe_ext


class _TwiceFunction(torch.autograd.Function):
    """x * 2 with its backward in Python: what any Python-autograd op pays."""

    @staticmethod
    def forward(ctx, t):
        return t * 2

    @staticmethod
    def backward(ctx, grad):
        return grad * 2


def contenders(device: str):
    table = torch.randn(1, 1 + 4 * 4, 8, device=device)
    image = torch.randn(1, 8, 4, 4, device=device)
    table_grad = table.clone().requires_grad_()
    image_grad = image.clone().requires_grad_()
    out_grad = torch.randn(1, 1 + 6 * 6, 8, device=device)
    same_grad = torch.randn_like(table)
    image_out_grad = torch.randn(1, 8, 6, 6, device=device)
    op = torch.ops.vitpe.interpolate_pos_embed
    upsample = torch.ops.aten.upsample_bicubic2d.default
    grad = torch.autograd.grad
    return {
        "fwd  aten upsample_bicubic2d": lambda: upsample(image, [6, 6], False, None, None),
        "fwd  torch.ops.vitpe.interpolate_pos_embed": lambda: op(table, [6, 6]),
        "fwd  vitpe_ext.interpolate_pos_embed": lambda: vitpe_ext.interpolate_pos_embed(table, (6, 6)),
        "fb   grad(x * 2)": lambda: grad(table_grad * 2, table_grad, same_grad),
        "fb   grad(upsample_bicubic2d)": lambda: grad(upsample(image_grad, [6, 6], False, None, None),
                                                      image_grad, image_out_grad),
        "fb   grad(x * 2 in an autograd.Function)": lambda: grad(_TwiceFunction.apply(table_grad),
                                                                 table_grad, same_grad),
        "fb   grad(torch.ops.vitpe.interpolate_pos_embed)": lambda: grad(op(table_grad, [6, 6]),
                                                                         table_grad, out_grad),
        "fb   grad(vitpe_ext.interpolate_pos_embed)": lambda: grad(
            vitpe_ext.interpolate_pos_embed(table_grad, (6, 6)), table_grad, out_grad),
    }


def measure(device: str, rounds: int, calls: int):
    fns = contenders(device)
    best = {name: float("inf") for name in fns}
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for fn in fns.values():  # warm up: plan cache, CUDA context, autograd graph code paths
        for _ in range(10):
            fn()
    sync()
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            best[name] = min(best[name], (time.perf_counter() - start) / calls * 1e6)
        sync()
    return best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args(argv)
    if args.device == "cpu":
        torch.set_num_threads(1)  # tiny tables run on one thread anyway; no pool noise
    best = measure(args.device, args.rounds, args.calls)
    print(f"host cost per call, {args.device}, torch {torch.__version__} (best of {args.rounds} rounds "
          f"of {args.calls} calls):")
    for name, us in best.items():
        print(f"  {name:52s} {us:8.2f} us")
    aten_fwd = best["fwd  aten upsample_bicubic2d"]
    mul_fb = best["fb   grad(x * 2)"]
    print("ratios:")
    for name in ("fwd  torch.ops.vitpe.interpolate_pos_embed", "fwd  vitpe_ext.interpolate_pos_embed"):
        print(f"  {name.split()[1]:42s} forward / upsample_bicubic2d      {best[name] / aten_fwd:5.2f}x")
    for name in ("fb   grad(torch.ops.vitpe.interpolate_pos_embed)", "fb   grad(vitpe_ext.interpolate_pos_embed)",
                 "fb   grad(x * 2 in an autograd.Function)", "fb   grad(upsample_bicubic2d)"):
        label = name[5:]
        print(f"  {label:42s} fwd+bwd / grad(x * 2)            {best[name] / mul_fb:5.2f}x")
    print(f"  {'grad(torch.ops.vitpe.interpolate_pos_embed)':42s} fwd+bwd / grad(upsample_bicubic2d) "
          f"{best['fb   grad(torch.ops.vitpe.interpolate_pos_embed)'] / best['fb   grad(upsample_bicubic2d)']:5.2f}x")


if __name__ == "__main__":
    main()
