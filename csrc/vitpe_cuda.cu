/* vitpe_cuda.cu — the CUDA entry points of vitpe.h: the plan and the resize
 * passes on a CUDA device (kernels: vitpe_cuda_rows.cuh; the device plan
 * fill: vitpe_cuda_plan.cu).
 *
 *   inp  (B, P + Hin*Win,   C)   token-major, channel stride 1, device memory
 *   out  (B, P + Hout*Wout, C)
 *
 * Same algorithm and the same arithmetic as vitpe_cpu.c, so results agree
 * with the CPU op bit for bit (built with -fmad=false, like the host's
 * -ffp-contract=off; only lanczos3's sin() may differ in its last bit, and
 * the payload of a NaN rounded to float16/bfloat16):
 *
 *   tables the host plan's tables (vitpe_plan_create, cached by the caller)
 *          travel by value in the kernel's parameters, already in the
 *          layout the kernel keeps in shared memory: one launch a call, no
 *          device buffer, and a CUDA graph captures them with the kernel.
 *          Tables too big for that (or very wide grids, below) are rebuilt
 *          in a device workspace by a plan kernel, one thread per table row,
 *          with the very tap formulas of the host (vitpe_taps.h is
 *          __host__ __device__); stream-ordered, so graphs capture it too.
 *   rows   one block per (batch, output grid row, channel tile):
 *            H pass  tmp[ix, c] = sum_k wy[k] * inp[P + (sy+k)*Win + ix, c]  -> shared memory
 *            W pass  out[P + oy*Wout + ox, c] = sum_k wx[ox,k] * tmp[sx[ox]+k, c]
 *          threadIdx.x walks channels (V per thread, 16-byte accesses when the
 *          layout allows), threadIdx.y walks grid columns. Accumulation in
 *          float (double for float64), in tap order, one rounding on store.
 *   direct when the scratch row does not fit in shared memory (very wide
 *          grids), one thread per output vector recomputes its H-pass columns
 *          in registers: the same sums in the same order, just slower.
 *
 * Backward is the same engine over the adjoint tables: each dinp element is
 * gathered and written once by one thread, in a fixed order. No atomics, so
 * gradients are bitwise deterministic. Nothing here prints; every entry point
 * returns a vitpe_status (VITPE_ECUDA when a launch fails).
 */
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "vitpe.h"
#include "vitpe_taps.h"
#include "vitpe_cuda_plan.h"
#include "vitpe_cuda_rows.cuh"

/* The kernels' arguments for a plan's forward (t = 0) or adjoint (t = 2)
 * tables, with no device tables yet. */
static int vitpe__args(vitpe__rows_args *a, const vitpe_plan *plan, int t, const vitpe_io *io) {
    if (!plan || !io) return VITPE_EINVAL;
    if (t == 2 && !plan->layout.with_adjoint) return VITPE_EINVAL;
    if (io->dtype < VITPE_F32 || io->dtype > VITPE_BF16) return VITPE_EINVAL;
    if (io->batch < 0 || io->prefix < 0 || io->channels < 0) return VITPE_EINVAL;
    memset(a, 0, sizeof(*a));
    for (int x = 0; x < 2; x++) {
        vitpe__table *v = x ? &a->tw : &a->th;
        v->width = plan->layout.width[t + x];
        v->n_out = plan->layout.n_out[t + x];
        v->n_in = plan->layout.n_in[t + x];
        if (v->n_out < 1 || v->n_in < 1) return VITPE_EINVAL;
    }
    a->batch = io->batch;
    a->prefix = io->prefix;
    a->channels = io->channels;
    a->in_bs = io->in_batch_stride;
    a->in_ts = io->in_token_stride;
    a->out_bs = io->out_batch_stride;
    a->out_ts = io->out_token_stride;
    return VITPE_OK;
}

static int vitpe__needs_workspace(const vitpe__rows_args &a, int dtype) {
    switch (dtype) {
    case VITPE_F32: return vitpe__needs_device_tables<float, 4>(a);
    case VITPE_F64: return vitpe__needs_device_tables<double, 2>(a);
    default: return vitpe__needs_device_tables<float, 8>(a);
    }
}

extern "C" int vitpe_cuda_workspace_bytes(size_t *bytes, const vitpe_plan *plan, const vitpe_io *io,
                                          int backward) {
    vitpe__rows_args a;
    int st;
    if (!bytes) return VITPE_EINVAL;
    *bytes = 0;
    if ((st = vitpe__args(&a, plan, backward ? 2 : 0, io))) return st;
    if (vitpe__needs_workspace(a, io->dtype)) *bytes = plan->layout.bytes;
    return VITPE_OK;
}

static int vitpe__run(void *out, const void *inp, const vitpe_plan *plan, int backward,
                      const vitpe_io *io, void *workspace, void *stream) {
    const int t = backward ? 2 : 0;
    vitpe__rows_args a;
    int st;
    if ((st = vitpe__args(&a, plan, t, io))) return st;
    if (io->batch == 0 || io->channels == 0) return VITPE_OK;
    if (!out || !inp) return VITPE_EINVAL;
    cudaStream_t s = (cudaStream_t)stream;
    const vitpe_taps *th = backward ? &plan->adj_h : &plan->fwd_h;
    const vitpe_taps *tw = backward ? &plan->adj_w : &plan->fwd_w;
    if (vitpe__needs_workspace(a, io->dtype)) {
        if (!workspace) return VITPE_EINVAL;
        if ((st = vitpe__plan_fill_cuda(workspace, &plan->layout, &plan->h, &plan->w, s))) return st;
        a.th = vitpe__table_at(workspace, &plan->layout, t);
        a.tw = vitpe__table_at(workspace, &plan->layout, t + 1);
        th = tw = NULL;
    }
    switch (io->dtype) {
    case VITPE_F32: return vitpe__dispatch_vec<vitpe__f32, 4>(out, inp, a, th, tw, s);
    case VITPE_F64: return vitpe__dispatch_vec<vitpe__f64, 2>(out, inp, a, th, tw, s);
    case VITPE_F16: return vitpe__dispatch_vec<vitpe__f16, 8>(out, inp, a, th, tw, s);
    default: return vitpe__dispatch_vec<vitpe__bf16, 8>(out, inp, a, th, tw, s);
    }
}

extern "C" int vitpe_forward_cuda(void *out, const void *inp, const vitpe_plan *plan,
                                  const vitpe_io *io, void *workspace, void *stream) {
    return vitpe__run(out, inp, plan, 0, io, workspace, stream);
}

/* io's "in" strides describe dout, its "out" strides dinp. */
extern "C" int vitpe_backward_cuda(void *dinp, const void *dout, const vitpe_plan *plan,
                                   const vitpe_io *io, void *workspace, void *stream) {
    return vitpe__run(dinp, dout, plan, 1, io, workspace, stream);
}

/* Total memory of a device: the shim refuses outputs larger than this with a
 * clear message instead of asking the caching allocator for them. Read once
 * per device (cudaGetDeviceProperties takes milliseconds). */
extern "C" int vitpe_cuda_device_memory(size_t *bytes, int device) {
    static size_t cached[64];
    if (!bytes || device < 0) return VITPE_EINVAL;
    if (device < 64 && cached[device] > 0) {
        *bytes = cached[device];
        return VITPE_OK;
    }
    struct cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, device) != cudaSuccess) return VITPE_ECUDA;
    *bytes = prop.totalGlobalMem;
    if (device < 64) cached[device] = *bytes;
    return VITPE_OK;
}

/* Built for the same architectures as the passes: whether the driver holds an
 * image of it for a device is whether it holds one of theirs. */
__global__ void vitpe__probe_kernel(void) {}

/* After VITPE_ECUDA, the reason a user can act on: a driver older than this
 * runtime, or a GPU this build has no kernels for (the wheel's are for sm_80,
 * sm_90, sm_100 and PTX of compute_100). Writes "" when neither holds; the
 * CUDA runtime's own last error is left as it was found cleared. */
extern "C" void vitpe_cuda_diagnose(char *buf, size_t size, int device) {
    if (!buf || size == 0) return;
    buf[0] = '\0';
    int driver = 0, runtime = 0;
    cudaDriverGetVersion(&driver);
    cudaRuntimeGetVersion(&runtime);
    if (driver < runtime) {
        if (driver == 0)
            snprintf(buf, size, "no NVIDIA driver was found (vitpe's kernels need one for CUDA %d.%d or later)",
                     runtime / 1000, runtime % 1000 / 10);
        else
            snprintf(buf, size, "the NVIDIA driver supports CUDA %d.%d, vitpe's kernels need CUDA %d.%d or later: "
                     "install a newer NVIDIA driver", driver / 1000, driver % 1000 / 10, runtime / 1000,
                     runtime % 1000 / 10);
        cudaGetLastError();
        return;
    }
    struct cudaDeviceProp prop;
    struct cudaFuncAttributes attr;
    if (cudaGetDeviceProperties(&prop, device) == cudaSuccess &&
        cudaFuncGetAttributes(&attr, (const void *)vitpe__probe_kernel) != cudaSuccess)
        snprintf(buf, size, "this vitpe has no kernels for %s (compute capability %d.%d); build them for it in "
                 "vitpe's source folder: TORCH_CUDA_ARCH_LIST=%d.%d VITPE_CUDA=1 pip install --no-build-isolation "
                 "--force-reinstall --no-deps .", prop.name, prop.major, prop.minor, prop.major, prop.minor);
    cudaGetLastError();
}
