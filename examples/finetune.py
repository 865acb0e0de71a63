"""Fine-tune a torchvision ViT at a higher resolution: the article's workflow (§3-§7) end to end.

1. a checkpoint: --checkpoint PATH (a torchvision ViT), or a tiny ViT pre-trained here at 32 px
2. its position table resized to the new grid, the mode picked on validation images (§4)
   and recorded in the saved state dict (vitpe's resize record, as `vitpe resize` keeps it)
3. layer-wise learning rates, the resized table at an lr of its own, linear warmup then
   cosine decay (§6)
4. bf16 autocast (§7) and make_dynamic: every batch at a random resolution (§7)
5. accuracy at several resolutions, before and after; checkpoints written atomically

Data: scikit-learn's 8x8 digits, upscaled, so it runs anywhere (about a minute of one CPU core).

    python examples/finetune.py --out-dir runs/digits          # then: --checkpoint runs/digits/pretrained.pth
    python examples/finetune.py --quick --steps 40              # a smoke run
"""
import argparse
import os
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torchvision.models.vision_transformer import VisionTransformer

import vitpe_ext
from vitpe_ext.integrations.provenance import Provenance, ResizeStep, attach_provenance, read_provenance
from vitpe_ext.torchvision import make_dynamic

TINY = dict(patch_size=8, num_layers=4, num_heads=4, hidden_dim=64, mlp_dim=128)
# Resize settings to try (§4: check a few on validation images before choosing).
CANDIDATES = [dict(mode="bilinear"), dict(mode="bicubic", align_corners=True),  # torchvision's
              dict(mode="bicubic"), dict(mode="bicubic", antialias=True)]        # HF/MAE's, timm's
TABLE = "encoder.pos_embedding"


def digits(seed):
    """Train/val/test splits of (N, 1, 8, 8) images in [0, 1] and labels."""
    d = load_digits()
    order = torch.randperm(len(d.target), generator=torch.Generator().manual_seed(seed))
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1)[order] / 16
    y = torch.tensor(d.target)[order]
    a, b = len(y) * 6 // 10, len(y) * 8 // 10
    return {"train": (x[:a], y[:a]), "val": (x[a:b], y[a:b]), "test": (x[b:], y[b:])}


def at(x, size):
    """Digits upscaled to size x size, three channels, normalized."""
    return (F.interpolate(x, size=(size, size), mode="bilinear") - 0.5).div(0.5).expand(-1, 3, -1, -1)


def train(model, data, steps, sizes, optimizer, schedule, amp, gen):
    model.train()
    (x, y), losses = data, []
    for _ in range(steps):
        idx = torch.randint(len(y), (64,), generator=gen)
        size = sizes[int(torch.randint(len(sizes), (1,), generator=gen))]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(model(at(x[idx], size)), y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()  # after optimizer.step(): the next step's lr, every group alike
        losses.append(loss.item())
    return losses


@torch.no_grad()
def accuracy(model, data, size, amp):
    model.eval()
    right = 0
    for x, y in zip(data[0].split(128), data[1].split(128)):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            right += (model(at(x, size)).argmax(1) == y).sum().item()
    return right / len(data[1])


def save(obj, path, force):
    """torch.save into a temp file beside `path`, then a rename: never a half-written file,
    and an existing file is replaced only with --force."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        if force:
            os.replace(tmp, path)
        else:  # a link fails if the name exists, even one that appeared while we trained
            os.link(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def pretrain(args, data, gen):
    """A stand-in for a downloaded checkpoint: a tiny ViT trained in float32 at 32 px."""
    model = VisionTransformer(image_size=32, num_classes=10, **TINY)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    schedule = vitpe_ext.warmup_cosine(optimizer, args.pretrain_steps // 10, args.pretrain_steps)
    losses = train(model, data["train"], args.pretrain_steps, [32], optimizer, schedule, False, gen)
    print(f"pre-trained at 32 px: loss {losses[0]:.2f} -> {losses[-1]:.2f}, "
          f"val {accuracy(model, data['val'], 32, False):.1%}")
    save({"model": model.state_dict(), "config": {**TINY, "image_size": 32, "num_classes": 10},
          "losses": losses}, args.out_dir / "pretrained.pth", args.force)
    return args.out_dir / "pretrained.pth"


def infer_config(state, num_heads, parser):
    """A torchvision ViT's shape from its weights; the head count must be given."""
    if num_heads is None:
        parser.error("the checkpoint has no 'config'; pass --num-heads (torchvision's ViT-B: 12)")
    conv = state["conv_proj.weight"]  # (hidden, 3, patch, patch)
    grid = int((state[TABLE].shape[1] - 1) ** 0.5)
    return dict(patch_size=conv.shape[-1], image_size=grid * conv.shape[-1], num_heads=num_heads,
                num_layers=len({k.split(".")[2] for k in state if k.startswith("encoder.layers.")}),
                hidden_dim=conv.shape[0], mlp_dim=state["encoder.layers.encoder_layer_0.mlp.0.weight"].shape[0],
                num_classes=state["heads.head.weight"].shape[0])


def positive(text):
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return int(text)


def learning_rate(text):
    try:
        lr = float(text)
    except ValueError:
        lr = float("nan")
    if not 0 < lr < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return lr


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, help="a torchvision ViT: {'model', 'config'} or a bare state dict")
    p.add_argument("--num-heads", type=positive, help="for a bare state dict (the weights do not say)")
    p.add_argument("--out-dir", type=Path, default=Path("finetune-out"))
    p.add_argument("--image-size", type=positive, default=48, help="fine-tuning resolution (default 48)")
    p.add_argument("--steps", type=positive, help="fine-tuning steps (default 300, --quick 60)")
    p.add_argument("--pretrain-steps", type=positive, help="(default 500, --quick 150)")
    p.add_argument("--lr", type=learning_rate, default=1e-3, help="base lr: the head's (default 1e-3)")
    p.add_argument("--pos-embed-lr", type=learning_rate, help="the resized table's lr (default lr / 2)")
    p.add_argument("--quick", action="store_true", help="a short run (CI)")
    p.add_argument("--no-amp", dest="amp", action="store_false", help="float32 instead of bf16 autocast")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.steps is None:
        args.steps = 60 if args.quick else 300
    if args.pretrain_steps is None:
        args.pretrain_steps = 150 if args.quick else 500
    outputs = [args.out_dir / "finetuned.pth"] + ([] if args.checkpoint else [args.out_dir / "pretrained.pth"])
    if not args.force and any(o.exists() for o in outputs):
        p.error(f"{next(o for o in outputs if o.exists())} exists; pass --force to overwrite it")
    torch.manual_seed(args.seed)
    gen, data = torch.Generator().manual_seed(args.seed), digits(args.seed)

    ckpt = torch.load(args.checkpoint or pretrain(args, data, gen), map_location="cpu", weights_only=True)
    state, earlier = ckpt.get("model", ckpt), read_provenance(ckpt).get(TABLE)  # a resized table's record
    if TABLE not in state:
        p.error(f"{args.checkpoint}: no {TABLE}: this example takes torchvision ViT checkpoints")
    cfg = dict(ckpt.get("config") or infer_config(state, args.num_heads, p))
    patch, old = cfg["patch_size"], cfg.pop("image_size")
    if args.image_size % patch:
        p.error(f"--image-size {args.image_size} is not a multiple of the patch size {patch}")
    grid = args.image_size // patch
    if cfg.pop("num_classes") != 10:  # a new head for the 10 digits
        state = {k: v for k, v in state.items() if not k.startswith("heads.")}
    model = VisionTransformer(image_size=args.image_size, num_classes=10, **cfg)

    def load_resized(settings):
        table = vitpe_ext.interpolate_pos_embed(state[TABLE], (grid, grid), num_prefix_tokens=1, **settings)
        missing = model.load_state_dict({**state, TABLE: table}, strict=False).missing_keys
        assert all(k.startswith("heads.") for k in missing), missing

    scores = []
    for settings in CANDIDATES:
        load_resized(settings)
        scores.append(accuracy(model, data["val"], args.image_size, args.amp))
        print(f"resize {old // patch}x{old // patch} -> {grid}x{grid} with {settings}: val {scores[-1]:.1%}")
    settings = CANDIDATES[scores.index(max(scores))]
    load_resized(settings)
    before = accuracy(model, data["test"], args.image_size, args.amp)

    # How the table was made, after any resize it had already had: make_dynamic checks its
    # settings against this record, and so does make_dynamic on any later load.
    step = ResizeStep.from_settings((old // patch,) * 2, (grid, grid), 1, **settings)
    record = earlier.then(step) if earlier and earlier.grid == step.old_grid else Provenance((step,))
    make_dynamic(model, profile=None, **settings, provenance=record)  # other sizes resize the same way
    pos_lr = args.pos_embed_lr if args.pos_embed_lr is not None else args.lr / 2
    groups = vitpe_ext.layer_decay_groups(model, args.lr, layer_decay=0.75, pos_embed_lr=pos_lr)
    optimizer = torch.optim.AdamW(groups)
    schedule = vitpe_ext.warmup_cosine(optimizer, max(1, args.steps // 10), args.steps, min_lr_ratio=0.01)
    sizes = sorted({max(patch, args.image_size - patch), args.image_size, args.image_size + patch})
    losses = train(model, data["train"], args.steps, sizes, optimizer, schedule, args.amp, gen)
    q = max(1, len(losses) // 4)
    print(f"fine-tuned {args.steps} steps at {sizes} px: loss {sum(losses[:q]) / q:.3f} (first quarter) -> "
          f"{sum(losses[-q:]) / q:.3f} (last quarter)")

    after = {str(s): accuracy(model, data["test"], s, args.amp) for s in [old] + sizes}
    print(f"test accuracy at {args.image_size} px: {before:.1%} after the resize, "
          f"{after[str(args.image_size)]:.1%} after fine-tuning; at " +
          ", ".join(f"{s} px {a:.1%}" for s, a in after.items()))
    save({"model": attach_provenance(model.state_dict(), {TABLE: record}),
          "config": {**cfg, "image_size": args.image_size, "num_classes": 10},
          "losses": losses, "test_accuracy": after}, outputs[0], args.force)
    print(f"wrote {outputs[0]}")


if __name__ == "__main__":
    main()
