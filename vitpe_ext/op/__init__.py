"""The op wing: torch.ops.vitpe.interpolate_pos_embed as Python sees it.

    registration.py  fake kernels and the one autograd path of torch.ops.vitpe.*
    backends.py      which compiled modules load: _C always, _C_cuda under a CUDA torch
    modes.py         the mode table, read from the C kernels
    profiles.py      libraries' conventions, as data
    function.py      the public function: argument types, defaults, profiles resolved
    reference.py     the anchors' recipe in plain PyTorch, the op's executable spec
    onnx_export.py   the op as standard ONNX ops, for torch.onnx.export (imports onnxscript)
    onnx_hook.py     registers that translation once torch's exporter is imported

This wing imports nothing from vitpe_ext.integrations or vitpe_ext.command;
they build on it (tests/test_import_graph.py holds the direction).
"""
from . import registration  # noqa: F401  (the fake and autograd kernels of torch.ops.vitpe.*)
from .function import interpolate_pos_embed, resolve
from .modes import DEFAULT_MODE, MODES, ModeInfo, mode_info
from .profiles import PROFILES, Profile, get_profile
from .registration import check_call
from . import onnx_hook

onnx_hook.install()  # torch.onnx.export translates the op without an extra import

__all__ = ["interpolate_pos_embed", "resolve", "check_call", "MODES", "DEFAULT_MODE", "ModeInfo", "mode_info",
           "PROFILES", "Profile", "get_profile"]
