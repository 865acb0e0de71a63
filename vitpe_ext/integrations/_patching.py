"""Nesting patches of a library function (torchvision's interpolate_embeddings,
timm's resample_abs_pos_embed, transformers' interpolate_pos_encoding methods):
shared by vitpe_ext.torchvision, .timm and .transformers."""
from __future__ import annotations

from typing import Callable


class PatchHandle:
    """An applied patch: a context manager, or call .unpatch(). Patches nest:
    the library's function comes back when the last open one closes (or at
    the module's unpatch(), which closes them all)."""

    def __init__(self, patcher: "Patcher", generation: int):
        self._patcher = patcher
        self._generation = generation
        self.active = True

    def unpatch(self) -> None:
        if not self.active:
            return
        self.active = False
        self._patcher._close(self._generation)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.unpatch()
        return False


class Patcher:
    """Counts open patches of one function. `restore` puts the library's own
    function back; it runs when the count drops to zero or at unpatch_all()."""

    def __init__(self, restore: Callable[[], None]):
        self._restore = restore
        self._open = 0        # patches not yet closed
        self._generation = 0  # bumped by unpatch_all(): handles from before it are spent

    def opened(self) -> PatchHandle:
        """Record a patch the caller has just installed; returns its handle."""
        self._open += 1
        return PatchHandle(self, self._generation)

    def _close(self, generation: int) -> None:
        if generation != self._generation:  # already closed by unpatch_all()
            return
        self._open -= 1
        if self._open == 0:
            self._restore()

    def unpatch_all(self) -> None:
        self._open, self._generation = 0, self._generation + 1
        self._restore()
