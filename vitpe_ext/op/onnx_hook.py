"""torch.onnx.export of models that call the op, with no extra import.

torch's exporter builds its table of translations when an export starts
(ONNXRegistry.from_torchlib reads a module-level list), so vitpe's
translation (op/onnx_export.py) has to be in that list by then. Importing the
translation imports onnxscript and onnx, which most users of vitpe never
need, so importing vitpe_ext does not; instead install() waits for the
exporter itself: a finder on sys.meta_path that answers for one module only,
torch.onnx._internal.exporter._compat (what torch.onnx.export imports before
it builds the table), lets the normal import run and then registers the
translation. It removes itself on first use and never fails that import: a
failed registration is a warning that names the supported path,
custom_translation_table=vitpe_ext.onnx.translation_table().

If the exporter is already loaded when vitpe_ext is imported, install()
registers at once. `import vitpe_ext.onnx` registers explicitly.
"""
from __future__ import annotations

import importlib.abc
import sys
import warnings

_EXPORTER = "torch.onnx._internal.exporter._compat"


def install() -> None:
    """Register the translation now if torch's exporter is loaded, else when it is."""
    if _EXPORTER in sys.modules:
        _register()
    elif not any(isinstance(finder, _AfterExporterImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AfterExporterImport())


def _register() -> None:
    try:
        from .onnx_export import register
        register()
    except Exception as exc:  # never break torch's own import over vitpe's entry
        warnings.warn(f"vitpe: could not add its op to torch's ONNX exporter ({type(exc).__name__}: {exc}); pass "
                      f"custom_translation_table=vitpe_ext.onnx.translation_table() to torch.onnx.export",
                      RuntimeWarning, stacklevel=2)


class _AfterExporterImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: for the exporter module it asks the finders
    behind it and wraps the loader they return, so that the translation is
    registered right after the module has run."""

    def find_spec(self, fullname, path, target=None):
        if fullname != _EXPORTER:
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)  # one use; and the finders below must not find us again
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            spec = find(fullname, path, target) if find is not None else None
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _RegisterAfter(spec.loader)
                return spec
        return None


class _RegisterAfter(importlib.abc.Loader):
    """The module's own loader, plus the registration after exec_module.
    Anything else (get_source for tracebacks, resources) goes to that loader."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        _register()

    def __getattr__(self, name):
        return getattr(self._loader, name)
