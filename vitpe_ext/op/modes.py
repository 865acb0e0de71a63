"""The resize modes, as the C kernels' table defines them (csrc/vitpe_modes.h).

Python never lists modes itself: the names, the default and which options a
mode accepts come from the compiled extension (vitpe_ext._C.modes), so a mode
added to the C table appears here, in argument checks, the command, the
benchmark and the tests without further edits.
"""
from __future__ import annotations

from typing import Dict, NamedTuple, Tuple

import torch  # noqa: F401  (loads libtorch/libc10, which _C links against without an rpath)

from .. import _C


class ModeInfo(NamedTuple):
    name: str
    align_corners: bool  # accepts align_corners=True
    antialias: str       # "never" (refused), "optional" (off unless asked), "always"
    scale_factor: bool   # accepts a scale_factor

    @property
    def antialias_allowed(self) -> bool:
        return self.antialias != "never"


TABLE: Dict[str, ModeInfo] = {row[0]: ModeInfo(*row) for row in _C.modes}
MODES: Tuple[str, ...] = tuple(TABLE)
DEFAULT_MODE: str = _C.default_mode
# F.interpolate's names of a mode on grids of one rank: {alias: (rank, mode)},
# e.g. "trilinear": (3, "bilinear"); the op accepts them at that rank only.
ALIASES: Dict[str, Tuple[int, str]] = {alias: (rank, mode) for alias, rank, mode in _C.mode_aliases}


def mode_info(name: str) -> ModeInfo:
    """The row of mode `name`; ValueError naming the valid modes otherwise."""
    try:
        return TABLE[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown mode {name!r}; valid modes are {', '.join(MODES)}") from None
