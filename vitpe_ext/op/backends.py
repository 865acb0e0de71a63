"""Which kernels this process has.

vitpe_ext._C (the schemas and the CPU kernels) links libtorch only and always
loads. vitpe_ext._C_cuda (the CUDA kernels) links libtorch_cuda, which a
CPU-only torch does not have, so it is imported only when torch is a CUDA
build. Where torch is a CUDA build but the CUDA module is absent (a source
build without a CUDA toolkit) or does not load, a CUDA kernel is registered in
its place that raises why, with the command that fixes it, instead of the
dispatcher's "could not run ... with arguments from the 'CUDA' backend".
"""
from __future__ import annotations

import importlib

import torch

from .. import _C
from .._version import __version__

OPS = ("interpolate_pos_embed", "interpolate_pos_embed_backward")
CUDA_MODULE = "vitpe_ext._C_cuda"

# The two ways to get the CUDA kernels: the wheel (built once, for every torch
# >= 2.11 with CUDA 13), or a source build against the installed torch.
INSTALL_WHEEL = f"pip install --force-reinstall --no-deps vitpe_ext-{__version__}-cp310-abi3-*.whl"
REBUILD = "VITPE_CUDA=1 pip install --no-build-isolation --force-reinstall --no-deps ."


def _load_cuda():
    """(the CUDA module or None, its state in a few words, the fix or "")."""
    if torch.version.cuda is None:
        return None, f"not loaded (torch {torch.__version__} is a CPU-only build)", ""
    nvcc = f"nvcc {torch.version.cuda.split('.')[0]}.x"
    try:
        module = importlib.import_module(CUDA_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name != CUDA_MODULE:
            raise
        return None, "not installed (this vitpe was built from source without a matching CUDA toolkit)", (
            f"Install the wheel, which has them: {INSTALL_WHEEL}; or rebuild in vitpe's source folder "
            f"with {nvcc} on PATH: {REBUILD}")
    except ImportError as exc:  # a dynamic-linker error: built for another torch or CUDA
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return None, f"not loaded ({reason})", (
            f"Rebuild them against torch {torch.__version__} in vitpe's source folder with {nvcc} on PATH: "
            f"{REBUILD}")
    _C._attach_cuda(module.device_memory)  # check_call then knows a CUDA device's memory, as the kernels do
    return module, "loaded", ""


cuda_module, cuda_state, cuda_fix = _load_cuda()


def _no_cuda_kernels(name):
    def kernel(*args, **kwargs):
        raise RuntimeError(f"{name}: vitpe's CUDA kernels are {cuda_state}. {cuda_fix}")
    return kernel


_library = None  # the placeholder kernels stay registered while this module lives
if cuda_module is None and torch.version.cuda is not None:
    _library = torch.library.Library("vitpe", "IMPL")
    for _op in OPS:
        _library.impl(_op, _no_cuda_kernels(_op), "CUDA")


def describe() -> str:
    """One line for `vitpe --version`: the versions, and whether CUDA tensors run."""
    return f"vitpe {__version__} (torch {torch.__version__}; CUDA kernels {cuda_state})"
