"""Build vitpe_ext: pure-C kernels (a static library compiled as C11 by the C
compiler, not by ninja's C++ rule) and a thin C++ shim on the LibTorch stable
ABI, as two Python extension modules of the limited API (one abi3 wheel for
CPython >= 3.10 and torch >= 2.11):

  vitpe_ext._C       schemas + CPU kernels; links libtorch only, so it loads
                     into CPU-only and CUDA torch alike
  vitpe_ext._C_cuda  the CUDA C kernels and their registration; links
                     libtorch_cuda (cudart statically), so vitpe_ext imports
                     it only when torch is a CUDA build (op/backends.py)

Switches (environment):
  VITPE_CUDA=1   build _C_cuda (fail if no toolkit matches torch)
  VITPE_CUDA=0   CPU only (_C alone)
  (unset)        _C_cuda when torch is a CUDA build and nvcc of the same major
                 version is found
  VITPE_DEBUG=1  -O0 -g
  TORCH_CUDA_ARCH_LIST  GPU architectures (default "8.0;9.0;10.0+PTX": SASS
                 for A100/A10/L4/RTX 30-40 (8.x), H100/H200, B200, and PTX
                 that the driver compiles for later GPUs)

Wheel and sdist: `python -m build --no-isolation` (make wheel); the version
is vitpe_ext/_version.py's, read by pyproject.toml.
"""
import glob
import os
import re
import shutil
import subprocess


def _toolkit_root():
    """A CUDA toolkit root (bin/nvcc and the cudart library), for CUDA_HOME.

    torch guesses CUDA_HOME as `which nvcc`/../.. , which is wrong where nvcc
    is a wrapper script (/usr/local/bin/nvcc -> exec /usr/local/cuda-13.0/...):
    the link then fails on -lcudart. Look where toolkits actually live."""
    nvcc = shutil.which("nvcc")
    candidates = [os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))] if nvcc else []
    candidates += ["/usr/local/cuda"] + sorted(glob.glob("/usr/local/cuda-*"), reverse=True)
    for root in candidates:
        if os.path.isfile(os.path.join(root, "bin", "nvcc")) and glob.glob(os.path.join(root, "lib64", "libcudart.so*")):
            return root
    return None


if not (os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")) and _toolkit_root():
    os.environ["CUDA_HOME"] = _toolkit_root()  # before torch.utils.cpp_extension reads it

from setuptools import setup  # noqa: E402
import torch  # noqa: E402
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension  # noqa: E402

# The oldest torch the binary loads into: the stable ABI keeps it valid for
# every later release (2.11 ... 2.14 and on).
TARGET_VERSION = "-DTORCH_TARGET_VERSION=0x020b000000000000"
DEBUG = os.environ.get("VITPE_DEBUG") == "1"
OPT = ["-O0", "-g"] if DEBUG else ["-O3"]


def nvcc_major():
    if CUDA_HOME is None:
        return None
    try:
        out = subprocess.run([os.path.join(CUDA_HOME, "bin", "nvcc"), "--version"],
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    m = re.search(r"release (\d+)\.", out)
    return int(m.group(1)) if m else None


def want_cuda():
    switch = os.environ.get("VITPE_CUDA")
    if switch == "0":
        return False
    torch_cuda = torch.version.cuda
    matches = torch_cuda is not None and nvcc_major() == int(torch_cuda.split(".")[0])
    if switch == "1" and not matches:
        if torch_cuda is None:
            fix = ("this torch is CPU-only: install a CUDA build of torch first, or build without the CUDA "
                   "module: VITPE_CUDA=0 pip install --no-build-isolation .")
        else:
            fix = (f"put nvcc {torch_cuda.split('.')[0]}.x on PATH (or CUDA_HOME=<its toolkit>), or build "
                   f"without the CUDA module: VITPE_CUDA=0 pip install --no-build-isolation .")
        raise RuntimeError(
            f"VITPE_CUDA=1 but no CUDA toolkit matches torch (torch.version.cuda={torch_cuda}, "
            f"CUDA_HOME={CUDA_HOME}, nvcc major={nvcc_major()}): {fix}")
    return matches


CUDA = want_cuda()
if CUDA:
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0;10.0+PTX")

# -ffp-contract=off: the tap formulas emulate ATen's float arithmetic step by
# step; a fused multiply-add would round differently.
C_FLAGS = OPT + ["-std=c11", "-fPIC", "-ffp-contract=off", "-Wall", "-Wextra"]
# The limited API of CPython 3.10: the wheel is tagged cp310-abi3 and loads
# into every later CPython.
CXX_FLAGS = OPT + ["-std=c++17", "-DPy_LIMITED_API=0x030A0000", TARGET_VERSION]
NVCC_FLAGS = OPT + ["-fmad=false", "-std=c++17"]

ext_modules = [CppExtension(
    "vitpe_ext._C", ["csrc/shim.cpp"],
    include_dirs=[os.path.abspath("csrc")],
    py_limited_api=True,
    extra_compile_args={"cxx": CXX_FLAGS},
)]
if CUDA:
    cuda = CUDAExtension(
        "vitpe_ext._C_cuda", ["csrc/shim_cuda.cpp", "csrc/vitpe_cuda.cu", "csrc/vitpe_cuda_plan.cu"],
        include_dirs=[os.path.abspath("csrc")],
        py_limited_api=True,
        extra_compile_args={"cxx": CXX_FLAGS + ["-DUSE_CUDA", "-DVITPE_WITH_CUDA"],
                            "nvcc": NVCC_FLAGS},
    )
    # The CUDA runtime linked in, not libcudart.so.13 as a dependency: the
    # module then loads beside any CUDA torch's own runtime (the kernels need
    # a driver of CUDA 13 or later, checked at the first call).
    cuda.libraries = ["cudart_static" if lib == "cudart" else lib for lib in cuda.libraries] + ["rt", "dl"]
    ext_modules.append(cuda)

setup(
    libraries=[("vitpe_kernels", {
        "sources": ["csrc/vitpe_plan.c", "csrc/vitpe_cpu.c", "csrc/vitpe_naive.c"],
        "include_dirs": ["csrc"],
        "cflags": C_FLAGS,
    })],
    ext_modules=ext_modules,
    cmdclass={"build_ext": BuildExtension},
    options={"bdist_wheel": {"py_limited_api": "cp310"}},
)
