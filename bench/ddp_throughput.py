"""Images/s of a ViT-B/16 fine-tuning step at 384 px under DDP, with vitpe's dynamic table and without.

Two models, the same step (bf16 autocast, AdamW over layer_decay_groups, warmup-cosine):
- static: torchvision's vit_b_16 built at 384 (its table is 1 + 24*24 tokens);
- vitpe:  vit_b_16 built at 224 (1 + 14*14) and made dynamic, so every forward at 384
  resizes the table 14x14 -> 24x24 through the op, and every backward runs the op's
  backward.
The two differ only by the resize (and AdamW on 197 vs 577 table rows), so the difference
of their step times is the op's share of the step; the op's own time (forward + backward
on the table alone) is printed beside it. Random weights, nothing downloaded.

    python -m torch.distributed.run --nproc_per_node 1 bench/ddp_throughput.py   # 1 GPU
    python -m torch.distributed.run --nproc_per_node 2 bench/ddp_throughput.py   # 2 GPUs
    python -m torch.distributed.run --nproc_per_node 2 bench/ddp_throughput.py --tiny   # CPU smoke (gloo)

Batch 32 per GPU by default. The variants alternate over --rounds rounds of --steps timed
steps (after --warmup untimed ones); each row gives the median round and the rounds' range:
a difference inside that range is noise.
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from torchvision.models.vision_transformer import VisionTransformer

import vitpe_ext
from vitpe_ext.torchvision import make_dynamic

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from train_ddp import setup  # noqa: E402  (the example's process group: torchrun's, or a group of one)

VIT_B_16 = dict(patch_size=16, num_layers=12, num_heads=12, hidden_dim=768, mlp_dim=3072)  # vit_b_16's
TINY = dict(patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build(variant, args, device):
    torch.manual_seed(0)
    shape = TINY if args.tiny else VIT_B_16
    native = args.image_size if variant == "static" else args.native_size
    model = VisionTransformer(image_size=native, num_classes=1000, **shape)
    if variant == "vitpe":
        make_dynamic(model)
    model.to(device)
    ddp = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.AdamW(vitpe_ext.layer_decay_groups(model, 1e-4, pos_embed_lr=5e-5))
    schedule = vitpe_ext.warmup_cosine(optimizer, 10, 10_000)
    return ddp, optimizer, schedule


def step(ddp, optimizer, schedule, x, y, amp):
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        loss = F.cross_entropy(ddp(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    schedule.step()


def time_steps(model, args, x, y, device):
    sync(device)
    dist.barrier()  # every rank starts the clock together: DDP steps wait for the slowest
    start = time.perf_counter()
    for _ in range(args.steps):
        step(*model, x, y, args.amp)
    sync(device)
    return (time.perf_counter() - start) / args.steps


def op_alone(args, device, reps=50):
    """Seconds of one resize forward + backward of the table, the op alone."""
    shape = TINY if args.tiny else VIT_B_16
    old, new = args.native_size // shape["patch_size"], args.image_size // shape["patch_size"]
    table = torch.randn(1, 1 + old * old, shape["hidden_dim"], device=device, requires_grad=True)
    grad = torch.randn(1, 1 + new * new, shape["hidden_dim"], device=device)
    times = []
    for i in range(reps + 5):
        sync(device)
        start = time.perf_counter()
        vitpe_ext.interpolate_pos_embed(table, (new, new), profile="torchvision").backward(grad)
        sync(device)
        if i >= 5:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="a tiny ViT on the CPU (gloo): a smoke run")
    p.add_argument("--batch-size", type=int, help="per process (default 32; --tiny 4)")
    p.add_argument("--image-size", type=int, help="training resolution (default 384; --tiny 48)")
    p.add_argument("--native-size", type=int, help="the dynamic model's table resolution (default 224; --tiny 32)")
    p.add_argument("--steps", type=int, help="timed steps per round (default 20; --tiny 2)")
    p.add_argument("--warmup", type=int, help="untimed steps per variant (default 5; --tiny 1)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--no-amp", dest="amp", action="store_false", help="float32 instead of bf16 autocast")
    args = p.parse_args(argv)
    for name, full, tiny in [("batch_size", 32, 4), ("image_size", 384, 48), ("native_size", 224, 32),
                             ("steps", 20, 2), ("warmup", 5, 1)]:
        if getattr(args, name) is None:
            setattr(args, name, tiny if args.tiny else full)

    rank, world, device = setup("cpu" if args.tiny else None)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True  # as fine-tuning runs
    try:
        g = torch.Generator().manual_seed(rank)
        x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, generator=g).to(device)
        y = torch.randint(1000, (args.batch_size,), generator=g).to(device)
        models = {v: build(v, args, device) for v in ("static", "vitpe")}
        for model in models.values():
            for _ in range(args.warmup):
                step(*model, x, y, args.amp)
        rounds = {v: [] for v in models}
        for _ in range(args.rounds):  # alternating, so drift (clocks, heat) hits both alike
            for variant, model in models.items():
                rounds[variant].append(time_steps(model, args, x, y, device))
        per_step = {v: statistics.median(t) for v, t in rounds.items()}
        alone = op_alone(args, device)
        if rank == 0:
            what = "tiny ViT" if args.tiny else "ViT-B/16"
            print(f"{what}, {args.image_size} px, batch {args.batch_size} per process x {world} "
                  f"({device.type}, {'bf16 autocast' if args.amp else 'fp32'}), median of {args.rounds} rounds "
                  f"of {args.steps} steps")
            print(f"{'variant':8} {'step ms':>9} {'images/s':>10}   rounds' step ms (min-max)")
            for variant, seconds in per_step.items():
                lo, hi = min(rounds[variant]), max(rounds[variant])
                print(f"{variant:8} {seconds * 1e3:9.2f} {world * args.batch_size / seconds:10.1f}   "
                      f"{lo * 1e3:.2f}-{hi * 1e3:.2f}")
            diff = per_step["vitpe"] - per_step["static"]
            print(f"op share of the step: {diff * 1e3:+.3f} ms ({diff / per_step['vitpe']:+.2%}) by difference; "
                  f"the op alone (forward + backward, {args.native_size}->{args.image_size} px table): "
                  f"{alone * 1e3:.3f} ms ({alone / per_step['vitpe']:.2%})")
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
