"""What each Hugging Face transformers vision model's interpolate_pos_encoding
computes, in the op's terms: one recipe per copy of the method (transformers
5.24), and the recipe of each config.json model_type.

transformers gives each vision model its own copy of the method. The copies
share one frame (keep the table's first P tokens, read the rest as a square
grid, F.interpolate it to size=(height // patch, width // patch)) and differ in
where the table and the patch size live and in the arithmetic:

    ViT, DeiT (P=2), CLIP, SigLIP (P=0), BLIP, ...   bicubic, in the table's dtype ("hf" profile)
    Dinov2                                           bicubic, in float32, cast back; prefix not cast
    Dinov2WithRegisters                              the same with antialias=True

(Dinov2 has no +0.1 scale-factor offset here: that is DINOv2's own hub code,
the "dinov2" profile.)

The drop-in (transformers.py) routes the method through these recipes, and the
`vitpe` command resizes a model folder (command/hf_config.py) or an HF weights
file with them, so both give the numbers transformers gives. Nothing here
imports transformers or torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Union

__all__ = ["Recipe", "MODEL_TYPES"]


@dataclass(frozen=True)
class Recipe:
    """One copy of HF's interpolate_pos_encoding in the op's terms."""
    table: str                    # the attribute holding the table
    embedding: bool               # an nn.Embedding: the table is its .weight, (N, C); else a (1, N, C) tensor
    prefix: Union[int, str]       # tokens kept before the grid, or the attribute that counts them
    patch: str                    # where the patch size is read: "int" self.patch_size, "pair"
                                  # self.patch_size[0], [1], "embeddings" self.patch_embeddings.patch_size
                                  # (h, w), "config" self.config.patch_size
    float32: bool = False         # HF casts the grid to float32 and back (its prefix never cast);
                                  # else F.interpolate runs on the table's dtype
    mode: str = "bicubic"         # F.interpolate(size=..., mode=mode, align_corners=False, antialias=antialias)
    antialias: bool = False
    tracing: str = "jit"          # what skips HF's early return: torch.jit tracing, or "is_tracing",
                                  # transformers' is_tracing() (jit, dynamo, stream capture)

    def settings(self) -> Dict[str, object]:
        """interpolate_pos_embed's keywords for this copy."""
        if self.float32:
            # grid.to(float32), F.interpolate, .to(dtype), prefix untouched: the "timm" profile's
            # arithmetic, with the mode and flags set
            return {"profile": "timm", "mode": self.mode, "align_corners": False, "antialias": self.antialias}
        if self.mode == "bicubic" and not self.antialias:
            return {"profile": "hf"}
        return {"mode": self.mode, "align_corners": False, "antialias": self.antialias}


VIT = Recipe("position_embeddings", False, 1, "int")
DEIT = Recipe("position_embeddings", False, 2, "int")
NO_CLASS = Recipe("position_embeddings", False, 0, "int")
BLIP = Recipe("position_embedding", False, 1, "int")
INTERNVL = Recipe("position_embeddings", False, 1, "pair")
CLIP = Recipe("position_embedding", True, 1, "int")
SIGLIP = Recipe("position_embedding", True, 0, "int")
DINOV2 = Recipe("position_embeddings", False, 1, "embeddings", float32=True)
DINOV2_REG = Recipe("position_embeddings", False, 1, "embeddings", float32=True, antialias=True)
RF_DETR = Recipe("position_embeddings", False, 1, "int", float32=True, antialias=True)
UNLIMITED_OCR = Recipe("position_embedding", True, 1, "int", float32=True, antialias=True)
TIPSV2 = Recipe("position_embeddings", False, 1, "config", float32=True, mode="bilinear", antialias=True)
PIXIO = Recipe("position_embeddings", False, "n_cls_tokens", "int", float32=True, tracing="is_tracing")

# config.json's model_type -> the recipe of the model's vision embeddings (the dual models
# CLIP and SigLIP: their vision tower's)
MODEL_TYPES: Dict[str, Recipe] = {
    "vit": VIT,
    "deit": DEIT,
    "dinov2": DINOV2,
    "dinov2_with_registers": DINOV2_REG,
    "clip_vision_model": CLIP,
    "clip": CLIP,
    "siglip_vision_model": SIGLIP,
    "siglip": SIGLIP,
    # their BeitEmbeddings/Data2VecVisionEmbeddings.interpolate_pos_encoding is ViT's (transformers.py)
    "beit": VIT,
    "data2vec-vision": VIT,
}
