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
 *   grids  of rank 3 (vitpe_stages.h): the rows kernel over each T slice
 *          (slices), the T pass kernel over (H, W) slabs, or both, in stream
 *          order through float slabs in the workspace (half data: rows and
 *          T kernels read one type and write another); prefix and suffix
 *          tokens copied by the rows kernel or, where it does not run over
 *          the tensors, by a tokens kernel. Rank 1 and 2: one rows launch.
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
#include "vitpe_stages.h"
#include "vitpe_cuda_plan.h"
#include "vitpe_cuda_rows.cuh"

/* The rows kernel's arguments for a plan's forward (t = 0) or adjoint (t = 2)
 * H and W tables, with no device tables yet, over io's tensors as one
 * stage of one slice (the caller adjusts strides and slices per stage). */
static int vitpe__args(vitpe__rows_args *a, const vitpe_plan *plan, int t, const vitpe_io *io) {
    if (!plan || !io) return VITPE_EINVAL;
    if (t == 2 && !plan->layout.with_adjoint) return VITPE_EINVAL;
    if (io->dtype < VITPE_F32 || io->dtype > VITPE_BF16) return VITPE_EINVAL;
    if (io->batch < 0 || io->prefix < 0 || io->channels < 0 || io->suffix < 0) return VITPE_EINVAL;
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
    a->slices = 1;
    return VITPE_OK;
}

static int vitpe__needs_workspace(const vitpe__rows_args &a, int dtype) {
    switch (dtype) {
    case VITPE_F32: return vitpe__needs_device_tables<float, 4>(a);
    case VITPE_F64: return vitpe__needs_device_tables<double, 2>(a);
    default: return vitpe__needs_device_tables<float, 8>(a);
    }
}

static size_t vitpe__acc_bytes(int dtype) { return dtype == VITPE_F64 ? 8 : 4; }

/* Where a run keeps what it needs in device memory (vitpe_stages.h): the
 * plan's tables (where they do not travel inline), then, 256-byte aligned,
 * the slabs between two stages. */
struct vitpe__cuda_run {
    vitpe__staging s;
    int has_t;         /* a T stage runs */
    int device_tables;
    size_t mid_offset, bytes;
};

static int vitpe__cuda_plan_run(vitpe__cuda_run *r, const vitpe_plan *plan, const vitpe_io *io, int backward) {
    vitpe__rows_args a;
    int st;
    if ((st = vitpe__args(&a, plan, backward ? 2 : 0, io))) return st;
    if ((st = vitpe__stage(&r->s, plan, io->batch, backward))) return st;
    const int has_grid = r->s.kind[0] == VITPE__STAGE_GRID || r->s.count == 2;
    const int has_t = r->s.kind[0] == VITPE__STAGE_T || r->s.count == 2;
    r->has_t = has_t;
    vitpe__table tt;
    tt.n_out = r->s.tt->n_out;
    tt.width = r->s.tt->width;
    const int64_t t_bytes = io->dtype == VITPE_F64 ? vitpe__t_table_bytes<double>(tt) : vitpe__t_table_bytes<float>(tt);
    r->device_tables = (has_grid && vitpe__needs_workspace(a, io->dtype)) || (has_t && t_bytes > VITPE_INLINE_T);
    r->mid_offset = r->device_tables ? (plan->layout.bytes + 255) & ~(size_t)255 : 0;
    r->bytes = r->device_tables ? plan->layout.bytes : 0;
    if (r->s.count == 2) {
        int64_t n;
        if ((st = vitpe__mul64(&n, r->s.mid_t * r->s.mid_h, r->s.mid_w)) || (st = vitpe__mul64(&n, n, io->channels)) ||
            (st = vitpe__mul64(&n, n, io->batch)))
            return st;
        if ((uint64_t)n > (SIZE_MAX - r->mid_offset) / vitpe__acc_bytes(io->dtype)) return VITPE_EOVERFLOW;
        r->bytes = r->mid_offset + (size_t)n * vitpe__acc_bytes(io->dtype);
    }
    return VITPE_OK;
}

extern "C" int vitpe_cuda_workspace_bytes(size_t *bytes, const vitpe_plan *plan, const vitpe_io *io,
                                          int backward) {
    vitpe__cuda_run r;
    int st;
    if (!bytes) return VITPE_EINVAL;
    *bytes = 0;
    if ((st = vitpe__cuda_plan_run(&r, plan, io, backward))) return st;
    *bytes = r.bytes;
    return VITPE_OK;
}

/* A GRID stage (the rows kernel over slices) from TI to TO, or a T stage,
 * by dtype: the data type both sides, or (two stages of half data) the data
 * type on one side and float slabs on the other. */
template <typename TR, int V>
static int vitpe__grid_stage(void *out, const void *inp, const vitpe__rows_args &a, int in_slab, int out_slab,
                             const vitpe_taps *th, const vitpe_taps *tw, cudaStream_t s) {
    if (in_slab) return vitpe__dispatch_vec<vitpe__f32, V, TR>(out, inp, a, th, tw, s);
    if (out_slab) return vitpe__dispatch_vec<TR, V, vitpe__f32>(out, inp, a, th, tw, s);
    return vitpe__dispatch_vec<TR, V>(out, inp, a, th, tw, s);
}
template <typename TR, int V>
static int vitpe__t_stage(void *out, const void *inp, const vitpe__tpass_args &a, int in_slab, int out_slab,
                          const vitpe_taps *tt, cudaStream_t s) {
    if (in_slab) return vitpe__launch_tpass<vitpe__f32, V, TR>(out, inp, a, tt, s);
    if (out_slab) return vitpe__launch_tpass<TR, V, vitpe__f32>(out, inp, a, tt, s);
    return vitpe__launch_tpass<TR, V>(out, inp, a, tt, s);
}

static int vitpe__run(void *out, const void *inp, const vitpe_plan *plan, int backward,
                      const vitpe_io *io, void *workspace, void *stream) {
    const int t = backward ? 2 : 0;
    vitpe__rows_args a;
    vitpe__cuda_run r;
    int st;
    if ((st = vitpe__args(&a, plan, t, io))) return st;
    if ((st = vitpe__cuda_plan_run(&r, plan, io, backward))) return st;
    if (io->batch == 0 || io->channels == 0) return VITPE_OK;
    if (!out || !inp) return VITPE_EINVAL;
    if (r.bytes > 0 && !workspace) return VITPE_EINVAL;
    cudaStream_t s = (cudaStream_t)stream;
    const vitpe__staging &g = r.s;
    const vitpe_taps *th = g.th, *tw = g.tw, *tt = g.tt;
    vitpe__table dev_tt = {};
    if (r.device_tables) {
        if ((st = vitpe__plan_fill_cuda(workspace, &plan->layout, &plan->h, &plan->w, s))) return st;
        if (r.has_t && (st = vitpe__plan_fill_t_cuda(workspace, &plan->layout, &plan->t, s))) return st;
        a.th = vitpe__table_at(workspace, &plan->layout, t);
        a.tw = vitpe__table_at(workspace, &plan->layout, t + 1);
        dev_tt = vitpe__table_at(workspace, &plan->layout, backward ? 5 : 4);
        th = tw = tt = NULL;
    }
    const int dt = io->dtype;
    const int64_t es = dt == VITPE_F64 ? 8 : dt == VITPE_F32 ? 4 : 2;
    const int64_t P = io->prefix, C = io->channels, its = io->in_token_stride, ots = io->out_token_stride;
    a.suffix = io->suffix;
    char *mid = (char *)workspace + r.mid_offset;
    const int64_t slab = g.mid_h * g.mid_w;
    for (int stage = 0; stage < g.count; stage++) {
        /* the two sides of this stage (vitpe_stages.h): a tensor's grid, or the float slabs */
        const int in_slab = g.count == 2 && stage == 1, out_slab = g.count == 2 && stage == 0;
        const void *src = in_slab ? (const void *)mid : inp;
        void *dst = out_slab ? (void *)mid : out;
        const int64_t in_ts = in_slab ? C : its, out_ts = out_slab ? C : ots;
        const int64_t in_bs = in_slab ? g.mid_t * slab * C : io->in_batch_stride;
        const int64_t out_bs = out_slab ? g.mid_t * slab * C : io->out_batch_stride;
        const int64_t in_ss = (in_slab ? slab : g.th->n_in * g.tw->n_in) * in_ts;
        const int64_t out_ss = (out_slab ? slab : g.th->n_out * g.tw->n_out) * out_ts;
        if (g.kind[stage] == VITPE__STAGE_GRID) {
            vitpe__rows_args ga = a;
            ga.slices = g.count == 2 ? g.mid_t : g.tt->n_in;
            ga.batch = io->batch * ga.slices; /* rows over every slice */
            ga.in_bs = in_bs;
            ga.in_ts = in_ts;
            ga.in_ss = in_ss;
            ga.out_bs = out_bs;
            ga.out_ts = out_ts;
            ga.out_ss = out_ss;
            if (g.count == 2) { /* tokens are copied once, below; pointers at the grids */
                ga.prefix = ga.suffix = 0;
                if (!in_slab) src = (const char *)src + P * its * es;
                if (!out_slab) dst = (char *)dst + P * ots * es;
            }
            switch (dt) {
            case VITPE_F32: st = vitpe__dispatch_vec<vitpe__f32, 4>(dst, src, ga, th, tw, s); break;
            case VITPE_F64: st = vitpe__dispatch_vec<vitpe__f64, 2>(dst, src, ga, th, tw, s); break;
            case VITPE_F16: st = vitpe__grid_stage<vitpe__f16, 8>(dst, src, ga, in_slab, out_slab, th, tw, s); break;
            default: st = vitpe__grid_stage<vitpe__bf16, 8>(dst, src, ga, in_slab, out_slab, th, tw, s); break;
            }
        } else {
            vitpe__tpass_args ta;
            memset(&ta, 0, sizeof ta);
            ta.tt = dev_tt;
            ta.tt.n_out = tt ? tt->n_out : dev_tt.n_out;
            ta.tt.n_in = tt ? tt->n_in : dev_tt.n_in;
            ta.tt.width = tt ? tt->width : dev_tt.width;
            ta.batch = io->batch;
            ta.channels = C;
            ta.slab = g.count == 2 ? slab : g.th->n_out * g.tw->n_out;
            ta.in_bs = in_bs;
            ta.in_ts = in_ts;
            ta.in_ss = in_ss;
            ta.out_bs = out_bs;
            ta.out_ts = out_ts;
            ta.out_ss = out_ss;
            if (!in_slab) src = (const char *)src + P * its * es;
            if (!out_slab) dst = (char *)dst + P * ots * es;
            switch (dt) {
            case VITPE_F32: st = vitpe__launch_tpass<vitpe__f32, 4>(dst, src, ta, tt, s); break;
            case VITPE_F64: st = vitpe__launch_tpass<vitpe__f64, 2>(dst, src, ta, tt, s); break;
            case VITPE_F16: st = vitpe__t_stage<vitpe__f16, 8>(dst, src, ta, in_slab, out_slab, tt, s); break;
            default: st = vitpe__t_stage<vitpe__bf16, 8>(dst, src, ta, in_slab, out_slab, tt, s); break;
            }
        }
        if (st) return st;
    }
    /* a run whose rows kernel did not copy the prefix and suffix tokens */
    if (g.count == 2 || g.kind[0] == VITPE__STAGE_T) {
        const vitpe__tokens_args ka = {io->batch, P, io->suffix, C, io->in_batch_stride, its,
                                       io->out_batch_stride, ots, P + g.grid_in, P + g.grid_out};
        switch (dt) {
        case VITPE_F32: return vitpe__launch_tokens<float, 4>(out, inp, ka, s);
        case VITPE_F64: return vitpe__launch_tokens<double, 2>(out, inp, ka, s);
        default: return vitpe__launch_tokens<uint16_t, 8>(out, inp, ka, s);
        }
    }
    return VITPE_OK;
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
