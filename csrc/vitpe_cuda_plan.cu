/* vitpe_cuda_plan.cu — a plan's tap tables built on the device.
 *
 *   buffer  the layout of vitpe_plan_measure: per table t (0 H, 1 W forward;
 *           2 H, 3 W adjoint) start[n_out[t]], count[n_out[t]] (int64) and
 *           weight[n_out[t] x width[t]] (double), unused slots zero
 *
 * The same tables as the host's vitpe_plan_create, bit for bit: the tap
 * formulas are vitpe_taps.h's, __host__ __device__. Every ViT grid fills in
 * one block (vitpe__plan_fill_block_kernel); larger axes take one thread per
 * table row (vitpe__plan_fill_kernel). Stream-ordered, so a CUDA graph
 * captures the fill with the passes that read it.
 */
#include <cuda_runtime.h>
#include <stdint.h>

#include "vitpe.h"
#include "vitpe_taps.h"
#include "vitpe_cuda_plan.h"

/* A forward table of at most this width lets the adjoint threads recompute
 * forward weights themselves, so the whole plan fills in one launch. */
#define VITPE_FUSED_MAX_WIDTH 16

struct vitpe__fill_args {
    vitpe_plan_layout L;
    vitpe_axis ax[3];  /* H, W, T */
    int t_begin, t_end; /* tables [t_begin, t_end) of the layout */
    int adjoint_from_tables; /* 1: read forward windows and weights from the filled tables */
};

/* vitpe__axis_adjoint_range over a filled forward table instead of the tap
 * formulas: the same binary searches, over the stored windows. */
static __device__ int64_t vitpe__table_adjoint_range(const int64_t *start, const int64_t *count, int64_t n_out,
                                                     int64_t i, int64_t *first) {
    int64_t lo = 0, hi = n_out;
    while (lo < hi) { /* first o with window end > i */
        int64_t mid = lo + (hi - lo) / 2;
        if (start[mid] + count[mid] > i) hi = mid;
        else lo = mid + 1;
    }
    *first = lo;
    hi = n_out;
    while (lo < hi) { /* first o with window start > i */
        int64_t mid = lo + (hi - lo) / 2;
        if (start[mid] > i) hi = mid;
        else lo = mid + 1;
    }
    return lo - *first;
}

__global__ void vitpe__plan_fill_kernel(char *base, const vitpe__fill_args a) {
    int64_t total = 0;
    for (int t = a.t_begin; t < a.t_end; t++) total += a.L.n_out[t];
    for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < total;
         idx += (int64_t)gridDim.x * blockDim.x) {
        int t = a.t_begin;
        int64_t i = idx;
        while (i >= a.L.n_out[t]) i -= a.L.n_out[t++];
        const vitpe_axis *ax = &a.ax[t >= 4 ? 2 : t & 1];
        int64_t *start = (int64_t *)(base + a.L.start_offset[t]);
        int64_t *count = (int64_t *)(base + a.L.count_offset[t]);
        double *weight = (double *)(base + a.L.weight_offset[t]) + i * a.L.width[t];
        const int64_t width = a.L.width[t];
        if (t < 2 || t == 4) { /* forward: output i reads inputs start .. start+count-1 */
            int64_t s, n = vitpe__axis_taps(ax, i, &s, weight);
            for (int64_t k = n; k < width; k++) weight[k] = 0.0;
            start[i] = s;
            count[i] = n;
        } else { /* adjoint: input i is read by outputs first .. first+n-1 */
            const int f = t == 5 ? 4 : t - 2; /* its forward table */
            int64_t first, n = a.adjoint_from_tables
                                   ? vitpe__table_adjoint_range((const int64_t *)(base + a.L.start_offset[f]),
                                                                (const int64_t *)(base + a.L.count_offset[f]),
                                                                a.L.n_out[f], i, &first)
                                   : vitpe__axis_adjoint_range(ax, i, &first);
            if (n > width) n = width; /* cannot happen (width is the host's maximum of n); never write past */
            for (int64_t k = 0; k < n; k++) {
                const int64_t o = first + k;
                int64_t s, c;
                double wj = 0.0;
                if (a.adjoint_from_tables) {
                    s = ((const int64_t *)(base + a.L.start_offset[f]))[o];
                    c = ((const int64_t *)(base + a.L.count_offset[f]))[o];
                    if (i - s >= 0 && i - s < c)
                        wj = ((const double *)(base + a.L.weight_offset[f]))[o * a.L.width[f] + i - s];
                } else {
                    double w[VITPE_FUSED_MAX_WIDTH];
                    c = vitpe__axis_taps(ax, o, &s, w);
                    if (i - s >= 0 && i - s < c) wj = w[i - s];
                }
                weight[k] = wj;
            }
            for (int64_t k = n; k < width; k++) weight[k] = 0.0;
            start[i] = first;
            count[i] = n;
        }
    }
}

/* Forward and adjoint tables of both axes in one block, without the
 * adjoint's binary searches (each a serial chain of ~2 log2(n) tap
 * evaluations, all latency). Windows are monotone, so
 *   first(i) = min{o : end(o) > i}   is o for i in [end(o-1), end(o))
 *   lo(i)    = min{o : start(o) > i} is o for i in [start(o-1), start(o))
 * (the very definitions vitpe__axis_adjoint_range searches for), and each
 * forward tap (o, j) lands in adjoint slot (i = start(o)+j, k = o - first(i)),
 * exactly one writer per slot. Shared memory: 2 ints per output and per
 * input of each axis. */
#define VITPE_PLAN_BLOCK_THREADS 512
#define VITPE_PLAN_BLOCK_MAX_INTS (48 * 1024 / 4)

__global__ void __launch_bounds__(VITPE_PLAN_BLOCK_THREADS)
vitpe__plan_fill_block_kernel(char *base, const vitpe__fill_args a) {
    extern __shared__ int32_t vitpe__plan_smem[];
    const vitpe_plan_layout &L = a.L;
    int32_t *so[2], *eo[2], *fi[2], *lo[2];
    int32_t *p = vitpe__plan_smem;
    for (int x = 0; x < 2; x++) {
        so[x] = p; p += L.n_out[x];
        eo[x] = p; p += L.n_out[x];
        fi[x] = p; p += L.n_in[x];
        lo[x] = p; p += L.n_in[x];
    }
    const int64_t n0 = L.n_out[0], nf = L.n_out[0] + L.n_out[1];
    const int64_t m0 = L.n_in[0], nb = L.n_in[0] + L.n_in[1];
    /* 1. forward tables; window bounds to shared memory; adjoint defaults */
    for (int64_t idx = threadIdx.x; idx < nf; idx += blockDim.x) {
        const int x = idx < n0 ? 0 : 1;
        const int64_t o = x ? idx - n0 : idx, width = L.width[x];
        double *w = (double *)(base + L.weight_offset[x]) + o * width;
        int64_t s, n = vitpe__axis_taps(&a.ax[x], o, &s, w);
        for (int64_t k = n; k < width; k++) w[k] = 0.0;
        ((int64_t *)(base + L.start_offset[x]))[o] = s;
        ((int64_t *)(base + L.count_offset[x]))[o] = n;
        so[x][o] = (int32_t)s;
        eo[x][o] = (int32_t)(s + n);
    }
    for (int64_t idx = threadIdx.x; idx < nb; idx += blockDim.x) {
        const int x = idx < m0 ? 0 : 1;
        const int64_t i = x ? idx - m0 : idx;
        fi[x][i] = lo[x][i] = (int32_t)L.n_out[x]; /* past the last output */
    }
    for (int x = 0; x < 2; x++) {
        double *w = (double *)(base + L.weight_offset[2 + x]);
        for (int64_t k = threadIdx.x; k < L.n_out[2 + x] * L.width[2 + x]; k += blockDim.x) w[k] = 0.0;
    }
    __syncthreads();
    /* 2. first(i) and lo(i) by disjoint range writes */
    for (int64_t idx = threadIdx.x; idx < nf; idx += blockDim.x) {
        const int x = idx < n0 ? 0 : 1;
        const int64_t o = x ? idx - n0 : idx, m = L.n_in[x];
        const int64_t e_prev = o ? eo[x][o - 1] : 0, s_prev = o ? so[x][o - 1] : 0;
        for (int64_t i = e_prev; i < eo[x][o] && i < m; i++) fi[x][i] = (int32_t)o;
        for (int64_t i = s_prev; i < so[x][o] && i < m; i++) lo[x][i] = (int32_t)o;
    }
    __syncthreads();
    /* 3. adjoint windows; 4. forward weights into their adjoint slots */
    for (int64_t idx = threadIdx.x; idx < nb; idx += blockDim.x) {
        const int x = idx < m0 ? 0 : 1;
        const int64_t i = x ? idx - m0 : idx;
        int64_t n = (int64_t)lo[x][i] - fi[x][i];
        n = n < 0 ? 0 : (n > L.width[2 + x] ? L.width[2 + x] : n); /* never clamps: width is the maximum n */
        ((int64_t *)(base + L.start_offset[2 + x]))[i] = fi[x][i];
        ((int64_t *)(base + L.count_offset[2 + x]))[i] = n;
    }
    for (int64_t idx = threadIdx.x; idx < nf; idx += blockDim.x) {
        const int x = idx < n0 ? 0 : 1;
        const int64_t o = x ? idx - n0 : idx, wf = L.width[x], wa = L.width[2 + x];
        const double *w = (const double *)(base + L.weight_offset[x]) + o * wf;
        double *adj = (double *)(base + L.weight_offset[2 + x]);
        for (int64_t i = so[x][o]; i < eo[x][o] && i < L.n_in[x]; i++) {
            const int64_t k = o - fi[x][i];
            if (k >= 0 && k < wa) adj[i * wa + k] = w[i - so[x][o]];
        }
    }
}

/* An axis's sample positions are in host memory (vitpe_axis.positions); its
 * forward table is filled by launches that carry them in their parameters,
 * VITPE_POSITIONS_CHUNK outputs each, so the fill stays stream-ordered and
 * capturable, with no host-to-device copy. The adjoint is then built from the
 * filled table (adjoint_from_tables). */
#define VITPE_POSITIONS_CHUNK 384

struct vitpe__positions_args {
    size_t start_offset, count_offset, weight_offset;
    int64_t width, begin, n;
    vitpe_axis ax; /* its positions pointer is not read on the device */
    double p[VITPE_POSITIONS_CHUNK];
};

__global__ void vitpe__plan_fill_positions_kernel(char *base, const vitpe__positions_args a) {
    for (int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; k < a.n; k += (int64_t)gridDim.x * blockDim.x) {
        const int64_t o = a.begin + k;
        double *weight = (double *)(base + a.weight_offset) + o * a.width;
        int64_t s, n = vitpe__taps_at(&a.ax, a.p[k], &s, weight);
        for (int64_t j = n; j < a.width; j++) weight[j] = 0.0;
        ((int64_t *)(base + a.start_offset))[o] = s;
        ((int64_t *)(base + a.count_offset))[o] = n;
    }
}

static int vitpe__fill_positions(char *base, const vitpe_plan_layout *L, int t, const vitpe_axis *ax,
                                 cudaStream_t stream) {
    vitpe__positions_args a;
    a.start_offset = L->start_offset[t];
    a.count_offset = L->count_offset[t];
    a.weight_offset = L->weight_offset[t];
    a.width = L->width[t];
    a.ax = *ax;
    for (int64_t begin = 0; begin < ax->out_size; begin += VITPE_POSITIONS_CHUNK) {
        a.begin = begin;
        a.n = ax->out_size - begin < VITPE_POSITIONS_CHUNK ? ax->out_size - begin : VITPE_POSITIONS_CHUNK;
        for (int64_t k = 0; k < a.n; k++) a.p[k] = ax->positions[begin + k];
        vitpe__plan_fill_positions_kernel<<<(unsigned)((a.n + 127) / 128), 128, 0, stream>>>(base, a);
        if (cudaGetLastError() != cudaSuccess) return VITPE_ECUDA;
    }
    return VITPE_OK;
}

static int vitpe__launch_fill(char *base, const vitpe_plan_layout *L, const vitpe_axis *h,
                              const vitpe_axis *w, int t_begin, int t_end, int from_tables,
                              cudaStream_t stream, const vitpe_axis *t_axis = NULL) {
    vitpe__fill_args a;
    a.L = *L;
    a.ax[0] = *h;
    a.ax[1] = *w;
    a.ax[2] = t_axis ? *t_axis : *w;
    a.t_begin = t_begin;
    a.t_end = t_end;
    a.adjoint_from_tables = from_tables;
    int64_t total = 0;
    for (int t = t_begin; t < t_end; t++) total += L->n_out[t];
    if (total == 0) return VITPE_OK;
    const int threads = 128;
    int64_t blocks = (total + threads - 1) / threads;
    if (blocks > 65535) blocks = 65535; /* the kernel strides over the rest */
    vitpe__plan_fill_kernel<<<(unsigned)blocks, threads, 0, stream>>>(base, a);
    return cudaGetLastError() == cudaSuccess ? VITPE_OK : VITPE_ECUDA;
}

int vitpe__plan_fill_cuda(void *plan_buffer, const vitpe_plan_layout *layout, const vitpe_axis *h,
                          const vitpe_axis *w, cudaStream_t stream) {
    int st;
    if (!plan_buffer || !layout || !h || !w) return VITPE_EINVAL;
    if ((st = vitpe_axis_check(h)) || (st = vitpe_axis_check(w))) return st;
    if (layout->n_out[0] != h->out_size || layout->n_out[1] != w->out_size) return VITPE_EINVAL;
    cudaStream_t s = (cudaStream_t)stream;
    char *base = (char *)plan_buffer;
    if (layout->with_adjoint &&
        (layout->n_in[0] != h->in_size || layout->n_in[1] != w->in_size ||
         layout->n_out[2] != h->in_size || layout->n_out[3] != w->in_size))
        return VITPE_EINVAL;
    if (h->positions || w->positions) { /* forward tables, then the adjoint from them */
        for (int x = 0; x < 2; x++) {
            const vitpe_axis *ax = x ? w : h;
            st = ax->positions ? vitpe__fill_positions(base, layout, x, ax, s)
                               : vitpe__launch_fill(base, layout, h, w, x, x + 1, 0, s);
            if (st) return st;
        }
        return layout->with_adjoint ? vitpe__launch_fill(base, layout, h, w, 2, 4, 1, s) : VITPE_OK;
    }
    if (!layout->with_adjoint) return vitpe__launch_fill(base, layout, h, w, 0, 2, 0, s);
    const int64_t ints = 2 * (h->in_size + h->out_size + w->in_size + w->out_size);
    if (ints <= VITPE_PLAN_BLOCK_MAX_INTS) { /* every ViT grid: one block, one launch */
        vitpe__fill_args a;
        a.L = *layout;
        a.ax[0] = *h;
        a.ax[1] = *w;
        a.ax[2] = *w; /* unused: tables 0-3 */
        a.t_begin = 0;
        a.t_end = 4;
        a.adjoint_from_tables = 1;
        vitpe__plan_fill_block_kernel<<<1, VITPE_PLAN_BLOCK_THREADS, (size_t)ints * 4, s>>>(base, a);
        return cudaGetLastError() == cudaSuccess ? VITPE_OK : VITPE_ECUDA;
    }
    if (layout->width[0] <= VITPE_FUSED_MAX_WIDTH && layout->width[1] <= VITPE_FUSED_MAX_WIDTH)
        return vitpe__launch_fill(base, layout, h, w, 0, 4, 0, s);
    /* wide forward windows (strong antialiased shrinking, area): the adjoint
     * reads the forward tables, so it runs after them in stream order */
    if ((st = vitpe__launch_fill(base, layout, h, w, 0, 2, 0, s))) return st;
    return vitpe__launch_fill(base, layout, h, w, 2, 4, 1, s);
}

int vitpe__plan_fill_t_cuda(void *plan_buffer, const vitpe_plan_layout *layout, const vitpe_axis *t,
                            cudaStream_t stream) {
    int st;
    if (!plan_buffer || !layout || !t) return VITPE_EINVAL;
    if ((st = vitpe_axis_check(t))) return st;
    if (layout->n_out[4] != t->out_size || layout->n_in[4] != t->in_size) return VITPE_EINVAL;
    char *base = (char *)plan_buffer;
    /* the forward table, then the adjoint from it (stream order) */
    st = t->positions ? vitpe__fill_positions(base, layout, 4, t, stream)
                      : vitpe__launch_fill(base, layout, t, t, 4, 5, 0, stream, t);
    if (st) return st;
    if (!layout->with_adjoint) return VITPE_OK;
    if (layout->n_out[5] != t->in_size) return VITPE_EINVAL;
    return vitpe__launch_fill(base, layout, t, t, 5, 6, 1, stream, t);
}
