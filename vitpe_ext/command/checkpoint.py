"""Checkpoints for the CLI: load them without running code, find the
position-embedding table(s), work out their layout, save them atomically in
the format OUT's extension names (resizing.py resizes the tables).

Loading never executes a pickle: torch files go through
`torch.load(weights_only=True)` (tensors and plain containers only) and
safetensors files through `safetensors`. The loaded object is kept as it was
(a bare state dict, or one nested under "model"/"state_dict"/..., keys with or
without "module."), and only the resized tensors are replaced in it, so every
other entry is written back bit for bit in the same structure (a safetensors
OUT holds only a flat dict of tensors: anything else is refused before
writing).

Keys are addressed as paths through nested dicts: ("model", "pos_embed"),
shown as "model/pos_embed"; a bare state dict's keys are shown as they are.

Every problem the user can fix raises CheckpointError with a one-line message.
"""
from __future__ import annotations

import json
import math
import struct
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch

from ..integrations.hf_recipes import MODEL_TYPES as HF_RECIPES, Recipe
from .atomic import write_atomic

Key = Tuple[Any, ...]
Pair = Tuple[int, int]

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt")


class CheckpointError(Exception):
    """A problem with the user's input; the CLI prints the message as one line."""


class NoEmbeddingKey(CheckpointError):
    """No key looks like a position-embedding table (a directory run copies such files, e.g. other shards)."""


def key_name(key: Key) -> str:
    return "/".join(str(part) for part in key)


def format_pair(pair: Sequence[int]) -> str:
    """(14, 14) -> '14x14'; a 3-D grid (8, 14, 14) -> '8x14x14'."""
    return "x".join(str(n) for n in pair)


# -- loading ---------------------------------------------------------------------

SAFETENSORS_MAX_HEADER = 100 << 20  # the safetensors library refuses larger headers


def sniff_format(path: Path) -> Optional[str]:
    """'torch-zip', 'torch-legacy', 'safetensors' or None, from the content.

    safetensors is recognised by its header (a u64 little-endian length, then
    that many bytes of JSON) before anything else: the length's low byte can
    be 0x80 (a 640-byte header), which is also how a pickle stream starts."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(9)
        if len(head) == 9 and head[8:9] == b"{":
            header_len = struct.unpack("<Q", head[:8])[0]
            if 2 <= header_len <= SAFETENSORS_MAX_HEADER:
                if 8 + header_len > size:
                    return "safetensors"  # truncated: the loader says so
                f.seek(8)
                with suppress(ValueError, UnicodeDecodeError):
                    if isinstance(json.loads(f.read(header_len)), dict):
                        return "safetensors"
    if head[:4] == b"PK\x03\x04":
        return "torch-zip"  # torch.save's default format since 1.6
    if head[:1] == b"\x80":
        return "torch-legacy"  # a bare pickle stream (protocol >= 2)
    if head[8:9] == b"{":
        return "safetensors"  # a corrupt header: the loader says so
    return None


@dataclass
class Checkpoint:
    path: Path
    format: str                     # 'torch-zip', 'torch-legacy' or 'safetensors'
    obj: Any                        # what was loaded: a dict, possibly nested
    metadata: Optional[Dict[str, str]] = None  # safetensors header metadata

    def items(self) -> Iterator[Tuple[Key, torch.Tensor]]:
        """Every tensor reachable through nested dicts, with its key path."""
        def walk(node, prefix):
            for name, value in node.items():
                if isinstance(value, torch.Tensor):
                    yield prefix + (name,), value
                elif isinstance(value, dict):
                    yield from walk(value, prefix + (name,))
        yield from walk(self.obj, ())

    def get(self, key: Key) -> torch.Tensor:
        node = self.obj
        for part in key:
            node = node[part]
        return node

    def set(self, key: Key, value: torch.Tensor) -> None:
        node = self.obj
        for part in key[:-1]:
            node = node[part]
        node[key[-1]] = value

    def container(self, key: Key) -> dict:
        """The dict (state dict) that holds key."""
        node = self.obj
        for part in key[:-1]:
            node = node[part]
        return node


def _unsupported_global(message: str) -> Optional[str]:
    marker = "Unsupported global: GLOBAL "
    at = message.find(marker)
    if at < 0:
        return None
    return message[at + len(marker):].split()[0]


def load_checkpoint(path) -> Checkpoint:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"{path}: is not a regular file (a device, FIFO or socket), not a checkpoint")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file, not a checkpoint")
    fmt = sniff_format(path)
    if fmt is None:
        raise CheckpointError(f"{path}: not a checkpoint (neither a torch.save file nor safetensors)")
    if fmt == "safetensors":
        return _load_safetensors(path)

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types; classify by what the file is
        message = str(exc)
        name = _unsupported_global(message)
        if name is not None:
            raise CheckpointError(
                f"{path}: refused to unpickle {name}: vitpe loads with torch.load(weights_only=True), which "
                f"allows only tensors and plain containers and never runs code from a file (a whole pickled "
                f"model? re-save its state_dict())") from None
        if "weights only load failed" in message.lower() or "weightsunpickler" in message.lower():
            detail = message.split("WeightsUnpickler error:")[-1].strip().splitlines()[0]
            raise CheckpointError(f"{path}: refused by torch.load(weights_only=True): {detail}") from None
        if fmt == "torch-zip":
            raise CheckpointError(f"{path}: truncated or corrupt torch checkpoint "
                                  f"(zip archive unreadable: {message.splitlines()[0] if message else type(exc).__name__})") from None
        lowered = message.lower()
        if isinstance(exc, EOFError) or any(w in lowered for w in ("truncated", "ran out of input", "unexpected eof")):
            raise CheckpointError(f"{path}: truncated torch checkpoint (the pickle stream ends early)") from None
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: "
                              f"{message.splitlines()[0] if message else 'no detail'})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a state dict (a dict of tensors)")
    ckpt = Checkpoint(path, fmt, obj)
    if next(ckpt.items(), None) is None:
        raise CheckpointError(f"{path}: holds a dict without any tensors, not a state dict")
    return ckpt


def _load_safetensors(path: Path) -> Checkpoint:
    try:
        from safetensors import SafetensorError, safe_open
    except ImportError:
        raise CheckpointError(f"{path}: is a safetensors file; install safetensors (pip install safetensors)") from None
    size = path.stat().st_size
    with open(path, "rb") as f:
        header_len = struct.unpack("<Q", f.read(8))[0]
    if 8 + header_len > size:
        raise CheckpointError(f"{path}: truncated or not a safetensors file "
                              f"(header says {header_len} bytes, the file has {size - 8} after it)")
    try:
        tensors = {}
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata()
            for name in f.keys():
                tensors[name] = f.get_tensor(name)
    except SafetensorError as exc:
        text = str(exc)
        if "not fully covered" in text or "incomplete" in text:
            raise CheckpointError(f"{path}: truncated safetensors file ({text})") from None
        raise CheckpointError(f"{path}: corrupt safetensors file ({text})") from None
    if not tensors:
        raise CheckpointError(f"{path}: safetensors file without tensors")
    return Checkpoint(path, "safetensors", tensors, metadata)


# -- saving ----------------------------------------------------------------------

TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")


def output_format(path) -> str:
    """'safetensors' or 'torch', from OUT's extension: the output format follows
    OUT's name, whatever IN was."""
    suffix = Path(path).suffix.lower()
    if suffix == ".safetensors":
        return "safetensors"
    if suffix in TORCH_SUFFIXES:
        return "torch"
    what = f"unknown output extension {suffix}" if suffix else "no output extension"
    raise CheckpointError(f"{path}: {what}; the format follows OUT's extension: .safetensors, or "
                          f"{'/'.join(TORCH_SUFFIXES)} for torch.save")


def _safetensors_problems(ckpt: Checkpoint) -> List[str]:
    """What of the loaded object a safetensors file cannot hold (a flat dict of named dense tensors)."""
    problems = []
    for name, value in ckpt.obj.items():
        if not isinstance(name, str):
            problems.append(f"{name!r} ({type(name).__name__} key)")
        elif isinstance(value, dict):
            problems.append(f"{name}/ (nested dict)")
        elif not isinstance(value, torch.Tensor):
            problems.append(f"{name} ({type(value).__name__})")
        elif value.layout != torch.strided:
            problems.append(f"{name} ({str(value.layout).replace('torch.', '')} tensor)")
    return problems


def check_storable(ckpt: Checkpoint, out_path) -> None:
    """Refuse, before anything is written, a conversion the output format cannot represent."""
    if output_format(out_path) != "safetensors":
        return
    problems = _safetensors_problems(ckpt)
    if problems:
        shown = ", ".join(problems[:4]) + (f" and {len(problems) - 4} more" if len(problems) > 4 else "")
        raise CheckpointError(f"{out_path}: safetensors holds only a flat dict of named tensors, and {ckpt.path} "
                              f"also has {shown}; write a .pth/.pt/.bin instead (or save the state dict alone)")


def _safetensors_bytes(ckpt: Checkpoint, out_path) -> bytes:
    from safetensors.torch import save as safetensors_bytes
    check_storable(ckpt, out_path)
    tensors, storages = {}, set()
    for name, value in ckpt.obj.items():
        # safetensors stores each tensor's own bytes: tied weights (one storage), views and
        # non-contiguous tensors are stored as copies
        ptr = value.untyped_storage().data_ptr()
        if (ptr in storages or not value.is_contiguous()
                or value.untyped_storage().nbytes() != value.numel() * value.element_size()):
            value = value.clone(memory_format=torch.contiguous_format)
        if value.numel():
            storages.add(ptr)
        tensors[name] = value
    # a torch IN has metadata only where the command put some (the resize record)
    metadata = ckpt.metadata if ckpt.format == "safetensors" else {"format": "pt", **(ckpt.metadata or {})}
    try:
        return safetensors_bytes(tensors, metadata=metadata)
    except Exception as exc:  # e.g. a dtype safetensors has no code for
        raise CheckpointError(f"{out_path}: cannot be stored as safetensors: "
                              f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None


def save_checkpoint(ckpt: Checkpoint, out_path, overwrite: bool = False) -> None:
    """Save in the format OUT's extension names; a torch file loaded in the
    legacy (pre-1.6) format stays legacy. Raises CheckpointError before
    writing when the format cannot hold the checkpoint, OutputError when OUT
    cannot be written."""
    if output_format(out_path) == "safetensors":
        data = _safetensors_bytes(ckpt, out_path)

        def write(f):
            f.write(data)
    else:
        legacy = ckpt.format == "torch-legacy"

        def write(f):
            torch.save(ckpt.obj, f, _use_new_zipfile_serialization=not legacy)
    write_atomic(out_path, write, overwrite=overwrite)


# -- finding the embedding -------------------------------------------------------

@dataclass(frozen=True)
class Family:
    name: str            # layout family
    table_suffix: str    # the table's state-dict key, after any model prefix ("module.", "vit.")
    patch_suffix: str    # the patch-embedding conv weight (out, in, ph, pw), same model prefix
    profile: str         # the default profile (a vitpe_ext.PROFILES name)


FAMILIES = (
    Family("torchvision", "encoder.pos_embedding", "conv_proj.weight", "torchvision"),
    Family("timm", "pos_embed", "patch_embed.proj.weight", "timm"),  # also MAE, DeiT, DINOv2
    Family("hf", "embeddings.position_embeddings", "embeddings.patch_embeddings.projection.weight", "hf"),
    # CLIP and SigLIP vision embeddings: an nn.Embedding (tokens, dim); under "vision_model." in a
    # dual model's file, without it in a CLIPVisionModel/SiglipVisionModel one
    Family("hf-clip", "embeddings.position_embedding.weight", "embeddings.patch_embedding.weight", "hf"),
    Family("openai-clip", "visual.positional_embedding", "visual.conv1.weight", "hf"),
    # MONAI ViT/UNETR (vit. in UNETR): (1, N, hidden), no class token, a 2-D or 3-D grid; the kernel is
    # a Conv2d/Conv3d weight (proj_type "conv") or absent (a "perceptron" Linear)
    Family("monai", "patch_embedding.position_embeddings", "patch_embedding.patch_embeddings.weight", "hf"),
)
FAMILY_BY_NAME = {f.name: f for f in FAMILIES}


def _match_family(name: Any) -> Optional[Tuple[Family, str]]:
    """(family, model prefix) if a state-dict key names a known table."""
    if not isinstance(name, str):
        return None
    for family in FAMILIES:
        if name == family.table_suffix or name.endswith("." + family.table_suffix):
            return family, name[: len(name) - len(family.table_suffix)]
    return None


def find_embedding_keys(ckpt: Checkpoint) -> List[Key]:
    keys = []
    for key, _ in ckpt.items():
        matched = _match_family(key[-1])
        if matched is None:
            continue
        family, model_prefix = matched
        if model_prefix.endswith(("rope.", "rope_embed.")):
            continue  # timm's RoPE modules' pos_embed (EVA-02, DINOv3): computed for any grid, no table
        # a CLIP/SigLIP text tower's table has the vision one's name but no patch embedding beside it
        if family.name == "hf-clip" and _sibling(ckpt, key, model_prefix, family.patch_suffix) is None:
            continue
        keys.append(key)
    return keys


def related_keys(ckpt: Checkpoint, limit: int = 8) -> List[str]:
    """Keys that look like position embeddings, with shapes, for error messages."""
    items = [(key_name(key), tuple(value.shape)) for key, value in ckpt.items()]
    last = lambda name: name.rsplit("/", 1)[-1].lower()  # noqa: E731
    hits = ([item for item in items if "pos" in last(item[0])]
            or [item for item in items if "embed" in last(item[0])] or items)
    shown = [f"{name} {shape}" for name, shape in hits[:limit]]
    return shown + ([f"(+{len(hits) - limit} more)"] if len(hits) > limit else [])


def select_keys(ckpt: Checkpoint, requested: Optional[Sequence[str]]) -> List[Key]:
    """The table keys to work on: --key values, or the one detected key."""
    if requested:
        keys = []
        for want in requested:
            exact = [k for k, _ in ckpt.items() if key_name(k) == want]
            loose = [k for k, _ in ckpt.items() if k[-1] == want]
            match = exact or loose
            if not match:
                raise CheckpointError(f"{ckpt.path}: no key {want!r}; position-embedding-like keys: "
                                      f"{', '.join(related_keys(ckpt))}")
            if len(match) > 1:
                raise CheckpointError(f"{ckpt.path}: key {want!r} is ambiguous, it is in several nested dicts: "
                                      f"{', '.join(key_name(k) for k in match)}; pass the full path")
            keys.append(match[0])
        return keys
    keys = find_embedding_keys(ckpt)
    if not keys:
        looked = ", ".join(f.table_suffix for f in FAMILIES)
        raise NoEmbeddingKey(f"{ckpt.path}: no position-embedding key found (looked for {looked}); "
                              f"candidates: {', '.join(related_keys(ckpt))}; pass --key")
    if len(keys) > 1:
        raise CheckpointError(f"{ckpt.path}: {len(keys)} position-embedding keys: "
                              f"{', '.join(key_name(k) for k in keys)}; choose with --key (repeatable)")
    return keys


# -- the table's layout ----------------------------------------------------------

@dataclass
class Embedding:
    """One position-embedding table in a checkpoint, and how it is laid out."""
    key: Key
    family: str                   # a FAMILIES name, refined ('mae', 'dinov2', 'hf-dinov2', ...), or 'custom'
    profile: Optional[str]        # the default profile for this family
    shape: Tuple[int, ...]
    dtype: torch.dtype
    prefix_tokens: int
    grid: Pair
    patch: Optional[Pair]         # from the patch-embedding weight, or --patch-size
    patch_key: Optional[Key]
    extras: List[Key] = field(default_factory=list)  # e.g. HF CLIP position_ids, resized along
    settings: Dict[str, Any] = field(default_factory=dict)  # what the default resize sets beside the
                                                             # profile (an HF model's recipe: mode, flags)

    @property
    def name(self) -> str:
        return key_name(self.key)

    @property
    def dim(self) -> int:
        return self.shape[-1]


def _is_square(n: int) -> bool:
    return n > 0 and math.isqrt(n) ** 2 == n


def _sibling(ckpt: Checkpoint, key: Key, model_prefix: str, suffix: str) -> Optional[Key]:
    container = ckpt.container(key)
    name = model_prefix + suffix
    value = container.get(name)
    return key[:-1] + (name,) if isinstance(value, torch.Tensor) else None


def _prefix_hints(ckpt: Checkpoint, key: Key, family: Optional[Family], model_prefix: str) -> List[int]:
    """Prefix-token counts the table may have, most likely first; [] if unknown."""
    if family is None:
        return []
    has = lambda suffix: _sibling(ckpt, key, model_prefix, suffix) is not None  # noqa: E731
    if family.name == "torchvision":
        return [1]  # class token always, in the table
    if family.name == "hf":
        return [1 + has("embeddings.distillation_token")]  # HF registers have no position embedding
    if family.name == "hf-clip":
        return [1] if has("embeddings.class_embedding") else [0]  # SigLIP has no class token
    if family.name == "openai-clip":
        return [1]
    if family.name == "monai":
        return [0]  # MONAI's ViT adds its class token after the position embedding
    # timm-style: class/dist/register tokens, in the table unless no_embed_class
    count = has("cls_token") + has("dist_token")
    reg = _sibling(ckpt, key, model_prefix, "reg_token")
    if reg is not None and ckpt.get(reg).dim() == 3:
        count += ckpt.get(reg).shape[1]
    return [count, 0] if count else [0]


def recipe_defaults(recipe: Recipe) -> Tuple[Optional[str], Dict[str, Any]]:
    """An HF model's recipe as Embedding's default resize: (profile, the settings beside it)."""
    settings = dict(recipe.settings())
    return settings.pop("profile", None), settings


def _refine_family(ckpt: Checkpoint, key: Key, family: Family,
                   model_prefix: str) -> Tuple[str, Optional[str], Dict[str, Any]]:
    """(family name, default profile, settings beside it), telling DINOv2/MAE apart from timm
    and transformers' Dinov2 models (layer scale) from its ViT."""
    has = lambda suffix: _sibling(ckpt, key, model_prefix, suffix) is not None  # noqa: E731
    if family.name == "timm":
        if has("register_tokens"):
            return "dinov2-reg", "dinov2-reg", {}   # facebookresearch/dinov2 *_reg
        if has("mask_token") and has("blocks.0.ls1.gamma"):
            return "dinov2", "dinov2", {}           # facebookresearch/dinov2 (offset 0.1)
        if has("decoder_pos_embed"):
            return "mae", "mae", {}                 # MAE pre-training checkpoint
    if family.name == "hf" and has("embeddings.register_tokens"):
        return ("hf-dinov2-reg", *recipe_defaults(HF_RECIPES["dinov2_with_registers"]))
    if family.name == "hf" and has("encoder.layer.0.layer_scale1.lambda1"):
        return ("hf-dinov2", *recipe_defaults(HF_RECIPES["dinov2"]))
    return family.name, family.profile, {}


def parse_pair(text: str, what: str) -> Pair:
    """'384' -> (384, 384); '512x384' -> (512, 384) (height x width)."""
    parts = str(text).lower().replace("*", "x").split("x")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        raise CheckpointError(f"{what} must be N or HxW (e.g. 384 or 512x384), got {text!r}") from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) <= 0:
        raise CheckpointError(f"{what} must be N or HxW with positive sizes, got {text!r}")
    return values  # type: ignore[return-value]


def parse_grid(text: str, what: str) -> Tuple[int, ...]:
    """A token grid: '14' or '16x14' as parse_pair, or 'TxHxW' (8x14x14) for a video/volume table.
    A plain N stays NxN (what --old-grid N always meant), so a 1-D grid is not spelled here."""
    parts = str(text).lower().replace("*", "x").split("x")
    if len(parts) != 3:
        return parse_pair(text, what)
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        values = (0,)
    if min(values) <= 0:
        raise CheckpointError(f"{what} must be N, HxW or TxHxW with positive sizes, got {text!r}")
    return values


def describe(ckpt: Checkpoint, key: Key, prefix_tokens: Optional[int] = None,
             old_grid: Optional[Pair] = None, patch_size: Optional[Pair] = None) -> Embedding:
    """Work out one table's layout: prefix tokens, grid, patch size, family."""
    table = ckpt.get(key)
    name = key_name(key)
    if table.dim() not in (2, 3) or table.shape[-2] == 0:
        raise CheckpointError(f"{ckpt.path}: {name} has shape {tuple(table.shape)}, not a (1, tokens, dim) "
                              f"or (tokens, dim) position-embedding table")
    if not table.is_floating_point():
        raise CheckpointError(f"{ckpt.path}: {name} is {table.dtype}, not a floating-point table")
    if table.numel() == 0:
        raise CheckpointError(f"{ckpt.path}: {name} has shape {tuple(table.shape)}: an empty table "
                              f"({'0 channels' if table.shape[-1] == 0 else 'batch of 0'}), nothing to resize")
    tokens = table.shape[-2]

    matched = _match_family(key[-1])
    family, model_prefix = matched if matched else (None, "")
    family_name, profile, settings = (_refine_family(ckpt, key, family, model_prefix) if family
                                      else ("custom", "hf", {}))

    # patch size: the conv weight (out, in, ph, pw) beside the table, or --patch-size
    patch_key = _sibling(ckpt, key, model_prefix, family.patch_suffix) if family else None
    weight_patch = None
    if patch_key is not None and ckpt.get(patch_key).dim() == 4:
        weight_patch = tuple(int(v) for v in ckpt.get(patch_key).shape[-2:])
    if patch_size is not None and weight_patch is not None and tuple(patch_size) != weight_patch:
        raise CheckpointError(f"{ckpt.path}: --patch-size {format_pair(patch_size)} contradicts "
                              f"{key_name(patch_key)} ({format_pair(weight_patch)} patches); resizing the "
                              f"patches themselves is not what this tool does")
    patch = tuple(patch_size) if patch_size is not None else weight_patch

    # prefix tokens and grid
    if old_grid is None and family is not None and family.name == "monai" and weight_patch is None:
        _refuse_monai_guess(ckpt, name, tokens, patch_key)
    if old_grid is not None:
        grid_tokens = math.prod(old_grid)  # rank 1 (--old-length), 2, or 3 (TxHxW)
        given = f"--old-length {old_grid[0]}" if len(old_grid) == 1 else f"--old-grid {format_pair(old_grid)}"
        prefix = tokens - grid_tokens
        if prefix < 0 or (prefix_tokens is not None and prefix != prefix_tokens):
            want = grid_tokens + (prefix_tokens or 0)
            raise CheckpointError(f"{ckpt.path}: {given}"
                                  f"{'' if prefix_tokens is None else f' with --prefix-tokens {prefix_tokens}'}"
                                  f" needs {want} tokens, but {name} has {tokens}")
        hints = _prefix_hints(ckpt, key, family, model_prefix)
        if prefix_tokens is None and hints and prefix not in hints:
            counts = " or ".join(map(str, hints))
            raise CheckpointError(f"{ckpt.path}: {given} leaves {prefix} prefix tokens "
                                  f"in {name} ({tokens} tokens), but this {family_name} table has {counts}; "
                                  f"check {given.split()[0]} (or pass --prefix-tokens {prefix} if the table really "
                                  f"has that many)")
        grid = tuple(old_grid)
    elif prefix_tokens is not None:
        if not 0 <= prefix_tokens < tokens or not _is_square(tokens - prefix_tokens):
            raise CheckpointError(f"{ckpt.path}: {name} has {tokens} tokens; with --prefix-tokens {prefix_tokens} "
                                  f"the {tokens - prefix_tokens} left are not a square grid; pass --old-grid HxW")
        side = math.isqrt(tokens - prefix_tokens)
        prefix, grid = prefix_tokens, (side, side)
    else:
        hints = _prefix_hints(ckpt, key, family, model_prefix)
        candidates = [p for p in (hints or range(0, 9)) if p < tokens and _is_square(tokens - p)]
        candidates = list(dict.fromkeys(candidates))
        if len(candidates) != 1:
            why = ("no prefix-token count leaves a square grid" if not candidates else
                   f"{len(candidates)} prefix-token counts leave a square grid ({', '.join(map(str, candidates))})")
            tried = f" (tried {', '.join(map(str, hints))} prefix tokens)" if hints else ""
            raise CheckpointError(f"{ckpt.path}: cannot infer the grid of {name} ({tokens} tokens): {why}{tried}; "
                                  f"pass --old-grid HxW or TxHxW (and --prefix-tokens N)")
        prefix = candidates[0]
        side = math.isqrt(tokens - prefix)
        grid = (side, side)

    extras = []
    if family is not None and family.name == "hf-clip":
        ids = _sibling(ckpt, key, model_prefix, "embeddings.position_ids")
        if ids is not None and ckpt.get(ids).shape[-1] == tokens:
            extras.append(ids)  # old CLIP checkpoints store arange(L) as a buffer

    # The mae refinement also covers fine-tuned MAE checkpoints: their table is the fixed sin-cos one.
    if family_name == "timm" and len(grid) == 2 and grid[0] * grid[1] > 1:
        from ..integrations.sincos import match_sincos
        variant, _ = match_sincos(table.reshape(-1, tokens, table.shape[-1])[0, prefix:].double().numpy(), grid)
        if variant == "mae":
            family_name, profile = "mae", "mae"

    return Embedding(key, family_name, profile, tuple(table.shape), table.dtype, prefix, grid,
                     patch, patch_key, extras, settings)


def _refuse_monai_guess(ckpt: Checkpoint, name: str, tokens: int, patch_key: Optional[Key]) -> None:
    """A MONAI table's token count does not tell a volume's grid from an image's (64 = 8x8 = 4x4x4;
    6x6x4 = 144 = 12x12), so only a Conv2d kernel beside it makes the grid 2-D; else it is asked for."""
    kernel = ckpt.get(patch_key) if patch_key is not None else None
    what = ("a 3-D patch kernel" if kernel is not None and kernel.dim() == 5 else
            "no Conv2d patch kernel beside it")
    side = round(tokens ** (1 / 3))
    example = f"{side}x{side}x{side}" if side ** 3 == tokens else "6x6x6 for a 96^3 volume in 16^3 patches"
    raise CheckpointError(f"{ckpt.path}: {name} is a MONAI table of {tokens} tokens ({what}), and a token count "
                          f"does not tell a volume's TxHxW from another (or from a 2-D HxW); pass --old-grid TxHxW "
                          f"(e.g. {example}) or --old-grid HxW")


def new_grid_for(emb: Embedding, image_size: Pair, ckpt_path) -> Pair:
    """The new patch grid for an image size; refuses sizes that are not a multiple of the patch."""
    if emb.patch is None:
        raise CheckpointError(f"{ckpt_path}: no patch-embedding weight beside {emb.name} tells the patch size; "
                              f"pass --patch-size")
    grid = []
    for axis, size, patch in (("height", image_size[0], emb.patch[0]), ("width", image_size[1], emb.patch[1])):
        if size % patch:
            down, up = size - size % patch, size - size % patch + patch
            raise CheckpointError(
                f"image {axis} {size} is not a multiple of the patch size {patch}: crop the images to {down} "
                f"(grid {down // patch}) or pad them to {up} (grid {up // patch}, as timm's dynamic_img_pad does) "
                f"and pass that size")
        grid.append(size // patch)
    return tuple(grid)  # type: ignore[return-value]


def nonfinite_summary(table: torch.Tensor, prefix: int) -> Optional[str]:
    """'3 NaN, 1 Inf in tokens 0, 17 (prefix 0)' or None when all finite."""
    flat = table.reshape(-1, table.shape[-2], table.shape[-1])
    bad = ~torch.isfinite(flat)
    if not bad.any():
        return None
    nan = int(torch.isnan(flat).sum())
    inf = int(torch.isinf(flat).sum())
    tokens = torch.nonzero(bad.any(dim=-1).any(dim=0)).flatten().tolist()
    shown = ", ".join(map(str, tokens[:6])) + (", ..." if len(tokens) > 6 else "")
    where = f"token{'s' if len(tokens) > 1 else ''} {shown}"
    if any(t < prefix for t in tokens):
        where += f" (tokens < {prefix} are prefix tokens)"
    return f"{nan} NaN, {inf} Inf in {where}"
