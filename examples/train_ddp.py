"""Fine-tune a torchvision ViT on several processes: examples/finetune.py's workflow under torchrun.

    python -m torch.distributed.run --nproc_per_node 2 examples/train_ddp.py --out-dir runs/ddp
    python -m torch.distributed.run --nproc_per_node 2 examples/train_ddp.py --fsdp --out-dir runs/fsdp
    ... --checkpoint runs/digits/pretrained.pth     (finetune.py's; default: a tiny ViT from scratch)

Every rank trains on its own part of the data (DistributedSampler) at its own resolution,
which changes every step: make_dynamic resizes the position table in each rank's forward
through vitpe's op, and DDP (default) or FSDP2 (--fsdp: fully_shard per block, then the
root) averages the gradients, the table's like any other. Layer-wise learning rates with
the table at an lr of its own, linear warmup then cosine, bf16 autocast (CPU and CUDA).
gloo on the CPU, nccl on GPUs (one per process).

Checkpoints, written once the run is done and never over an existing one without --force:
- DDP: OUT/finetuned.pth from rank 0, finetune.py's format (its --checkpoint takes it),
  through a temporary file and a link;
- FSDP2: OUT/finetuned.dcp, a torch.distributed.checkpoint directory every rank writes its
  shards to (model, optimizer, schedule), under a temporary name that rank 0 renames when
  all are done. load_checkpoint() reads either into a plain model, no process group needed.
Data: scikit-learn's 8x8 digits, upscaled (see finetune.py).
"""
import argparse
import datetime
import errno
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset
from torchvision.models.vision_transformer import VisionTransformer

import vitpe_ext
from vitpe_ext.integrations.provenance import Provenance, ResizeStep, attach_provenance, read_provenance
from vitpe_ext.torchvision import make_dynamic

sys.path.insert(0, str(Path(__file__).resolve().parent))  # finetune.py, also when imported from elsewhere
from finetune import TABLE, TINY, at, digits, infer_config, learning_rate, positive, save  # noqa: E402


def setup(device_arg):
    """(rank, world, device); the process group from torchrun's environment, or a
    group of one when run as a plain script."""
    cuda = device_arg == "cuda" or (device_arg is None and torch.cuda.is_available())
    local = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    init = {} if "RANK" in os.environ else {  # not under torchrun: a group of one
        "init_method": f"file://{tempfile.mkdtemp()}/store", "rank": 0, "world_size": 1}
    if cuda:
        init["device_id"] = device  # this rank's GPU, for NCCL (and barrier(), which warns without it)
    dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(minutes=10), **init)
    return dist.get_rank(), dist.get_world_size(), device


def build(args, parser):
    """The model at --image-size, its table resized from a checkpoint's grid if given,
    made dynamic with the same settings; and the resize record to keep with it."""
    if args.checkpoint is None:  # every rank draws the same weights (one seed)
        cfg, state, earlier = dict(TINY), None, None
    else:
        ckpt = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
        state, earlier = ckpt.get("model", ckpt), read_provenance(ckpt).get(TABLE)
        if TABLE not in state:
            parser.error(f"{args.checkpoint}: no {TABLE}: this example takes torchvision ViT checkpoints")
        cfg = dict(ckpt.get("config") or infer_config(state, args.num_heads, parser))
        cfg.pop("image_size"), cfg.pop("num_classes")
    patch = cfg["patch_size"]
    if args.image_size % patch:
        parser.error(f"--image-size {args.image_size} is not a multiple of the patch size {patch}")
    grid = args.image_size // patch
    model = VisionTransformer(image_size=args.image_size, num_classes=10, **cfg)
    settings = {"mode": args.mode}
    record = None
    if state is not None:
        old = int((state[TABLE].shape[1] - 1) ** 0.5)
        state = dict(state, **{TABLE: vitpe_ext.interpolate_pos_embed(state[TABLE], (grid, grid), **settings)})
        if state["heads.head.weight"].shape[0] != 10:  # a new head for the 10 digits
            state = {k: v for k, v in state.items() if not k.startswith("heads.")}
        missing = model.load_state_dict(state, strict=False).missing_keys
        assert all(k.startswith("heads.") for k in missing), missing
        step = ResizeStep.from_settings((old, old), (grid, grid), 1, **settings)
        record = earlier.then(step) if earlier and earlier.grid == step.old_grid else Provenance((step,))
    make_dynamic(model, profile=None, **settings, provenance=record)  # other sizes: the same resize
    return model, {**cfg, "image_size": args.image_size, "num_classes": 10}, record


def shard_model(model):
    """FSDP2: each encoder block a unit, the root (embeddings, table, head) the last."""
    from torch.distributed.fsdp import fully_shard
    for block in model.encoder.layers:
        fully_shard(block)
    fully_shard(model)
    return model


def train(args, model, forward, optimizer, schedule, loader, sampler, sizes, rank, world, device):
    """args.steps steps; rank r at step t runs sizes[(t + r) % len(sizes)] px, so the ranks
    differ within a step and each changes from step to step. Returns the mean loss over
    the ranks, per step."""
    model.train()
    losses, epoch, batches = [], 0, iter(())  # this rank's, as tensors: no sync per step
    for t in range(args.steps):
        batch = next(batches, None)
        if batch is None:  # a new epoch: every rank a new part of a new permutation
            sampler.set_epoch(epoch)
            epoch, batches = epoch + 1, iter(loader)
            batch = next(batches)
        x, y = batch[0].to(device), batch[1].to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp):
            loss = F.cross_entropy(forward(at(x, sizes[(t + rank) % len(sizes)])), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()  # after optimizer.step(): the next step's lr, every group alike
        losses.append(loss.detach().float())
        if rank == 0 and (t + 1) % args.log_every == 0:
            print(f"step {t + 1}/{args.steps}: rank 0 loss {losses[-1].item():.3f}, "
                  f"head lr {max(g['lr'] for g in optimizer.param_groups):.2e}", flush=True)
    mean = torch.stack(losses)
    dist.all_reduce(mean)  # a sum: gloo has no AVG
    return (mean / world).tolist()


@torch.no_grad()
def accuracy(forward, data, size, rank, world, device, amp, batch=128):
    """Over all ranks: each takes every world-th image. Every rank runs as many batches
    (FSDP2 gathers parameters in each forward, all ranks together); the slots past the
    end repeat images and are not counted."""
    x, y = data
    n = len(y)
    slots = torch.arange(rank, -(-n // world) * world, world)
    right = torch.zeros(2, device=device)  # (correct, counted)
    forward.eval()
    for part, ok in zip((slots % n).split(batch), (slots < n).split(batch)):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            pred = forward(at(x[part].to(device), size)).argmax(1)
        ok = ok.to(device)
        right += torch.stack([((pred == y[part].to(device)) & ok).sum(), ok.sum()]).float()
    forward.train()
    dist.all_reduce(right)
    return (right[0] / right[1]).item()


def publish_dcp(tmp, final, force):
    """Rank 0, after every rank wrote its shards: the directory under its name. Without
    --force an existing one is refused, even an empty one (which a rename would replace);
    --force moves it aside first, and back if the new one cannot take its place."""
    aside = None
    if os.path.lexists(final):
        if not force:
            raise FileExistsError(errno.EEXIST, "exists; pass --force to overwrite it", str(final))
        aside = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.rename(final, aside)
    try:
        os.rename(tmp, final)
    except BaseException:
        if aside is not None:
            os.rename(aside, final)
        raise
    if aside is not None:
        shutil.rmtree(aside)


def load_checkpoint(path):
    """(model, saved dict) from either checkpoint, on the CPU, without a process group:
    the model is a plain torchvision ViT (not made dynamic)."""
    path = Path(path)
    if path.is_dir():  # FSDP2's DCP directory: shards of every rank, plus meta.pt
        import torch.distributed.checkpoint as dcp
        saved = torch.load(path / "meta.pt", weights_only=True)
        model = VisionTransformer(**saved["config"])
        state = {"model": model.state_dict()}
        dcp.load(state, checkpoint_id=path, no_dist=True)  # this process reads every rank's shards
        saved["model"] = attach_provenance(state["model"], {
            k: Provenance.from_dict(v) for k, v in saved.get("provenance", {}).items()})
    else:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        model = VisionTransformer(**saved["config"])
    model.load_state_dict(saved["model"])
    return model, saved


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fsdp", action="store_true", help="FSDP2 (fully_shard) instead of DDP")
    p.add_argument("--checkpoint", type=Path, help="a torchvision ViT: {'model', 'config'} or a bare state dict")
    p.add_argument("--num-heads", type=positive, help="for a bare state dict (the weights do not say)")
    p.add_argument("--out-dir", type=Path, default=Path("train-ddp-out"))
    p.add_argument("--image-size", type=positive, default=48, help="the middle resolution (default 48)")
    p.add_argument("--mode", default="bicubic", choices=vitpe_ext.MODES, help="how the table is resized")
    p.add_argument("--steps", type=positive, default=200)
    p.add_argument("--batch-size", type=positive, default=32, help="per rank (default 32)")
    p.add_argument("--lr", type=learning_rate, default=1e-3, help="base lr: the head's (default 1e-3)")
    p.add_argument("--pos-embed-lr", type=learning_rate, help="the table's lr (default lr / 2)")
    p.add_argument("--no-amp", dest="amp", action="store_false", help="float32 instead of bf16 autocast")
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    p.add_argument("--log-every", type=positive, default=10)
    p.add_argument("--force", action="store_true", help="overwrite an existing checkpoint")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    final = args.out_dir / ("finetuned.dcp" if args.fsdp else "finetuned.pth")
    if final.exists() and not args.force:  # before any training; every rank sees the same file
        p.error(f"{final} exists; pass --force to overwrite it")

    rank, world, device = setup(args.device)
    try:
        torch.manual_seed(args.seed)  # the same initial weights on every rank (FSDP2 shards its own copy)
        model, config, record = build(args, p)
        model.to(device)
        if args.fsdp:
            forward = evaluate = shard_model(model)
        else:
            from torch.nn.parallel import DistributedDataParallel as DDP
            forward = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
            evaluate = model  # DDP's wrapper is for training; the replicas agree
        pos_lr = args.pos_embed_lr if args.pos_embed_lr is not None else args.lr / 2
        # after fully_shard: the optimizer must hold the sharded parameters
        groups = vitpe_ext.layer_decay_groups(model, args.lr, layer_decay=0.75, pos_embed_lr=pos_lr)
        optimizer = torch.optim.AdamW(groups)
        schedule = vitpe_ext.warmup_cosine(optimizer, max(1, args.steps // 10), args.steps, min_lr_ratio=0.01)

        data = digits(args.seed)
        sampler = DistributedSampler(TensorDataset(*data["train"]), world, rank, shuffle=True, seed=args.seed,
                                     drop_last=True)
        loader = DataLoader(sampler.dataset, batch_size=args.batch_size, sampler=sampler, drop_last=True)
        patch = config["patch_size"]
        sizes = sorted({max(patch, args.image_size - patch), args.image_size, args.image_size + patch})
        losses = train(args, model, forward, optimizer, schedule, loader, sampler, sizes, rank, world, device)
        q = max(1, len(losses) // 4)
        acc = {str(s): accuracy(evaluate, data["test"], s, rank, world, device, args.amp) for s in sizes}
        if rank == 0:
            ranks = f"{world} rank{'s' if world > 1 else ''}"
            print(f"fine-tuned {args.steps} steps on {ranks} at {sizes} px ({'FSDP2' if args.fsdp else 'DDP'}): "
                  f"loss {sum(losses[:q]) / q:.3f} (first quarter) -> {sum(losses[-q:]) / q:.3f} (last quarter); "
                  "test accuracy " + ", ".join(f"{s} px {a:.1%}" for s, a in acc.items()), flush=True)
        meta = {"config": config, "losses": losses, "test_accuracy": acc, "world_size": world}
        if args.fsdp:
            save_dcp(model, optimizer, schedule, meta, record, final, args.force, rank)
        else:
            save_rank0(model, meta, record, final, args.force, rank)
        if rank == 0:
            print(f"wrote {final}", flush=True)
    finally:
        dist.destroy_process_group()


def on_rank0(work, rank, what):
    """work() on rank 0; every rank returns once it is done, and raises if it failed
    (rather than one rank raising and the others waiting for it until the timeout)."""
    ok = [None]
    if rank == 0:
        try:
            work()
            ok = [True]
        finally:
            dist.broadcast_object_list(ok if ok[0] else [False], 0)
    else:
        dist.broadcast_object_list(ok, 0)
        if not ok[0]:
            raise RuntimeError(f"rank 0 could not {what}")


def save_rank0(model, meta, record, path, force, rank):
    """finetune.save on rank 0: a temporary file, then a link (or --force's replace)."""
    def work():
        state = model.state_dict()
        save({**meta, "model": attach_provenance(state, {TABLE: record}) if record else state}, path, force)
    on_rank0(work, rank, f"write {path}")


def save_dcp(model, optimizer, schedule, meta, record, path, force, rank):
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict
    path.parent.mkdir(parents=True, exist_ok=True)
    name = [f".{path.name}.tmp-{os.getpid()}" if rank == 0 else None]
    dist.broadcast_object_list(name, 0)  # one temporary directory for all ranks
    tmp = path.parent / name[0]
    state = {"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, optimizer),
             "schedule": schedule.state_dict()}
    dcp.save(state, checkpoint_id=tmp)  # returns on every rank once all shards and the metadata are written

    def work():
        try:
            provenance = {TABLE: record.to_dict()} if record else {}
            torch.save({**meta, "provenance": provenance}, tmp / "meta.pt")
            publish_dcp(tmp, path, force)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
    on_rank0(work, rank, f"publish {path}")


if __name__ == "__main__":
    main()
