"""Hugging Face transformers drop-in: patch() routes the vision embeddings'
interpolate_pos_encoding through vitpe.

transformers (5.24) gives each vision model its own copy of
interpolate_pos_encoding(embeddings, height, width); hf_recipes.py states each
copy in the op's terms (its recipe), and a replacement made from a recipe
gives HF's numbers. Every copy returns the table itself (no resize) when the
token count already matches and height == width, except under torch.jit
tracing.

patch() sets the replacement as the method of each covered class, so models
built before and after it are routed alike, and unpatch() puts the exact
original function back. The replacement hands the call to HF's own method

- for HF's early return (its own value: the table, or CLIP's embedding lookup),
- under torch.jit tracing, where HF's graph follows the input size through
  traced size tensors and a vitpe call would fix the size it was traced at,
- under autocast, for a float16/bfloat16 table that HF interpolates in its own
  dtype: autocast may run F.interpolate in float32 (CUDA's does) and HF's
  method then returns a float32 table,
- wherever HF's code would do something the recipe does not describe: a patch
  size that is not an int (or pair), a table that is not a square grid, an
  unsupported dtype or device, sizes that are not ints; HF then answers,
  its own errors included.

A class is only patched while its method's code is the code its recipe was
written from (a fingerprint of the tokens, docstring and comments aside):
another transformers version that changed it keeps HF's method, with a
warning, rather than getting a different answer.
"""
from __future__ import annotations

import ast
import functools
import hashlib
import importlib
import inspect
import io
import textwrap
import tokenize
import warnings
from typing import Callable, Dict, Optional, Tuple

import torch

from ..op import interpolate_pos_embed
from ._patching import Patcher, PatchHandle
from .hf_recipes import (BLIP, CLIP, DEIT, DINOV2, DINOV2_REG, INTERNVL, NO_CLASS, PIXIO, RF_DETR,
                         SIGLIP, TIPSV2, UNLIMITED_OCR, VIT, Recipe)

__all__ = ["patch", "unpatch", "COVERED"]


# (recipe, fingerprint of the method's code in transformers 5.24, the classes with that code).
# Classes that share a fingerprint are "# Copied from" / modular copies of one method.
_GROUPS = (
    (VIT, "ded6e050f4f5bf8f", (
        ("vit.modeling_vit", "ViTEmbeddings"),
        ("vit_msn.modeling_vit_msn", "ViTMSNEmbeddings"),
        ("vit_mae.modeling_vit_mae", "ViTMAEEmbeddings"),
        ("beit.modeling_beit", "BeitEmbeddings"),
        ("data2vec.modeling_data2vec_vision", "Data2VecVisionEmbeddings"),
        ("flava.modeling_flava", "FlavaImageEmbeddings"),
    )),
    (DEIT, "85ea60e54f15ef3a", (("deit.modeling_deit", "DeiTEmbeddings"),)),
    (DINOV2, "ff7be8dfc2073fae", (("dinov2.modeling_dinov2", "Dinov2Embeddings"),)),
    (DINOV2_REG, "927fc1e311008497", (
        ("dinov2_with_registers.modeling_dinov2_with_registers", "Dinov2WithRegistersEmbeddings"),
    )),
    (CLIP, "30253aec7be8f8fb", (
        ("clip.modeling_clip", "CLIPVisionEmbeddings"),
        ("altclip.modeling_altclip", "AltCLIPVisionEmbeddings"),
        ("bridgetower.modeling_bridgetower", "BridgeTowerVisionEmbeddings"),
        ("chinese_clip.modeling_chinese_clip", "ChineseCLIPVisionEmbeddings"),
        ("clipseg.modeling_clipseg", "CLIPSegVisionEmbeddings"),
        ("git.modeling_git", "GitVisionEmbeddings"),
        ("kosmos2.modeling_kosmos2", "Kosmos2VisionEmbeddings"),
        ("metaclip_2.modeling_metaclip_2", "MetaClip2VisionEmbeddings"),
        ("owlvit.modeling_owlvit", "OwlViTVisionEmbeddings"),
        ("owlv2.modeling_owlv2", "Owlv2VisionEmbeddings"),
        ("x_clip.modeling_x_clip", "XCLIPVisionEmbeddings"),
    )),
    (SIGLIP, "a014e5e3ff757824", (
        ("siglip.modeling_siglip", "SiglipVisionEmbeddings"),
        ("janus.modeling_janus", "JanusVisionEmbeddings"),
        ("granite_docling.modeling_granite_docling", "GraniteDoclingVisionEmbeddings"),
    )),
    (BLIP, "44452ba169eb8a17", (
        ("blip.modeling_blip", "BlipVisionEmbeddings"),
        ("blip_2.modeling_blip_2", "Blip2VisionEmbeddings"),
        ("instructblip.modeling_instructblip", "InstructBlipVisionEmbeddings"),
        ("instructblipvideo.modeling_instructblipvideo", "InstructBlipVideoVisionEmbeddings"),
    )),
    (NO_CLASS, "3e2c8e4bf280979e", (
        ("groupvit.modeling_groupvit", "GroupViTVisionEmbeddings"),
        ("ijepa.modeling_ijepa", "IJepaEmbeddings"),
    )),
    (NO_CLASS, "7b33c5b1254c49ad", (("swin.modeling_swin", "SwinEmbeddings"),)),
    (INTERNVL, "e0da71f420082fc5", (
        ("internvl.modeling_internvl", "InternVLVisionEmbeddings"),
        ("qianfan_ocr.modeling_qianfan_ocr", "QianfanOCRVisionEmbeddings"),
    )),
    (RF_DETR, "dd04bd2af5bc1c9e", (("rf_detr.modeling_rf_detr", "RfDetrDinov2Embeddings"),)),
    (UNLIMITED_OCR, "5c791655f55d842f", (
        ("unlimited_ocr.modeling_unlimited_ocr", "UnlimitedOcrVisionEmbeddings"),
    )),
    (TIPSV2, "1686bacc20a2495e", (("tipsv2.modeling_tipsv2", "Tipsv2VisionEmbeddings"),)),
    (PIXIO, "73fab5a22b64ed51", (("pixio.modeling_pixio", "PixioEmbeddings"),)),
)

# "model.Class" for every covered class, in the order above.
COVERED: Tuple[str, ...] = tuple(f"{module.partition('.')[0]}.{name}"
                                 for _, _, classes in _GROUPS for module, name in classes)

_METHOD = "interpolate_pos_encoding"
_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_HALF = (torch.float16, torch.bfloat16)
_DEVICES = ("cpu", "cuda", "meta")  # where the op has kernels


# -- the replacement ----------------------------------------------------------------------------

def _is_int(value) -> bool:
    return type(value) is int


def _is_size(value) -> bool:
    return _is_int(value) or isinstance(value, torch.SymInt)


def _patch_size(module, recipe: Recipe) -> Optional[Tuple[int, int]]:
    """The patch size as HF's method reads it, or None where its code would
    not compute a grid from it (HF then raises, or does something else)."""
    try:
        if recipe.patch == "int":
            p = module.patch_size
            return (p, p) if _is_int(p) and p > 0 else None
        if recipe.patch == "config":
            p = module.config.patch_size
            return (p, p) if _is_int(p) and p > 0 else None
        if recipe.patch == "pair":  # HF reads [0] and [1]
            p = module.patch_size
            if isinstance(p, (tuple, list)) and len(p) >= 2:
                ph, pw = p[0], p[1]
            else:
                return None
        else:  # "embeddings": HF unpacks exactly two
            p = module.patch_embeddings.patch_size
            if isinstance(p, (tuple, list)) and len(p) == 2:
                ph, pw = p
            else:
                return None
    except AttributeError:
        return None
    return (ph, pw) if _is_int(ph) and _is_int(pw) and ph > 0 and pw > 0 else None


def _plan(module, recipe: Recipe, embeddings, height, width):
    """(table, new grid, old grid, prefix) for the op, or None: HF's early
    return, or a call only HF's own code answers."""
    if not (_is_size(height) and _is_size(width)) or not isinstance(embeddings, torch.Tensor) \
            or embeddings.dim() != 3:
        return None
    table = getattr(module, recipe.table, None)
    if recipe.embedding:
        table = getattr(table, "weight", None)
        if not isinstance(table, torch.Tensor) or table.dim() != 2:
            return None
        table = table.unsqueeze(0)
    elif not isinstance(table, torch.Tensor) or table.dim() != 3 or table.shape[0] != 1:
        return None
    prefix = recipe.prefix if _is_int(recipe.prefix) else getattr(module, recipe.prefix, None)
    if not _is_int(prefix) or prefix < 0:
        return None

    num_patches = embeddings.shape[1] - prefix
    num_positions = table.shape[1] - prefix
    if num_patches == num_positions and height == width:
        return None  # HF's early return, HF's value

    side = int(num_positions ** 0.5) if num_positions > 0 else 0
    if side == 0 or side * side != num_positions or table.shape[-1] != embeddings.shape[-1]:
        return None  # HF's reshape to a square (side, side, dim) grid fails
    if table.dtype not in _DTYPES or table.device.type not in _DEVICES:
        return None
    if not recipe.float32 and table.dtype in _HALF and table.device.type != "meta" \
            and torch.is_autocast_enabled(table.device.type):
        # Autocast may run HF's F.interpolate in float32 (CUDA's lists the upsample ops), and its
        # method then returns a float32 table built from the half one; HF's own code answers.
        return None
    patch = _patch_size(module, recipe)
    if patch is None:
        return None
    new_grid = (height // patch[0], width // patch[1])
    if new_grid[0] <= 0 or new_grid[1] <= 0:
        return None  # F.interpolate's error, from HF
    return table, new_grid, (side, side), prefix


def _make_replacement(original: Callable, recipe: Recipe) -> Callable:
    settings = recipe.settings()
    # the tracing test HF's method uses: torch.jit's, or transformers' is_tracing as its module binds it
    hf_is_tracing = (torch.jit.is_tracing if recipe.tracing == "jit"
                     else original.__globals__["is_tracing"])

    def interpolate_pos_encoding(self, embeddings, height, width):
        if hf_is_tracing():
            # HF interpolates at every size here, with sizes kept as traced tensors so that the
            # graph follows the input; a vitpe call would fix the size it was traced at.
            return original(self, embeddings, height, width)
        plan = _plan(self, recipe, embeddings, height, width)
        if plan is None:
            return original(self, embeddings, height, width)
        table, new_grid, old_grid, prefix = plan
        return interpolate_pos_embed(table, new_grid, old_grid, prefix, **settings)

    functools.update_wrapper(interpolate_pos_encoding, original)  # name, docstring, __wrapped__
    interpolate_pos_encoding._vitpe_recipe = recipe
    return interpolate_pos_encoding


# -- which code a class has ------------------------------------------------------------------

_fingerprints: Dict[Callable, Optional[str]] = {}


def _fingerprint(function: Callable) -> Optional[str]:
    """A hash of a function's tokens without its docstring, comments and
    layout; None where its source cannot be read."""
    if function in _fingerprints:
        return _fingerprints[function]
    try:
        source = textwrap.dedent(inspect.getsource(function))
        node = ast.parse(source).body[0]
    except (OSError, TypeError, SyntaxError, IndexError):
        result = None
    else:
        skip = set()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.body \
                and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant) \
                and isinstance(node.body[0].value.value, str):
            skip = set(range(node.body[0].lineno, node.body[0].end_lineno + 1))
        ignored = (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
                   tokenize.ENDMARKER)
        tokens = [t.string for t in tokenize.generate_tokens(io.StringIO(source).readline)
                  if t.type not in ignored and t.start[0] not in skip]
        result = hashlib.sha256(" ".join(tokens).encode()).hexdigest()[:16]
    _fingerprints[function] = result
    return result


# -- patch ---------------------------------------------------------------------------------------

_originals: Dict[type, Callable] = {}     # class -> HF's own method, while patched
_replacements: Dict[type, Callable] = {}  # class -> its replacement (made once per original)


def _restore() -> None:
    for cls, original in _originals.items():
        if cls.__dict__.get(_METHOD) is _replacements.get(cls):  # unless replaced since by someone else
            setattr(cls, _METHOD, original)
    _originals.clear()


_patcher = Patcher(_restore)


def patch() -> PatchHandle:
    """Route interpolate_pos_encoding of the covered transformers classes
    (COVERED: ViT, DeiT, Dinov2, Dinov2WithRegisters, CLIP and SigLIP vision
    embeddings, and the models that copy their code) through vitpe, until the
    returned handle's unpatch() (or the end of the `with` block). The method
    is replaced on the classes, so models built before and after the patch
    are routed alike. Imports the modeling modules of the covered classes.

    handle.classes: the classes routed; handle.skipped: "model.Class" ->
    why not (not in this transformers, or its method is not the code vitpe
    reproduces: then a warning, and HF's own method stays)."""
    import transformers  # noqa: F401  (a clear ImportError when it is missing)

    classes, skipped, changed = [], {}, []
    for recipe, fingerprint, members in _GROUPS:
        for module_name, class_name in members:
            label = f"{module_name.partition('.')[0]}.{class_name}"
            try:
                module = importlib.import_module(f"transformers.models.{module_name}")
            except Exception as exc:  # absent from this version, or an optional dependency it needs broke
                skipped[label] = f"not importable: {type(exc).__name__}: {exc}"
                continue
            cls = getattr(module, class_name, None)
            current = None if cls is None else cls.__dict__.get(_METHOD)
            if current is None:
                skipped[label] = f"no {class_name}.{_METHOD} in this transformers"
                continue
            if current is _replacements.get(cls):  # routed by an open patch
                classes.append(cls)
                continue
            if _fingerprint(current) != fingerprint:
                skipped[label] = f"its {_METHOD} is not the transformers 5.24 code vitpe reproduces"
                changed.append(label)
                continue
            replacement = _replacements.get(cls)
            if replacement is None or replacement.__wrapped__ is not current:
                replacement = _replacements[cls] = _make_replacement(current, recipe)
            _originals[cls] = current
            setattr(cls, _METHOD, replacement)
            classes.append(cls)
    if changed:
        warnings.warn(f"vitpe_ext.transformers.patch(): left HF's own {_METHOD} on {', '.join(changed)}: "
                      f"the code differs from what vitpe reproduces (transformers 5.24)", stacklevel=2)
    handle = _patcher.opened()
    handle.classes = tuple(classes)
    handle.skipped = skipped
    return handle


def unpatch() -> None:
    """Give every patched class its own interpolate_pos_encoding back, whatever patches are open."""
    _patcher.unpatch_all()
