"""What an installed vitpe is made of (issue #16): one version, the package
metadata, and which compiled modules a process loads.

vitpe_ext._C (schemas, CPU kernels) loads under every torch; vitpe_ext._C_cuda
(the CUDA kernels, linking libtorch_cuda) only under a CUDA torch; where it is
missing or fails to load, CUDA calls raise one line with the fix. Each check
that imports vitpe_ext runs in a child process, so that what the child loads
is what `import vitpe_ext` loads, and a blocked module stays blocked.
These tests run from the source tree and against an installed wheel
(scripts/wheel_matrix.sh), under CPU-only and CUDA torch alike.
"""
from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import textwrap

import pytest
import torch

import vitpe_ext
from vitpe_ext._version import __version__
from vitpe_ext.op import backends

# A child prelude: hides vitpe_ext._C_cuda from the import system as a build
# without it (ModuleNotFoundError) or a failing dynamic link (ImportError).
BLOCK = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "vitpe_ext._C_cuda":
            if KIND == "missing":
                raise ModuleNotFoundError("No module named 'vitpe_ext._C_cuda'", name=name)
            raise ImportError("libcudart.so.99: cannot open shared object file: No such file or directory")
sys.meta_path.insert(0, Block())
"""


def child(code: str, kind: str = "") -> str:
    prelude = f"KIND = {kind!r}\n" + (BLOCK if kind else "")
    proc = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # one kernel per key: the two modules never both register one
    assert "Overriding a previously registered kernel" not in proc.stderr, proc.stderr[-3000:]
    return proc.stdout


def test_one_version_everywhere():
    assert vitpe_ext.__version__ == __version__
    dist = importlib.metadata.version("vitpe-ext")  # the installed distribution's (wheel or editable)
    assert dist == __version__
    out = subprocess.run([sys.executable, "-m", "vitpe_ext", "--version"], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    line = out.stdout.strip()
    assert line.startswith(f"vitpe {__version__} (torch {torch.__version__}; CUDA kernels "), line
    assert "\n" not in line


def test_metadata_names_license_python_and_torch():
    meta = importlib.metadata.metadata("vitpe-ext")
    assert meta["Name"] == "vitpe-ext"
    assert meta["License-Expression"] == "BSD-3-Clause"
    assert meta["Requires-Python"] == ">=3.10"
    assert any(req.replace(" ", "").startswith("torch>=2.11") for req in meta.get_all("Requires-Dist"))
    files = importlib.metadata.files("vitpe-ext") or []
    assert any(f.name == "LICENSE" for f in files), "the distribution carries no LICENSE file"
    assert importlib.metadata.entry_points(group="console_scripts", name="vitpe")


def test_cuda_module_is_loaded_only_under_cuda_torch():
    out = child("""
        import sys, torch, vitpe_ext
        from vitpe_ext.op import backends
        maps = open("/proc/self/maps").read()
        has_cuda_kernel = torch._C._dispatch_has_kernel_for_dispatch_key(
            "vitpe::interpolate_pos_embed", "CUDA")
        print("loaded" if "vitpe_ext._C_cuda" in sys.modules else "absent",
              "_C_cuda" in maps, "libtorch_cuda" in maps, has_cuda_kernel, backends.cuda_state)
    """)
    module, mapped, torch_cuda_mapped, has_cuda_kernel, state = out.split(" ", 4)
    if torch.version.cuda is None:  # a CPU-only torch never touches the CUDA module
        assert (module, mapped, torch_cuda_mapped) == ("absent", "False", "False"), out
        assert has_cuda_kernel == "False"
        assert state.strip() == f"not loaded (torch {torch.__version__} is a CPU-only build)"
    else:  # every CUDA torch gets a CUDA kernel: the real one, or one that says how to get it
        assert has_cuda_kernel == "True"
        assert (module == "loaded") == (state.strip() == "loaded") == (backends.cuda_module is not None), out


@pytest.mark.skipif(torch.version.cuda is None, reason="a CPU-only torch cannot hold CUDA tensors")
@pytest.mark.parametrize("kind", ["missing", "broken"])
def test_cuda_call_without_cuda_module_says_how_to_get_it(kind):
    # Without a GPU the op's CUDA kernel is reached by redispatching to the
    # CUDA key (the placeholder kernel raises before it looks at the tensors).
    out = child("""
        import torch, vitpe_ext
        from vitpe_ext.op import backends
        assert backends.cuda_module is None
        x = torch.randn(1, 1 + 4 * 4, 8)
        keys = torch._C.DispatchKeySet(torch._C.DispatchKey.CUDA)
        for op, args in [(torch.ops.vitpe.interpolate_pos_embed.default, (x, [6, 6])),
                         (torch.ops.vitpe.interpolate_pos_embed_backward.default, (x[:, :37], 17, [6, 6]))]:
            try:
                op.redispatch(keys, *args)
            except RuntimeError as exc:
                print(str(exc))
            else:
                raise SystemExit("no error")
        if torch.cuda.is_available():  # the real path on a GPU machine
            try:
                vitpe_ext.interpolate_pos_embed(x.cuda(), (6, 6))
            except RuntimeError as exc:
                print(str(exc))
            else:
                raise SystemExit("no error on CUDA")
        print(vitpe_ext.interpolate_pos_embed(x, (6, 6)).shape)  # the CPU kernels are unaffected
    """, kind)
    lines = out.strip().splitlines()
    assert lines[-1] == "torch.Size([1, 37, 8])"
    for line in lines[:-1]:
        assert line.split(":")[0] in backends.OPS
        assert backends.REBUILD in line, line
        if kind == "missing":
            assert "CUDA kernels are not installed" in line and backends.INSTALL_WHEEL in line, line
        else:
            assert "CUDA kernels are not loaded (libcudart.so.99: cannot open shared object file" in line, line


@pytest.mark.skipif(backends.cuda_module is None, reason="no CUDA module here")
def test_check_call_knows_cuda_memory():
    # check_call lives in _C; the CUDA module hands it the device-memory
    # query, so a dry run refuses what the CUDA kernel would refuse.
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    with pytest.raises(ValueError, match="memory of the device"):
        vitpe_ext.ops.check_call([1, 197, 768], torch.float32, "cuda", [2**20, 2**20])


@pytest.mark.skipif(backends.cuda_module is None, reason="no CUDA module here")
def test_cuda_failure_is_explained():
    # What a CUDA error of the kernels is turned into: a driver older than the
    # kernels' CUDA, or a GPU without kernels in this build, each with its fix.
    import ctypes.util
    why = backends.cuda_module.diagnose(0)
    if torch.cuda.is_available():
        assert why == "", why  # this build runs here
    elif ctypes.util.find_library("cuda") is None:
        assert why.startswith("no NVIDIA driver was found (vitpe's kernels need one for CUDA 13."), why
