"""The rank side of tests/test_distributed.py (issue #15): dynamic-resolution ViTs under
DDP and FSDP2, and the single-process run they are held to.

Spawned processes import their target by module name, so the code they run lives
here, in a plain module next to the tests rather than in the test file (pytest puts
tests/ on sys.path; spawn hands the parent's sys.path to its children).

One spawn per backend runs every scenario on one process group (gloo on the CPU,
nccl on CUDA): a tiny torchvision ViT made dynamic with make_dynamic and a tiny timm
ViT with dynamic_img_size under vitpe_ext.timm.patch(), each trained for len(SIZES)
steps with DDP and with FSDP2 (fully_shard per block, then the root), with
layer_decay_groups + warmup_cosine in AdamW. Each rank runs its own resolution
(SIZES), writes what it saw (losses, gradients, parameters, learning rates, eval
logits, op calls, a DCP round trip) to one file, and the test compares those
files with `reference()`, run in the test process without any process group. The
torchvision ViT also trains under replicate (FSDP2's machinery, unsharded), for
make_dynamic's cache.
"""
from __future__ import annotations

import datetime
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import vitpe_ext

WORLD = 2
PATCH, NATIVE, CLASSES, BATCH = 8, 32, 10, 4
KINDS = ("torchvision", "timm")
# (H, W) per step, one per rank. The ranks differ in every step but the last; rank 0
# starts at the native size, where make_dynamic adds the table itself; two sizes are
# not square. Three steps take AdamW past its first, sign-like step.
SIZES = [((32, 32), (48, 48)), ((40, 56), (24, 32)), ((48, 48), (48, 48))]
PROBE_SIZE = (56, 40)  # evaluated after every step (no_grad: make_dynamic's cache path)
EXTRA_SIZES = ((40, 40), (32, 48))  # the step after a checkpoint round trip
TABLE = {"torchvision": "encoder.pos_embedding", "timm": "pos_embed"}
# A ViT-B/16 table resized 14x14 -> 24x24: big enough for the op's CPU kernel to split
# rows over threads where more than one is available (the test process).
THREAD_CHECK = ((1, 1 + 14 * 14, 768), (24, 24))


# -- what every process builds identically ----------------------------------------------

def build(kind: str, seed: int = 0) -> torch.nn.Module:
    """A tiny ViT (patch 8, native 32x32 px: a 4x4 grid) that takes any multiple of 8."""
    torch.manual_seed(seed)
    if kind == "torchvision":
        from torchvision.models.vision_transformer import VisionTransformer
        from vitpe_ext.torchvision import make_dynamic
        model = VisionTransformer(image_size=NATIVE, patch_size=PATCH, num_layers=2, num_heads=2,
                                  hidden_dim=32, mlp_dim=64, num_classes=CLASSES)
        # torchvision zero-initialises the head, which would leave every other gradient of
        # the first step zero and the first comparison empty.
        torch.nn.init.normal_(model.heads.head.weight, std=0.2)
        return make_dynamic(model)
    from timm.models.vision_transformer import VisionTransformer
    # dynamic_img_size: timm resizes the table every forward, through vitpe under
    # vitpe_ext.timm.patch(), which the caller holds (the workers: for good)
    return VisionTransformer(img_size=NATIVE, patch_size=PATCH, embed_dim=32, depth=2, num_heads=2,
                             mlp_ratio=2.0, num_classes=CLASSES, dynamic_img_size=True)


def shard(step: int, rank: int, size, device) -> tuple:
    """Rank `rank`'s batch of step `step`: the same tensors in every process that asks."""
    g = torch.Generator().manual_seed(1000 * step + rank)
    x = torch.randn(BATCH, 3, *size, generator=g)
    y = torch.randint(CLASSES, (BATCH,), generator=g)
    return x.to(device), y.to(device)


def probe(device) -> torch.Tensor:
    return torch.randn(2, 3, *PROBE_SIZE, generator=torch.Generator().manual_seed(7)).to(device)


def optimizer_for(model):
    """Layer-wise lrs with the table at an lr of its own, warmup then cosine: every group's
    lr changes at every step, so a step taken with the wrong lr shows."""
    groups = vitpe_ext.layer_decay_groups(model, 1e-2, layer_decay=0.75, weight_decay=0.05, pos_embed_lr=5e-3)
    optimizer = torch.optim.AdamW(groups)
    return optimizer, vitpe_ext.warmup_cosine(optimizer, warmup_steps=2, total_steps=len(SIZES) + 1)


def full(t: torch.Tensor) -> torch.Tensor:
    """A detached CPU copy of the whole tensor (a DTensor is gathered: a collective)."""
    t = t.detach()
    if hasattr(t, "full_tensor"):
        t = t.full_tensor()
    return t.cpu().clone()


def snapshot(model, what: str) -> dict:
    """Every parameter ("param") or gradient ("grad"), whole, by name."""
    return {n: full(p if what == "param" else p.grad) for n, p in model.named_parameters()}


@torch.no_grad()
def evaluate(model, x) -> torch.Tensor:
    """Two no_grad forwards at one size: the second may come from make_dynamic's cache."""
    model.eval()
    out, again = model(x), model(x)
    model.train()
    assert torch.equal(out, again)
    return out.cpu()


def thread_check():
    """The op's CPU forward and backward on the THREAD_CHECK table (any thread count
    must give these bits: rows are written whole by one thread)."""
    shape, new = THREAD_CHECK
    g = torch.Generator().manual_seed(3)
    table = torch.randn(*shape, generator=g).requires_grad_()
    out = vitpe_ext.interpolate_pos_embed(table, new)
    out.backward(torch.randn(out.shape, generator=g))
    return {"threads": torch.get_num_threads(), "out": out.detach(), "grad": table.grad}


# -- the single-process run ---------------------------------------------------------------

def reference(kind: str, device) -> dict:
    """The run the ranks must reproduce, in one process: each step's loss is the mean of
    the WORLD shards' losses (the gradient DDP and FSDP2 average), every shard at its own
    resolution. Shards of one size could be concatenated; with LayerNorm (no batch
    statistics) that is the same loss, and separate forwards give each shard the GEMM
    shapes it has on its rank. Also keeps each shard's own table gradient: what a rank
    would hold if nothing were reduced."""
    from vitpe_ext.integrations.timm import patch
    with patch():
        return _reference(kind, device)


def _reference(kind, device):
    model = build(kind).to(device)
    optimizer, schedule = optimizer_for(model)
    table = dict(model.named_parameters())[TABLE[kind]]
    steps = []
    for step, sizes in enumerate(SIZES):
        optimizer.zero_grad(set_to_none=True)
        losses, local = [], []
        for rank, size in enumerate(sizes):
            x, y = shard(step, rank, size, device)
            loss = F.cross_entropy(model(x), y)
            before = torch.zeros_like(table) if table.grad is None else table.grad.clone()
            (loss / WORLD).backward()  # accumulates: the sum of the shards' means / WORLD
            local.append(((table.grad - before) * WORLD).cpu())
            losses.append(loss.item())
        record = {"losses": losses, "grads": snapshot(model, "grad"), "local_table_grads": local}
        optimizer.step()
        schedule.step()
        record.update(params=snapshot(model, "param"), lrs=[g["lr"] for g in optimizer.param_groups],
                      probe=evaluate(model, probe(device)))
        steps.append(record)
    return {"steps": steps}


# -- the ranks ----------------------------------------------------------------------------

class OpCalls:
    """Records the op's calls: the grid, and whether autograd was recording (a training
    forward) or not (an evaluation)."""

    def __init__(self):
        import vitpe_ext.integrations.dynamic as dynamic
        import vitpe_ext.integrations.timm as vtimm
        self.calls = []
        for module in (dynamic, vtimm):  # where make_dynamic and timm's patch call the op
            real = module.interpolate_pos_embed

            def counted(*args, _real=real, **kwargs):
                self.calls.append((tuple(args[1]), torch.is_grad_enabled()))
                return _real(*args, **kwargs)
            module.interpolate_pos_embed = counted

    def take(self, grad: bool) -> list:
        """The grids of the calls made with autograd on (grad) or off, since the last take."""
        mine = [grid for grid, on in self.calls if on == grad]
        self.calls = [c for c in self.calls if c[1] != grad]
        return mine


def train(model, forward, optimizer, schedule, rank, device, steps, sizes_of, ops) -> list:
    """This rank's share of the run: its shard, its resolution; gradients and parameters
    whole (gathered under FSDP2), and the table's gradient as this rank holds it.
    model: the bare model (its parameter names); forward: what to call (the DDP wrapper)."""
    table_name = next(n for n in TABLE.values() if n in dict(model.named_parameters()))
    records = []
    for step in steps:
        size = sizes_of(step)[rank]
        x, y = shard(step, rank, size, device)
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(forward(x), y)
        loss.backward()
        grad = dict(model.named_parameters())[table_name].grad
        local = grad.to_local() if hasattr(grad, "to_local") else grad
        record = {"size": size, "loss": loss.item(), "grads": snapshot(model, "grad"),
                  "local_table_grad": local.detach().cpu().clone(), "op_calls": ops.take(grad=True)}
        optimizer.step()
        schedule.step()
        record.update(params=snapshot(model, "param"), lrs=[g["lr"] for g in optimizer.param_groups],
                      probe=evaluate(forward, probe(device)), eval_op_calls=ops.take(grad=False))
        records.append(record)
    return records


def run_ddp(kind, rank, device, ops) -> dict:
    from torch.nn.parallel import DistributedDataParallel as DDP
    model = build(kind).to(device)
    ddp = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer, schedule = optimizer_for(model)  # the groups see the bare model's names
    return {"steps": train(model, ddp, optimizer, schedule, rank, device, range(len(SIZES)), SIZES.__getitem__,
                           ops)}


def fsdp2(kind, device, mesh, seed=0):
    """fully_shard per block, then the root. The torchvision model keeps FSDP2's dim-0
    default, which puts a (1, N, C) table wholly on rank 0 and leaves rank 1 an empty
    shard; the timm model's tables are split over channels (Shard(2): FSDP2 takes uneven
    shards on dim 0 only, and 1 + 4*4 tokens do not split evenly)."""
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import Shard
    model = build(kind, seed).to(device)
    blocks = model.encoder.layers if kind == "torchvision" else model.blocks
    for block in blocks:
        fully_shard(block, mesh=mesh)
    if kind == "timm":
        fully_shard(model, mesh=mesh, shard_placement_fn=lambda p: Shard(2) if p.dim() == 3 else None)
    else:
        fully_shard(model, mesh=mesh)
    return model


def run_replicate(kind, rank, device, mesh, ops):
    """replicate() from torch.distributed._composable.replicate_with_fsdp: FSDP2's
    machinery (the gathered table refilled in place, its version kept) without sharding,
    and no module marked FSDP-managed. None where this torch has no such replicate."""
    try:
        from torch.distributed._composable.replicate_with_fsdp import replicate
    except ImportError:
        return None
    model = build(kind).to(device)
    replicate(model, mesh=mesh)
    optimizer, schedule = optimizer_for(model)
    return {"steps": train(model, model, optimizer, schedule, rank, device, range(len(SIZES)), SIZES.__getitem__,
                           ops)}


def flat_optimizer_state(model, optimizer) -> dict:
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict
    osd = get_optimizer_state_dict(model, optimizer)
    flat = {f"{fqn}.{k}": full(v) if torch.is_tensor(v) else v
            for fqn, state in sorted(osd["state"].items()) for k, v in sorted(state.items())}
    flat["param_groups"] = [{k: v for k, v in g.items()} for g in osd["param_groups"]]
    return flat


def run_fsdp(kind, rank, device, mesh, ops, ckpt_dir: Path) -> dict:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (get_model_state_dict, get_optimizer_state_dict,
                                                         set_model_state_dict, set_optimizer_state_dict)
    model = fsdp2(kind, device, mesh)
    optimizer, schedule = optimizer_for(model)  # after fully_shard: the groups hold the DTensors
    table = dict(model.named_parameters())[TABLE[kind]]
    out = {"steps": train(model, model, optimizer, schedule, rank, device, range(len(SIZES)),
                          SIZES.__getitem__, ops),
           "table_placement": [str(p) for p in table.placements],
           "table_local_shape": tuple(table.to_local().shape)}

    # Distributed checkpoint of the sharded model, loaded into another sharded model
    # (other initial weights, a fresh optimizer and schedule).
    state = {"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, optimizer),
             "schedule": schedule.state_dict()}
    dcp.save(state, checkpoint_id=ckpt_dir / kind)
    fresh = fsdp2(kind, device, mesh, seed=1)
    fresh_optimizer, fresh_schedule = optimizer_for(fresh)
    target = {"model": get_model_state_dict(fresh), "optim": get_optimizer_state_dict(fresh, fresh_optimizer),
              "schedule": fresh_schedule.state_dict()}
    dcp.load(target, checkpoint_id=ckpt_dir / kind)
    set_model_state_dict(fresh, target["model"])
    set_optimizer_state_dict(fresh, fresh_optimizer, target["optim"])
    fresh_schedule.load_state_dict(target["schedule"])
    fresh_table = dict(fresh.named_parameters())[TABLE[kind]]
    dc = {"saved": snapshot(model, "param"), "loaded": snapshot(fresh, "param"),
          "saved_local_table": table.to_local().detach().cpu().clone(),
          "loaded_local_table": fresh_table.to_local().detach().cpu().clone(),
          "saved_optim": flat_optimizer_state(model, optimizer),
          "loaded_optim": flat_optimizer_state(fresh, fresh_optimizer)}
    # One more step on each, same data: training goes on as if nothing had happened.
    step = len(SIZES)
    for name, (m, o, s) in {"saved": (model, optimizer, schedule),
                            "loaded": (fresh, fresh_optimizer, fresh_schedule)}.items():
        dc[f"next_{name}"] = train(m, m, o, s, rank, device, [step], lambda _: EXTRA_SIZES, ops)[0]
    out["dcp"] = dc
    return out


def worker(rank: int, backend: str, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist
    torch.set_num_threads(1)  # two ranks on a shared CPU: one thread each, no oversubscription
    if backend == "nccl":
        torch.cuda.set_device(rank)
        device = torch.device("cuda", rank)
        # fp32 convolutions and matmuls in both runs, so "equal within fp32 rounding" holds
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    else:
        device = torch.device("cpu")
    dist.init_process_group(backend, init_method=f"file://{init_file}", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=120),
                            device_id=device if device.type == "cuda" else None)
    try:
        from torch.distributed.device_mesh import init_device_mesh
        from vitpe_ext.integrations.timm import patch
        mesh = init_device_mesh(device.type, (WORLD,))
        patch()  # this process's timm ViTs resize through vitpe (the patch ends with it)
        ops, results, timings = OpCalls(), {"thread_check": thread_check()}, {}
        for kind in KINDS:
            start = time.perf_counter()
            results[f"ddp-{kind}"] = run_ddp(kind, rank, device, ops)
            timings[f"ddp-{kind}"] = time.perf_counter() - start
            start = time.perf_counter()
            results[f"fsdp-{kind}"] = run_fsdp(kind, rank, device, mesh, ops, Path(out_dir) / "dcp")
            timings[f"fsdp-{kind}"] = time.perf_counter() - start
        start = time.perf_counter()
        results["replicate-torchvision"] = run_replicate("torchvision", rank, device, mesh, ops)
        timings["replicate-torchvision"] = time.perf_counter() - start
        results["timings"] = timings
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def launch(backend: str, out_dir: Path, timeout: float = 300.0) -> list:
    """Runs `worker` on WORLD spawned processes; returns each rank's results."""
    import torch.multiprocessing as mp
    out_dir.mkdir(parents=True, exist_ok=True)
    # A file store rather than a TCP port: nothing to collide with parallel runs.
    context = mp.start_processes(worker, args=(backend, str(out_dir / "store"), str(out_dir)), nprocs=WORLD,
                                 join=False, start_method="spawn")
    deadline = time.monotonic() + timeout
    while not context.join(timeout=1.0):  # raises, with the rank's traceback, if one failed
        if time.monotonic() > deadline:
            for p in context.processes:
                if p.is_alive():
                    p.kill()  # the spawned ranks, by their own handles
            raise TimeoutError(f"the {backend} ranks did not finish in {timeout:.0f} s")
    return [torch.load(out_dir / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
