"""Library profiles: the exact resize settings each ViT codebase uses.

No two libraries resize a position-embedding table the same way (see
docs/anchors: torchvision corner-aligns, timm antialiases and computes in
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
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch


@dataclass(frozen=True)
class Profile:
    name: str
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


def resolve(profile: str, mode: Optional[str], align_corners: Optional[bool], antialias: Optional[bool],
            scale_factor) -> Profile:
    """The profile with the caller's explicit arguments merged in (None = not
    given). Raises ValueError where an argument contradicts the profile."""
    prof = get_profile(profile)
    if scale_factor is not None:
        raise ValueError(f"profile {prof.name!r} fixes the coordinate mapping ({prof.library}); "
                         f"do not pass scale_factor with a profile")
    given = {"mode": mode, "align_corners": align_corners, "antialias": antialias}
    merged = {}
    for arg, value in given.items():
        fixed = getattr(prof, arg)
        if value is None or value == fixed:
            merged[arg] = fixed
        elif arg in prof.free:
            if arg == "mode" and prof.modes is not None and value not in prof.modes:
                raise ValueError(f"profile {prof.name!r} ({prof.library}) accepts mode in {list(prof.modes)}, "
                                 f"got mode={value!r}")
            merged[arg] = value
        else:
            raise ValueError(f"profile {prof.name!r} fixes {arg}={fixed!r} ({prof.library}), "
                             f"got {arg}={value!r}; drop the argument or the profile")
    return Profile(prof.name, prof.library, merged["mode"], merged["align_corners"], merged["antialias"],
                   prof.compute_dtype, prof.scale_offset, prof.free, prof.modes, prof.cast_prefix)


def interpolate_with_profile(pos_embed: torch.Tensor, new_size, old_size, num_prefix_tokens: int,
                             prof: Profile) -> torch.Tensor:
    """Run the op with a resolved profile (see resolve). pos_embed is 3-D."""
    from .ops import _pair, interpolate_pos_embed  # ops imports this module lazily

    new_size = _pair(new_size, "new_size")
    if old_size is None:
        grid_tokens = pos_embed.shape[1] - num_prefix_tokens
        side = int(round(max(grid_tokens, 0) ** 0.5))
        old_size = [side, side]  # the op validates side*side == grid_tokens
    old_size = _pair(old_size, "old_size")
    if [int(s) for s in new_size] == [int(s) for s in old_size]:
        # Every library returns the table itself when the grid does not
        # change; DINOv2's offset mapping and timm's float32 round trip
        # would otherwise alter it.
        return pos_embed.clone(memory_format=torch.contiguous_format)

    scale_factor = None
    if prof.scale_offset is not None:
        # DINOv2's "historical kludge": F.interpolate(scale_factor=((h+0.1)/H,
        # (w+0.1)/W)). floor(H * sf) == h, and the mapping uses 1/sf, not H/h.
        scale_factor = [(int(new_size[0]) + prof.scale_offset) / int(old_size[0]),
                        (int(new_size[1]) + prof.scale_offset) / int(old_size[1])]

    orig_dtype = pos_embed.dtype
    table = pos_embed
    if prof.compute_dtype is not None and orig_dtype != prof.compute_dtype:
        table = pos_embed.to(prof.compute_dtype)
    out = interpolate_pos_embed(table, new_size, old_size, num_prefix_tokens, mode=prof.mode,
                                align_corners=prof.align_corners, antialias=prof.antialias,
                                scale_factor=scale_factor)
    if out.dtype != orig_dtype:
        out = out.to(orig_dtype)
        narrowing = torch.finfo(prof.compute_dtype).bits < torch.finfo(orig_dtype).bits
        if num_prefix_tokens and narrowing and not prof.cast_prefix:
            # The libraries split the prefix off before casting, so a narrowing
            # compute dtype (timm's float32 for a float64 table) must not touch it.
            out = torch.cat([pos_embed[:, :num_prefix_tokens], out[:, num_prefix_tokens:]], dim=1)
    return out
