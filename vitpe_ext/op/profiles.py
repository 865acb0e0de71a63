"""Library profiles: the exact resize settings each ViT codebase uses.

No two libraries resize a position-embedding table the same way (see
docs/anchors.md: torchvision corner-aligns, timm antialiases and computes in
float32, DINOv2 maps coordinates through a +0.1 scale factor, ...). A profile
names one of them, so that

    interpolate_pos_embed(table, (24, 24), profile="timm")

gives the numbers that library's own code gives on the same table.

A profile fixes mode, align_corners, antialias, the coordinate mapping and the
dtype the arithmetic runs in. Where the library itself exposes a knob (timm's
`interpolation=`/`antialias=`, torchvision's `interpolation_mode=`) the
profile's value is only a default and an explicit argument may change it;
every other explicit argument must equal the profile's value, or ValueError.
The prefix-token count and grid sizes stay the caller's: they describe the
table, not the library.

This module is data: the table of conventions and the rule that merges a
caller's arguments into one. interpolate_pos_embed (vitpe_ext/op/function.py)
resolves a profile to plain settings before it calls the op.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Dict, Optional, Tuple

import torch


@dataclass(frozen=True)
class Profile:
    name: Optional[str]               # None: no library's, the op's own defaults
    library: str                      # whose code this reproduces, for messages and docs
    mode: str
    align_corners: Optional[bool]     # None: F.interpolate's default for the mode (False)
    antialias: bool
    compute_dtype: Optional[torch.dtype]  # None: the table's own dtype; else cast there and back
    scale_offset: Optional[float]     # DINOv2 legacy: scale_factor = (new + offset) / old
    free: Tuple[str, ...]             # arguments the library lets callers change
    modes: Optional[Tuple[str, ...]]  # with "mode" in free: the modes the library accepts (None: any)
    cast_prefix: bool = False         # the prefix tokens go through compute_dtype too (DINOv2 casts
                                      # the whole table; timm splits the prefix off first)

    def settings(self) -> Dict[str, object]:
        """The profile as plain keyword values (for the CLI, docs and logs)."""
        return {
            "mode": self.mode,
            "align_corners": self.align_corners,
            "antialias": self.antialias,
            "compute_dtype": None if self.compute_dtype is None else str(self.compute_dtype).replace("torch.", ""),
            "scale_offset": self.scale_offset,
        }

    def merged(self, mode: Optional[str], align_corners: Optional[bool], antialias: Optional[bool],
               scale_factor) -> "Profile":
        """This profile with the caller's explicit arguments merged in (None =
        not given). Raises ValueError where an argument contradicts it."""
        if scale_factor is not None:
            raise ValueError(f"profile {self.name!r} fixes the coordinate mapping ({self.library}); "
                             f"do not pass scale_factor with a profile")
        given = {"mode": mode, "align_corners": align_corners, "antialias": antialias}
        merged = {}
        for arg, value in given.items():
            fixed = getattr(self, arg)
            if value is None or value == fixed:
                merged[arg] = fixed
            elif arg in self.free:
                if arg == "mode" and self.modes is not None and value not in self.modes:
                    raise ValueError(f"profile {self.name!r} ({self.library}) accepts mode in {list(self.modes)}, "
                                     f"got mode={value!r}")
                merged[arg] = value
            else:
                raise ValueError(f"profile {self.name!r} fixes {arg}={fixed!r} ({self.library}), "
                                 f"got {arg}={value!r}; drop the argument or the profile")
        return replace(self, **merged)


PROFILES: Dict[str, Profile] = {p.name: p for p in (
    # torchvision.models.vision_transformer.interpolate_embeddings: always
    # align_corners=True, no antialias, in the checkpoint's own dtype;
    # interpolation_mode may be bilinear or bicubic.
    Profile("torchvision", "torchvision 0.29 interpolate_embeddings", "bicubic", True, False,
            None, None, free=("mode",), modes=("bilinear", "bicubic")),
    # timm.layers.resample_abs_pos_embed: `.float()` before F.interpolate, so
    # every dtype (float64 too) is computed in float32 and cast back; the
    # prefix tokens are not cast. Defaults bicubic + antialias=True.
    Profile("timm", "timm resample_abs_pos_embed", "bicubic", None, True,
            torch.float32, None, free=("mode", "antialias", "align_corners"), modes=None),
    # transformers ViTEmbeddings.interpolate_pos_encoding (after #33226):
    # size=, bicubic, align_corners=False, no antialias, no cast.
    Profile("hf", "HF transformers ViT interpolate_pos_encoding", "bicubic", False, False,
            None, None, free=(), modes=None),
    # MAE/DeiT util/pos_embed.py interpolate_pos_embed: same numbers as HF ViT.
    Profile("mae", "MAE/DeiT util interpolate_pos_embed", "bicubic", False, False,
            None, None, free=(), modes=None),
    # DINOv2 interpolate_pos_encoding with interpolate_offset=0.1 (hub models
    # without registers): scale_factor=((h+0.1)/H, (w+0.1)/W), float32.
    Profile("dinov2", "DINOv2 interpolate_pos_encoding (offset 0.1)", "bicubic", False, False,
            torch.float32, 0.1, free=(), modes=None, cast_prefix=True),
    # DINOv2 *_reg hub models: interpolate_antialias=True, interpolate_offset=0
    # (size=), float32. HF Dinov2WithRegisters computes the same grid (it
    # keeps a float64 class token as is, where DINOv2 rounds it to float32).
    Profile("dinov2-reg", "DINOv2 *_reg interpolate_pos_encoding (antialias, no offset)", "bicubic", False, True,
            torch.float32, None, free=(), modes=None, cast_prefix=True),
    # big_vision resample_posemb / vit_jax interpolate_posembed:
    # scipy.ndimage.zoom(order=1) with grid_mode=False, i.e. bilinear with the
    # corners aligned; scipy computes in double and casts back.
    Profile("big_vision", "big_vision resample_posemb (scipy.ndimage.zoom order=1)", "bilinear", True, False,
            torch.float64, None, free=(), modes=None),
)}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}") from None
