"""A ViT made dynamic with vitpe, deployed three ways and timed: eager PyTorch,
an AOTInductor package, and ONNX in onnxruntime.

The model is torchvision's vit_b_16 (random weights, nothing downloaded)
built at 224 and made dynamic (vitpe_ext.torchvision.make_dynamic), run at
--image-size (384: the table goes 14x14 -> 24x24 through the op). It is
exported once with dynamic batch, height and width; then
  - AOTInductor: torch._inductor.aoti_compile_and_package, loaded back with
    aoti_load_package (the op runs through the package's proxy executor);
  - ONNX: torch.onnx.export(dynamo=True), with the op translated by
    vitpe_ext.onnx (skipped, with the reason, where it is missing), run in
    onnxruntime on the CUDA provider when the device is cuda and the provider
    exists, else on the CPU provider.
Each backend is checked against eager (max abs difference on the same
input), then timed per batch: --warmup untimed calls, --iters timed ones
(CUDA events on the GPU, perf_counter on the CPU), median reported.

Eager runs under no_grad, where make_dynamic serves the resized table from
its cache; the compiled programs resize on every call (a few microseconds
on the GPU).

    python bench/deploy_bench.py                                  # H200: fp32 + bf16, batch 1 and 32
    python bench/deploy_bench.py --device cpu --batch 1 --iters 3 --tiny   # smoke test (tests/test_deploy.py)
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import torch
from torchvision.models.vision_transformer import VisionTransformer

import vitpe_ext  # noqa: F401  (registers torch.ops.vitpe.*)
from vitpe_ext.torchvision import make_dynamic

VIT_B_16 = dict(image_size=224, patch_size=16, num_layers=12, num_heads=12, hidden_dim=768, mlp_dim=3072)
TINY = dict(image_size=32, patch_size=8, num_layers=1, num_heads=2, hidden_dim=32, mlp_dim=64)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def build_model(tiny: bool, device: str, dtype: torch.dtype) -> torch.nn.Module:
    torch.manual_seed(0)
    model = VisionTransformer(**(TINY if tiny else VIT_B_16), num_classes=1000)
    with torch.no_grad():  # torchvision zeroes the head: logits would all be 0 and hide any difference
        model.heads.head.weight.normal_(0, 0.02)
    return make_dynamic(model).eval().to(device=device, dtype=dtype)


def dynamic_shapes(patch: int, max_batch: int, max_side: int):
    # H and W as multiples of the patch: make_dynamic checks divisibility,
    # which a plain Dim would turn into a guard
    grid = max(2, max_side // patch)
    return ({0: torch.export.Dim("batch", min=1, max=max_batch),
             2: patch * torch.export.Dim("gh", min=2, max=grid),
             3: patch * torch.export.Dim("gw", min=2, max=grid)},)


# -- backends ------------------------------------------------------------------------------

def compile_aoti(model, example, shapes, out_dir: str):
    """(callable, seconds to export + compile)."""
    start = time.perf_counter()
    program = torch.export.export(model, (example,), dynamic_shapes=shapes)
    path = torch._inductor.aoti_compile_and_package(
        program, package_path=os.path.join(out_dir, f"vit_{example.dtype}.pt2".replace("torch.", "")))
    seconds = time.perf_counter() - start
    return torch._inductor.aoti_load_package(path), seconds


def onnx_unavailable(dtype: torch.dtype):
    """Why ONNX is skipped, or None."""
    if dtype != torch.float32:
        return "fp32 only (numpy and onnxruntime's CPU kernels lack bf16)"
    try:
        import onnxruntime  # noqa: F401
        import vitpe_ext.onnx  # noqa: F401  (the op's ONNX translation; needs onnxscript)
    except ImportError as error:
        return f"cannot import {error.name or error}"
    return None


class OnnxRunner:
    """An onnxruntime session over the exported model. On CUDA the input and
    output stay on the GPU (I/O binding on torch's buffers), so the timing
    covers the session's work, not copies to the host."""

    def __init__(self, path: str, device: str):
        import onnxruntime as ort
        providers = ["CPUExecutionProvider"]
        if device == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(path, providers=providers)
        self.provider = self.session.get_providers()[0]
        self.on_gpu = self.provider == "CUDAExecutionProvider"
        self.input, self.output = self.session.get_inputs()[0].name, self.session.get_outputs()[0].name
        self.classes = self.session.get_outputs()[0].shape[1]  # (batch, classes): batch is symbolic

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not self.on_gpu:
            return torch.from_numpy(self.session.run(None, {self.input: x.cpu().numpy()})[0]).to(x.device)
        import numpy as np
        x = x.contiguous()
        out = torch.empty(x.shape[0], self.classes, device=x.device, dtype=x.dtype)
        binding = self.session.io_binding()
        binding.bind_input(self.input, "cuda", x.device.index or 0, np.float32, list(x.shape), x.data_ptr())
        binding.bind_output(self.output, "cuda", x.device.index or 0, np.float32, list(out.shape), out.data_ptr())
        torch.cuda.current_stream().synchronize()  # the session runs on its own stream
        self.session.run_with_iobinding(binding)
        return out


def export_onnx(model, example, shapes, out_dir: str, device: str):
    """(OnnxRunner, seconds to export)."""
    start = time.perf_counter()
    path = os.path.join(out_dir, "vit.onnx")
    with torch.no_grad():
        program = torch.onnx.export(model, (example,), dynamo=True, dynamic_shapes=shapes, optimize=True,
                                    verbose=False)
    program.save(path)
    seconds = time.perf_counter() - start
    return OnnxRunner(path, device), seconds


# -- timing --------------------------------------------------------------------------------

def median_ms(fn, x, warmup: int, iters: int) -> float:
    with torch.no_grad():
        for _ in range(warmup):
            fn(x)
        times = []
        for _ in range(iters):
            if x.is_cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn(x)
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
            else:
                start = time.perf_counter()
                fn(x)
                times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def max_abs_diff(got: torch.Tensor, want: torch.Tensor) -> float:
    return (got.float() - want.float()).abs().max().item()


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cuda", "cpu"])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--dtype", nargs="+", default=["fp32", "bf16"], choices=list(DTYPES))
    parser.add_argument("--image-size", type=int, default=None, help="square input side (default 384; --tiny 48)")
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--tiny", action="store_true", help="a 1-layer ViT at 48 px, for a CPU smoke test")
    parser.add_argument("--out-dir", default=None, help="keep the .pt2 and .onnx files here (default: a temp dir)")
    parser.add_argument("--skip", nargs="+", default=[], choices=["aoti", "onnx"],
                        help="leave a backend out: a crash in one (a segfault cannot be caught) "
                             "would take the others' rows with it")
    args = parser.parse_args(argv)
    if args.image_size is None:
        args.image_size = 48 if args.tiny else 384
    if args.iters < 1 or args.warmup < 0 or min(args.batch) < 1:
        parser.error("--iters and --batch must be >= 1, --warmup >= 0")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no GPU visible to torch")
    return args


def run(args) -> list:
    """Rows (dtype, batch, backend, median ms, images/s, max abs diff vs eager)."""
    rows = []
    patch = (TINY if args.tiny else VIT_B_16)["patch_size"]
    if args.image_size % patch:
        sys.exit(f"deploy_bench: --image-size {args.image_size} is not a multiple of the patch size {patch}")
    out_dir = args.out_dir or tempfile.mkdtemp(prefix="vitpe-deploy-")
    os.makedirs(out_dir, exist_ok=True)
    for dtype_name in args.dtype:
        dtype = DTYPES[dtype_name]
        model = build_model(args.tiny, args.device, dtype)
        shapes = dynamic_shapes(patch, max(64, max(args.batch)), max(args.image_size, 2 * patch))
        example = torch.randn(2, 3, args.image_size, args.image_size, device=args.device, dtype=dtype)
        backends = {"eager": model}
        if "aoti" not in args.skip:
            try:
                backends["aoti"], seconds = compile_aoti(model, example, shapes, out_dir)
                print(f"{dtype_name}: AOTInductor export + compile {seconds:.1f} s", flush=True)
            except Exception as error:  # reported, and the other backends still run
                print(f"{dtype_name}: AOTInductor failed: {type(error).__name__}: {str(error).splitlines()[0]}")
        reason = "--skip onnx" if "onnx" in args.skip else onnx_unavailable(dtype)
        if reason is None:
            try:
                backends["onnxruntime"], seconds = export_onnx(model, example, shapes, out_dir, args.device)
                print(f"{dtype_name}: ONNX export {seconds:.1f} s, onnxruntime on "
                      f"{backends['onnxruntime'].provider}", flush=True)
            except Exception as error:
                print(f"{dtype_name}: ONNX failed: {type(error).__name__}: {str(error).splitlines()[0]}")
        else:
            print(f"{dtype_name}: ONNX skipped: {reason}")
        for batch in args.batch:
            x = torch.randn(batch, 3, args.image_size, args.image_size, device=args.device, dtype=dtype)
            with torch.no_grad():
                want = model(x)
            for name, fn in backends.items():
                with torch.no_grad():
                    diff = 0.0 if name == "eager" else max_abs_diff(fn(x), want)
                ms = median_ms(fn, x, args.warmup, args.iters)
                rows.append((dtype_name, batch, name, ms, batch / ms * 1e3, diff))
    return rows


def format_rows(rows, args) -> str:
    model = "tiny ViT (1 layer, patch 8)" if args.tiny else "ViT-B/16 (torchvision, made dynamic at 224)"
    lines = [f"{model} at {args.image_size}x{args.image_size}, {args.device}, median of {args.iters} "
             f"(after {args.warmup} warmup)",
             f"{'dtype':<5} {'batch':>5}  {'backend':<12} {'ms':>10} {'img/s':>10} {'max|diff| vs eager':>19}"]
    for dtype, batch, name, ms, rate, diff in rows:
        lines.append(f"{dtype:<5} {batch:>5}  {name:<12} {ms:>10.3f} {rate:>10.1f} {diff:>19.3g}")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    print(format_rows(run(args), args))


if __name__ == "__main__":
    main()
