"""Fingerprint the op's outputs and gradients over a fixed sweep, to show that a
refactoring changed no bit: every mode x accepted flag combination x dtype x a
few shapes (prefix, non-square, up and down, scale factors), forward and
backward, hashed per case and overall.

    python scripts/output_hashes.py [--device cpu|cuda] [--out hashes.txt]

Run it before and after a change and diff the files (the last line is the
overall hash). Inputs come from a seeded generator on the CPU, so CPU and CUDA
runs hash the same inputs.
"""
from __future__ import annotations

import argparse
import hashlib
import math

import torch

import vitpe_ext
from vitpe_ext.op import MODES, mode_info

DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
# (batch, prefix, old (h, w), new (h, w), channels, explicit scale factor?)
SHAPES = [
    (1, 1, (14, 14), (24, 24), 64, False),
    (2, 5, (7, 9), (12, 5), 24, False),
    (1, 0, (24, 24), (14, 14), 40, False),
    (3, 1, (5, 5), (11, 8), 13, True),
    (1, 2, (37, 37), (73, 73), 16, False),
]


def flag_combos(mode):
    info = mode_info(mode)
    corners = (None, False, True) if info.align_corners else (None,)
    antialias = (False, True) if info.antialias != "never" else (False,)
    return [(ac, aa) for ac in corners for aa in antialias]


def scale_for(old, new):
    s = (new + 0.25) / old  # another coordinate mapping than new/old
    assert math.floor(old * s) == new
    return s


def digest(t: torch.Tensor) -> str:
    data = t.detach().cpu().contiguous()
    raw = data.view(torch.int16) if data.dtype in (torch.float16, torch.bfloat16) else data
    return hashlib.sha256(raw.numpy().tobytes()).hexdigest()[:16]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", help="also write the lines here")
    args = parser.parse_args(argv)
    lines = []
    for i, (batch, prefix, old, new, channels, use_sf) in enumerate(SHAPES):
        gen = torch.Generator().manual_seed(i)
        base = torch.randn(batch, prefix + old[0] * old[1], channels, generator=gen, dtype=torch.float64)
        grad_base = torch.randn(batch, prefix + new[0] * new[1], channels, generator=gen, dtype=torch.float64)
        for mode in MODES:
            for ac, aa in flag_combos(mode):
                for dtype in DTYPES:
                    x = base.to(dtype).to(args.device).requires_grad_()
                    kw = dict(old_size=old, num_prefix_tokens=prefix, mode=mode, align_corners=ac, antialias=aa)
                    if use_sf:
                        kw["scale_factor"] = (scale_for(old[0], new[0]), scale_for(old[1], new[1]))
                    out = vitpe_ext.interpolate_pos_embed(x, new, **kw)
                    (grad,) = torch.autograd.grad(out, x, grad_base.to(dtype).to(args.device))
                    name = f"shape{i} {mode} ac={ac} aa={aa} {str(dtype).replace('torch.', '')}"
                    lines.append(f"{name} out={digest(out)} grad={digest(grad)}")
    overall = hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]
    lines.append(f"overall {overall} ({len(lines)} cases)")
    text = "\n".join(lines) + "\n"
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    print(lines[-1])


if __name__ == "__main__":
    main()
