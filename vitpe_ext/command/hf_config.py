"""What a Hugging Face model folder's config.json says about its position
table, and the config (and image processor) a resized table needs.

transformers builds a ViT's position table from config.json's image_size and
patch_size (image_size // patch_size patches per axis), so a resized table
loads only with a config that states its new size, and the model runs it
without interpolate_pos_encoding only at that size. Per model_type, MODEL_TYPES
says where the table and the patch kernel are, whether the model can hold a
non-square size, and takes from integrations/hf_recipes.py (the drop-in's
recipes) how many prefix tokens the table holds and what that model's own
interpolate_pos_encoding computes (transformers 5.24). Nothing here imports
transformers: config.json is plain JSON.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ..integrations.hf_recipes import MODEL_TYPES as RECIPES, Recipe
from .checkpoint import CheckpointError, Pair, format_pair

CONFIG_NAME = "config.json"
PROCESSOR_NAMES = ("preprocessor_config.json", "processor_config.json")  # the second nests "image_processor"

_VIT_KERNEL = "embeddings.patch_embeddings.projection.weight"
_CLIP_KERNEL = "embeddings.patch_embedding.weight"


@dataclass(frozen=True)
class ModelType:
    name: str                   # config.json's model_type
    patch_kernel: str           # the patch-embedding conv weight (hidden, channels, ph, pw), after `tower`
    prefix_names: str           # what the prefix tokens are, for messages
    pair_sizes: bool            # the config may hold [height, width] sizes
    square_only: Optional[str]  # why the model cannot run a non-square table, or None
    tower: str = ""             # the vision tower's keys' prefix in a dual model's state dict
    sizes_in: Optional[str] = None  # the config's sub-dict holding image_size/patch_size
    absolute_flag: Optional[str] = None  # the config's switch for the absolute table (absent: always there)
    rel_pos: bool = False       # BEiT-layout relative-position-bias tables too (hf_beit.py)

    @property
    def recipe(self) -> Recipe:
        return RECIPES[self.name]

    @property
    def table(self) -> str:
        """The table's key, after any model prefix ("vit.", "dinov2.", ...): embeddings.<the recipe's attribute>."""
        return f"{self.tower}embeddings.{self.recipe.table}" + (".weight" if self.recipe.embedding else "")

    @property
    def kernel(self) -> str:
        return self.tower + self.patch_kernel

    @property
    def ids(self) -> Optional[str]:
        """The position_ids buffer beside an nn.Embedding table (older checkpoints saved it), resized along."""
        return f"{self.tower}embeddings.position_ids" if self.recipe.embedding else None

    @property
    def prefix_tokens(self) -> int:
        return self.recipe.prefix


_DINOV2_SQUARE = ("its interpolate_pos_encoding runs in every forward whose input is not square and reshapes the "
                  "table as a square grid")
_CLIP_SQUARE = "its embeddings compute the grid as (image_size // patch_size) ** 2: one int each"
# BeitRelativePositionBias.forward reshapes its (2Wh-1)(2Ww-1) rows as (2Ww-1, 2Wh-1): a
# non-square window is read transposed, even at the model's own size
_BEIT_SQUARE = ("its relative position bias reads a non-square offset table transposed, and its "
                "interpolate_pos_encoding reads the absolute table as a square grid")

MODEL_TYPES: Dict[str, ModelType] = {t.name: t for t in (
    # at the config's size ViT and DeiT add the table as it is, whatever its shape
    ModelType("vit", _VIT_KERNEL, "class", True, None),
    ModelType("deit", _VIT_KERNEL, "class, distillation", True, None),
    # Dinov2 interpolates in every forward except at the table's own square size
    ModelType("dinov2", _VIT_KERNEL, "class", True, _DINOV2_SQUARE),
    ModelType("dinov2_with_registers", _VIT_KERNEL, "class; the registers have no position", True, _DINOV2_SQUARE),
    ModelType("clip_vision_model", _CLIP_KERNEL, "class", False, _CLIP_SQUARE),
    ModelType("clip", _CLIP_KERNEL, "class", False, _CLIP_SQUARE, "vision_model.", "vision_config"),
    ModelType("siglip_vision_model", _CLIP_KERNEL, "none", False, _CLIP_SQUARE),
    ModelType("siglip", _CLIP_KERNEL, "none", False, _CLIP_SQUARE, "vision_model.", "vision_config"),
    # the absolute table only with use_absolute_position_embeddings (default False); the
    # relative-position-bias tables per layer and/or shared (hf_beit.py)
    ModelType("beit", _VIT_KERNEL, "class", False, _BEIT_SQUARE,
              absolute_flag="use_absolute_position_embeddings", rel_pos=True),
    ModelType("data2vec-vision", _VIT_KERNEL, "class", False, _BEIT_SQUARE,
              absolute_flag="use_absolute_position_embeddings", rel_pos=True),
)}


# model types whose position table transformers computes rather than loads (what it is, for the message)
COMPUTED_TABLES = {
    # modeling_videomae.py: get_sinusoid_encoding_table(num_patches, hidden_size), a plain attribute
    "videomae": "a fixed 1-D sinusoid over its (num_frames // tubelet_size) * (image_size // patch_size)^2 tokens",
}


def read_json(path: Path, what: str) -> Dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read it ({exc.strerror})") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: holds a JSON {type(data).__name__}, not the {what} object")
    return data


def json_text(data: Dict[str, Any]) -> str:
    """As transformers writes its JSON files: two-space indent, a final newline (the key order is kept)."""
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def _json_size(pair: Pair) -> Any:
    return pair[0] if pair[0] == pair[1] else [pair[0], pair[1]]


@dataclass
class ModelConfig:
    path: Path              # config.json
    data: Dict[str, Any]    # all of it, as read
    type: ModelType
    image: Pair             # image_size as (height, width)
    patch: Pair

    @property
    def grid(self) -> Pair:
        return (self.image[0] // self.patch[0], self.image[1] // self.patch[1])  # transformers floors too

    @property
    def has_absolute(self) -> bool:
        """Whether the model has an absolute table; a switch missing from config.json is the class
        default, False (save_pretrained writes only the values that differ from it)."""
        return self.type.absolute_flag is None or self.data.get(self.type.absolute_flag) is True

    def _sizes(self, data: Dict[str, Any]) -> Dict[str, Any]:
        return data[self.type.sizes_in] if self.type.sizes_in else data

    def _where(self, key: str) -> str:
        return f"{self.type.sizes_in}.{key}" if self.type.sizes_in else key

    def check_target(self, image: Pair, patch: Pair, given: str) -> None:
        """Refuse a size this model type cannot state or run; given names the options, for the message."""
        if self.type.square_only and (image[0] != image[1] or patch[0] != patch[1]):
            what = (f"an image {format_pair(image)}" if image[0] != image[1] else f"a patch {format_pair(patch)}")
            raise CheckpointError(f"{self.path}: {given} gives {what}, but a transformers {self.type.name} model "
                                  f"runs only square sizes ({self.type.square_only}); choose a square size")
        masked = [a for a in self.data.get("architectures") or [] if "MaskedImageModeling" in str(a)]
        if masked and patch != self.patch:
            raise CheckpointError(f"{self.path}: a {masked[0]} decodes encoder_stride x encoder_stride pixels per "
                                  f"token and needs encoder_stride == patch_size; a new patch size breaks its "
                                  f"decoder: change the patch of the encoder alone (save its base model first)")

    def updated(self, image: Pair, patch: Pair) -> Tuple[Dict[str, Any], List[str]]:
        """config.json's contents for a table at image/patch, and a line per change."""
        data = copy.deepcopy(self.data)
        sizes, changes = self._sizes(data), []
        for key, old, new in (("image_size", self.image, image), ("patch_size", self.patch, patch)):
            if new != old:
                was = sizes[key]
                sizes[key] = _json_size(new)
                changes.append(f"{self._where(key)} {json.dumps(was)} -> {json.dumps(sizes[key])}")
        return data, changes

    def describe(self) -> str:
        arch = self.data.get("architectures")
        arch = f" ({', '.join(map(str, arch))})" if isinstance(arch, list) and arch else ""
        count = self.type.prefix_tokens
        sizes = (f"Hugging Face {self.type.name}{arch}: image {format_pair(self.image)}, patch "
                 f"{format_pair(self.patch)}, grid {format_pair(self.grid)}")
        if not self.has_absolute:
            return sizes + ", no absolute position table"
        return sizes + f", {count} prefix token{'' if count == 1 else 's'} in the table ({self.type.prefix_names})"


def read_config(path: Path) -> ModelConfig:
    """config.json's model type and sizes; refuses a model vitpe cannot rewrite."""
    data = read_json(path, "config")
    name = data.get("model_type")
    if not isinstance(name, str):
        raise CheckpointError(f"{path}: no model_type; vitpe rewrites only the model types it knows "
                              f"({', '.join(MODEL_TYPES)})")
    if name in COMPUTED_TABLES:
        raise CheckpointError(f"{path}: a {name} model's position table is {COMPUTED_TABLES[name]}, "
                              f"computed from config.json when the model is built, not a saved weight: there is "
                              f"nothing to resize; set the new size in config.json ({name} reads "
                              f"image_size/num_frames) and load the weights as they are")
    if name not in MODEL_TYPES:
        raise CheckpointError(f"{path}: model_type {name!r} is not one vitpe can rewrite (it knows "
                              f"{', '.join(MODEL_TYPES)}); resize its weights file alone with --key, and set its "
                              f"config yourself")
    mtype = MODEL_TYPES[name]
    sizes = data
    if mtype.sizes_in:
        sizes = data.get(mtype.sizes_in)
        if not isinstance(sizes, dict):
            raise CheckpointError(f"{path}: a {name} config without a {mtype.sizes_in} object")
    image, patch = (_read_size(path, sizes, key, mtype) for key in ("image_size", "patch_size"))
    return ModelConfig(path, data, mtype, image, patch)


def _read_size(path: Path, sizes: Dict[str, Any], key: str, mtype: ModelType) -> Pair:
    where = f"{mtype.sizes_in}.{key}" if mtype.sizes_in else key
    if key not in sizes:
        raise CheckpointError(f"{path}: no {where} (transformers would take its class default, which vitpe "
                              f"does not guess); add it")
    value = sizes[key]
    is_int = lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0  # noqa: E731
    if is_int(value):
        return (value, value)
    if mtype.pair_sizes and isinstance(value, list) and len(value) == 2 and all(map(is_int, value)):
        return (value[0], value[1])
    expected = "a positive int or [height, width]" if mtype.pair_sizes else "one positive int"
    raise CheckpointError(f"{path}: {where} is {json.dumps(value)}; a {mtype.name} config takes {expected}")


# -- the image processor ---------------------------------------------------------

def _hw(value: Any) -> Optional[Pair]:
    """(height, width) of a processor size: an int (square) or {"height", "width"}; None otherwise."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    if isinstance(value, dict) and set(value) == {"height", "width"}:
        return (value["height"], value["width"])
    return None


def _scaled(n: int, factor: float) -> int:
    return max(1, int(n * factor + 0.5))


def updated_processor(data: Dict[str, Any], image: Pair) -> Tuple[Optional[Dict[str, Any]], List[str]]:
    """A processor config whose images come out at image (height, width): its
    output (crop_size with do_center_crop, else size) set to it, the resize
    before a crop scaled by the same factor so the crop takes the same share
    of the image. (None, [why]) when the layout is not one of these."""
    data = copy.deepcopy(data)
    nested = isinstance(data.get("image_processor"), dict)  # processor_config.json
    proc = data["image_processor"] if nested else data
    where = "image_processor." if nested else ""
    crop = proc.get("crop_size") if proc.get("do_center_crop", "crop_size" in proc) else None
    out_key = "crop_size" if crop is not None else "size"
    old = _hw(proc.get(out_key))
    if old is None:
        return None, [f"its {where}{out_key} {json.dumps(proc.get(out_key))} does not fix the size of the images "
                      f"it makes; left as it is"]
    if old == tuple(image):
        return None, []
    changes = []

    def put(key: str, value: Any) -> None:
        changes.append(f"{where}{key} {json.dumps(proc[key])} -> {json.dumps(value)}")
        proc[key] = value

    as_dict = isinstance(proc[out_key], dict) or image[0] != image[1]
    put(out_key, {"height": image[0], "width": image[1]} if as_dict else image[0])
    if out_key == "crop_size" and "size" in proc:
        fy, fx = image[0] / old[0], image[1] / old[1]
        size = proc["size"]
        if isinstance(size, dict) and set(size) == {"height", "width"}:
            put("size", {"height": _scaled(size["height"], fy), "width": _scaled(size["width"], fx)})
        elif isinstance(size, dict) and set(size) <= {"shortest_edge", "longest_edge"}:
            # the larger factor: after the resize both sides of the new crop still fit in the image
            put("size", {k: _scaled(v, max(fy, fx)) for k, v in size.items()})
        elif isinstance(size, int) and not isinstance(size, bool):
            put("size", _scaled(size, max(fy, fx)))
        else:
            changes.append(f"{where}size {json.dumps(size)} before the crop not understood; left as it is")
    return data, changes
