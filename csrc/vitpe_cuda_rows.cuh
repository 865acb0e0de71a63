/* vitpe_cuda_rows.cuh — the CUDA resize passes: kernels and their launchers
 * (internal: vitpe_cuda.cu, and the tuning bench bench/cuda_tuning.cu).
 *
 *   inp  (B, P + Hin*Win,   C)   token-major, channel stride 1, device memory
 *   out  (B, P + Hout*Wout, C)
 *
 *   vitpe__rows_kernel    one block per (batch, output grid row, channel tile):
 *     H pass  tmp[ix, c] = sum_k wy[k] * inp[P + (sy+k)*Win + ix, c]  -> shared memory
 *     W pass  out[P + oy*Wout + ox, c] = sum_k wx[ox,k] * tmp[sx[ox]+k, c]
 *   vitpe__direct_kernel  no shared memory: each output vector recomputes its
 *                         H-pass columns (grids too wide for the scratch row)
 *   vitpe__choose_grid    how a resize is cut into blocks
 *   vitpe__launch_rows_with, vitpe__dispatch_vec   the launchers
 *   vitpe__tpass_kernel   the T pass of a rank-3 grid (vitpe_stages.h): one
 *                         thread per output vector, sum over T slabs
 *   vitpe__tokens_kernel  prefix and suffix tokens, where no rows kernel copies them
 *
 * Accumulation in float (double for float64), in tap order, the first term
 * a product, one rounding on store: vitpe_cpu.c's arithmetic. Include after
 * vitpe.h and vitpe_taps.h, in CUDA C++.
 */
#ifndef VITPE_CUDA_ROWS_CUH
#define VITPE_CUDA_ROWS_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include <string.h>

#include <type_traits>

#include "vitpe.h"

/* ------------------------------------------------------------------------
 * Element types: storage T, accumulator ACC, exact widening on load, one
 * rounding on store (round to nearest even, as c10::Half / c10::BFloat16). */

struct vitpe__f32 {
    typedef float T;
    typedef float ACC;
    static __device__ __forceinline__ float load(float x) { return x; }
    static __device__ __forceinline__ float store(float a) { return a; }
};
struct vitpe__f64 {
    typedef double T;
    typedef double ACC;
    static __device__ __forceinline__ double load(double x) { return x; }
    static __device__ __forceinline__ double store(double a) { return a; }
};
struct vitpe__f16 {
    typedef uint16_t T;
    typedef float ACC;
    static __device__ __forceinline__ float load(uint16_t x) {
        return __half2float(__ushort_as_half(x));
    }
    static __device__ __forceinline__ uint16_t store(float a) {
        return __half_as_ushort(__float2half_rn(a));
    }
    /* two at once: one cvt.rn.f16x2.f32 */
    static __device__ __forceinline__ uint32_t store2(float lo, float hi) {
        __half2 h = __floats2half2_rn(lo, hi);
        return *(uint32_t *)&h;
    }
};
struct vitpe__bf16 {
    typedef uint16_t T;
    typedef float ACC;
    static __device__ __forceinline__ float load(uint16_t x) {
        return __uint_as_float((uint32_t)x << 16);
    }
    static __device__ __forceinline__ uint16_t store(float a) {
        return __bfloat16_as_ushort(__float2bfloat16_rn(a));
    }
    static __device__ __forceinline__ uint32_t store2(float lo, float hi) {
        __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
        return *(uint32_t *)&h;
    }
};

/* V consecutive elements, aligned so one access moves them all (16 bytes at
 * the widest V). */
template <typename T, int V>
struct alignas(sizeof(T) * V) vitpe__vec {
    T v[V];
};

/* One tap table on the device. */
struct vitpe__table {
    const int64_t *start, *count;
    const double *weight;
    int64_t width, n_out, n_in;
};

struct vitpe__rows_args {
    vitpe__table th, tw; /* H (rows) and W (columns); pointers unused with inline tables */
    int64_t batch, prefix, channels;
    int64_t in_bs, in_ts, out_bs, out_ts; /* batch/token strides, in elements */
    /* Each table holds `slices` grids (T slices of a rank-3 grid; 1 below),
     * in_ss/out_ss elements apart: row r is slice b % slices of table
     * b / slices, b = r / th.n_out (batch counts slices). The suffix tokens
     * follow the last slice and are copied with the prefix (one type in and
     * out only). */
    int64_t slices, in_ss, out_ss, suffix;
};

/* The tables of both axes carried by value in the launch's parameters, in
 * the very layout the rows kernel keeps them in shared memory (after the
 * scratch row):
 *   wh  out_h x hwidth weights, ww  out_w x wwidth weights  (ACC)
 *   sh, nh  out_h windows, sw, nw  out_w windows            (int32)
 * Built on the host from the (cached) host plan, so a call needs no device
 * buffer and no plan kernel: one launch, and a CUDA graph captures the
 * tables inside the kernel node. CAP bytes; 0 = the tables are in device
 * memory (a.th/a.tw), built there by vitpe__plan_fill_cuda. */
template <int CAP>
struct alignas(16) vitpe__inline_tables {
    unsigned char bytes[CAP];
};
template <>
struct alignas(16) vitpe__inline_tables<0> {
    unsigned char unused[16];
};
#define VITPE_INLINE_SMALL 2048
/* All parameters within the classic 4 KB (the others take < 256 B), so no
 * launch depends on CUDA 12.1's large parameters; that covers every ViT grid
 * up to DINOv2-g's 37 -> 73 (3.5 KB), and bigger tables take the workspace.
 * Two sizes because a launch copies the whole block: 2 KB serves ViT-B/L. */
#define VITPE_INLINE_LARGE 3840
static_assert(sizeof(vitpe__rows_args) + VITPE_INLINE_LARGE + 64 <= 4096,
              "the rows kernel's parameters must fit in 4 KB");

/* acc = sum_k w[k] * src[k*stride], k in order, first term not added to 0
 * (so a -0.0 product stays -0.0, as on the CPU); n == 0 gives zeros. Taps
 * are loaded four at a time before any is used, so four loads are in
 * flight per thread whatever the compiler makes of a run-time trip count. */
template <typename TR, int V, typename WT>
__device__ __forceinline__ void vitpe__hsum(typename TR::ACC (&acc)[V], const typename TR::T *src,
                                            int64_t stride, const WT *w, int64_t n) {
    typedef typename TR::ACC ACC;
    typedef vitpe__vec<typename TR::T, V> VT;
#pragma unroll
    for (int j = 0; j < V; j++) acc[j] = (ACC)0;
    for (int64_t k0 = 0; k0 < n; k0 += 4) {
        VT x[4];
        ACC wk[4];
#pragma unroll
        for (int q = 0; q < 4; q++)
            if (k0 + q < n) {
                x[q] = *(const VT *)(src + (k0 + q) * stride);
                wk[q] = (ACC)w[k0 + q];
            }
#pragma unroll
        for (int q = 0; q < 4; q++)
            if (k0 + q < n) {
                if (k0 + q == 0) {
#pragma unroll
                    for (int j = 0; j < V; j++) acc[j] = wk[q] * TR::load(x[q].v[j]);
                } else {
#pragma unroll
                    for (int j = 0; j < V; j++) acc[j] += wk[q] * TR::load(x[q].v[j]);
                }
            }
    }
}

template <typename TR, int V>
__device__ __forceinline__ void vitpe__store_vec(typename TR::T *dst, const typename TR::ACC (&acc)[V]) {
    typedef typename TR::T T;
    if constexpr (sizeof(T) == 2 && V % 2 == 0) { /* half types: convert in pairs */
        vitpe__vec<uint32_t, V / 2> y;
#pragma unroll
        for (int j = 0; j < V / 2; j++) y.v[j] = TR::store2(acc[2 * j], acc[2 * j + 1]);
        *(vitpe__vec<uint32_t, V / 2> *)dst = y;
    } else {
        vitpe__vec<T, V> y;
#pragma unroll
        for (int j = 0; j < V; j++) y.v[j] = TR::store(acc[j]);
        *(vitpe__vec<T, V> *)dst = y;
    }
}

/* Token p of the prefix and suffix tokens (p < prefix + suffix) of table b,
 * channels [c, c + V): copied. The suffix follows the grid's slices. */
template <typename TR, int V>
__device__ __forceinline__ void vitpe__copy_token(typename TR::T *dst, const typename TR::T *src,
                                                  const vitpe__rows_args &a, int64_t b, int64_t c,
                                                  int64_t p) {
    typedef vitpe__vec<typename TR::T, V> VT;
    const int64_t pi = p < a.prefix ? p : p + a.slices * a.th.n_in * a.tw.n_in;
    const int64_t po = p < a.prefix ? p : p + a.slices * a.th.n_out * a.tw.n_out;
    *(VT *)(dst + b * a.out_bs + po * a.out_ts + c) = *(const VT *)(src + b * a.in_bs + pi * a.in_ts + c);
}

/* Block (x: channel vectors, y: grid columns) per (batch*row, channel tile);
 * a grid smaller than the rows strides over them. Shared memory
 * (vitpe__rows_smem):
 *   tmp    the scratch row, n_in(W) columns x (blockDim.x * V) channels
 *   then, with device tables (the workspace path), the tables narrowed once
 *   per block, so that the taps cost one 32-bit shared load each instead of
 *   64-bit global loads and double->float conversions, in the layout the
 *   inline tables already have:
 *   wh, ww both axes' weights, in the accumulator type
 *   sh/nh, sw/nw  both axes' windows as int32
 * (The size counts the tables either way: inline tables leave it unused.) */
template <typename ACC>
__host__ __device__ static inline int64_t vitpe__table_bytes(const vitpe__rows_args &a) {
    return (a.th.n_out * a.th.width + a.tw.n_out * a.tw.width) * (int64_t)sizeof(ACC) +
           2 * (a.th.n_out + a.tw.n_out) * (int64_t)sizeof(int32_t);
}
template <typename ACC, int V>
__host__ __device__ static inline int64_t vitpe__rows_smem(const vitpe__rows_args &a, int64_t tx) {
    return a.tw.n_in * tx * V * (int64_t)sizeof(ACC) + vitpe__table_bytes<ACC>(a);
}

/* Register cap of 64 (4 blocks of 256 threads per SM): the kernel is latency
 * bound, so occupancy pays, up to where a tighter cap starts to spill. */
#define VITPE_ROWS_MIN_BLOCKS 4
/* TR reads, TRO writes (the GRID stages of a rank-3 run on half data read
 * or write float slabs); both have the same ACC. */
template <typename TR, int V, int CAP, typename TRO = TR>
__global__ void __launch_bounds__(256, VITPE_ROWS_MIN_BLOCKS)
vitpe__rows_kernel(typename TRO::T *__restrict__ out, const typename TR::T *__restrict__ inp,
                   const vitpe__rows_args a,
                   const __grid_constant__ vitpe__inline_tables<CAP> tables) {
    typedef typename TR::T T;
    typedef typename TRO::T TO;
    typedef typename TR::ACC ACC;
    constexpr bool same = std::is_same<TR, TRO>::value;
    /* The scratch row holds a thread's V accumulators as NP planes of at most
     * 16 bytes, tmp[(ix * NP + p) * TX + tx]: a warp reads or writes one plane
     * as 512 contiguous bytes, which shared memory serves without bank
     * conflicts. (One 32-byte vector per thread -- 8 floats, the half types --
     * is accessed at a 32-byte stride: twice the shared-memory wavefronts,
     * and the W pass is bound by them.) */
    constexpr int NP = sizeof(ACC) * V > 16 ? (int)(sizeof(ACC) * V / 16) : 1, VP = V / NP;
    typedef vitpe__vec<ACC, VP> VQ;
    extern __shared__ __align__(16) unsigned char vitpe__smem[];
    const int tx = threadIdx.x, ty = threadIdx.y, TX = blockDim.x, TY = blockDim.y;
    const int64_t C = a.channels, P = a.prefix;
    const int64_t in_w = a.tw.n_in, out_h = a.th.n_out, out_w = a.tw.n_out;
    const int hwidth = (int)a.th.width, wwidth = (int)a.tw.width;
    VQ *tmp = (VQ *)vitpe__smem;
    ACC *wh = (ACC *)(tmp + in_w * NP * TX), *ww = wh + out_h * hwidth;
    int32_t *sh = (int32_t *)(ww + out_w * wwidth), *nh = sh + out_h, *sw = nh + out_h, *nw = sw + out_w;
    if constexpr (CAP > 0) {
        /* Inline tables are read where they are, in the parameter space:
         * every read is uniform across a warp (one output row's H taps; one
         * output column's W taps while a warp spans one threadIdx.y), which
         * the constant cache broadcasts; a copy to shared memory first would
         * cost a block-wide pass of diverging reads before any work. */
        wh = (ACC *)tables.bytes;
        ww = wh + out_h * hwidth;
        sh = (int32_t *)(ww + out_w * wwidth);
        nh = sh + out_h;
        sw = nh + out_h;
        nw = sw + out_w;
    } else { /* device tables: int64/double, narrowed once per block */
        const int t = ty * TX + tx, nt = TX * TY;
        for (int64_t i = t; i < out_h * hwidth; i += nt) wh[i] = (ACC)a.th.weight[i];
        for (int64_t i = t; i < out_w * wwidth; i += nt) ww[i] = (ACC)a.tw.weight[i];
        for (int64_t i = t; i < out_h; i += nt) {
            sh[i] = (int32_t)a.th.start[i];
            nh[i] = (int32_t)a.th.count[i];
        }
        for (int64_t i = t; i < out_w; i += nt) {
            sw[i] = (int32_t)a.tw.start[i];
            nw[i] = (int32_t)a.tw.count[i];
        }
        __syncthreads();
    }

    const int64_t rows = a.batch * out_h, tile_ch = (int64_t)TX * V;
    const int64_t tiles = (C + tile_ch - 1) / tile_ch;
    const int64_t row_stride = in_w * a.in_ts; /* one input grid row */
    for (int64_t tile = blockIdx.y; tile < tiles; tile += gridDim.y) {
        const int64_t c = tile * tile_ch + (int64_t)tx * V;
        const bool active = c < C; /* C is a multiple of V */
        for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
            const int64_t b = r / out_h;
            const int oy = (int)(r - b * out_h);
            const int64_t bo = a.slices == 1 ? b : b / a.slices, bs = b - bo * a.slices;
            if constexpr (same) /* prefix and suffix tokens pass through, bit for bit */
                if (oy == 0 && bs == 0 && active)
                    for (int64_t p = ty; p < P + a.suffix; p += TY)
                        vitpe__copy_token<TR, V>((T *)out, inp, a, bo, c, p);
            /* H pass: this row's vertical taps, every input column */
            const ACC *wy = wh + oy * hwidth;
            const int ny = nh[oy];
            const T *src = inp + bo * a.in_bs + bs * a.in_ss + (P + (int64_t)sh[oy] * in_w) * a.in_ts + c;
            if (active)
                for (int ix = ty; ix < in_w; ix += TY) {
                    ACC acc[V];
                    vitpe__hsum<TR, V, ACC>(acc, src + ix * a.in_ts, row_stride, wy, ny);
#pragma unroll
                    for (int p = 0; p < NP; p++) {
                        VQ t;
#pragma unroll
                        for (int j = 0; j < VP; j++) t.v[j] = acc[p * VP + j];
                        tmp[(ix * NP + p) * TX + tx] = t;
                    }
                }
            __syncthreads();
            /* W pass: horizontal taps from the scratch row into the output row */
            TO *drow = out + bo * a.out_bs + bs * a.out_ss + (P + (int64_t)oy * out_w) * a.out_ts + c;
            if (active)
                for (int ox = ty; ox < out_w; ox += TY) {
                    const int sx = sw[ox], nx = nw[ox];
                    const ACC *wx = ww + ox * wwidth;
                    const VQ *trow = tmp + sx * NP * TX + tx;
                    ACC acc[V];
#pragma unroll
                    for (int j = 0; j < V; j++) acc[j] = (ACC)0;
                    for (int k0 = 0; k0 < nx; k0 += 4) {
#pragma unroll
                        for (int q = 0; q < 4; q++)
                            if (k0 + q < nx) {
                                const ACC wk = wx[k0 + q];
#pragma unroll
                                for (int p = 0; p < NP; p++) {
                                    const VQ t = trow[((k0 + q) * NP + p) * TX];
                                    if (k0 + q == 0) {
#pragma unroll
                                        for (int j = 0; j < VP; j++) acc[p * VP + j] = wk * t.v[j];
                                    } else {
#pragma unroll
                                        for (int j = 0; j < VP; j++) acc[p * VP + j] += wk * t.v[j];
                                    }
                                }
                            }
                    }
                    vitpe__store_vec<TRO, V>(drow + ox * a.out_ts, acc);
                }
            __syncthreads(); /* the next row overwrites tmp */
        }
    }
}

/* No shared memory: one thread per (prefix/suffix token or output token,
 * channel vector); each recomputes the H-pass values of its W taps. Same
 * sums, same order, same roundings as the rows kernel. */
template <typename TR, int V, typename TRO = TR>
__global__ void __launch_bounds__(256)
vitpe__direct_kernel(typename TRO::T *__restrict__ out, const typename TR::T *__restrict__ inp,
                     const vitpe__rows_args a) {
    typedef typename TR::T T;
    typedef typename TR::ACC ACC;
    constexpr bool same = std::is_same<TR, TRO>::value;
    const int64_t C = a.channels, P = a.prefix, ncv = C / V, copied = same ? P + a.suffix : 0;
    const int64_t in_w = a.tw.n_in, out_h = a.th.n_out, out_w = a.tw.n_out;
    const int64_t tables = a.batch / a.slices; /* a.batch counts slices */
    const int64_t n_tokens = tables * copied * ncv, total = n_tokens + a.batch * out_h * out_w * ncv;
    for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < total;
         idx += (int64_t)gridDim.x * blockDim.x) {
        if (idx < n_tokens) {
            if constexpr (same) {
                const int64_t c = (idx % ncv) * V, bp = idx / ncv;
                vitpe__copy_token<TR, V>((T *)out, inp, a, bp / copied, c, bp % copied);
            }
            continue;
        }
        int64_t i = idx - n_tokens;
        const int64_t c = (i % ncv) * V;
        i /= ncv;
        const int64_t ox = i % out_w;
        i /= out_w;
        const int64_t oy = i % out_h, b = i / out_h;
        const int64_t bo = b / a.slices, bs = b - bo * a.slices;
        const int64_t sy = __ldg(a.th.start + oy), ny = __ldg(a.th.count + oy);
        const int64_t sx = __ldg(a.tw.start + ox), nx = __ldg(a.tw.count + ox);
        const double *wy = a.th.weight + oy * a.th.width, *wx = a.tw.weight + ox * a.tw.width;
        const T *src = inp + bo * a.in_bs + bs * a.in_ss + (P + sy * in_w) * a.in_ts + c;
        ACC acc[V], t[V];
        if (nx == 0) {
#pragma unroll
            for (int j = 0; j < V; j++) acc[j] = (ACC)0;
        }
        for (int64_t k = 0; k < nx; k++) {
            vitpe__hsum<TR, V, double>(t, src + (sx + k) * a.in_ts, in_w * a.in_ts, wy, ny);
            const ACC wk = (ACC)__ldg(wx + k);
#pragma unroll
            for (int j = 0; j < V; j++) acc[j] = k == 0 ? wk * t[j] : acc[j] + wk * t[j];
        }
        vitpe__store_vec<TRO, V>(out + bo * a.out_bs + bs * a.out_ss + (P + oy * out_w + ox) * a.out_ts + c, acc);
    }
}

/* Scratch rows above this go to the direct kernel: every H100/A100 block may
 * use it without opting in (cudaFuncSetAttribute), which keeps launches plain. */
#define VITPE_SMEM_LIMIT (48 * 1024)
#define VITPE_TY 8

static int64_t vitpe__pow2_ceil(int64_t x) {
    int64_t p = 1;
    while (p < x) p <<= 1;
    return p;
}

static int vitpe__sm_count(int *sms) {
    /* per device, read once: cudaDeviceGetAttribute is cheap but not free */
    static int cached[64];
    int device = 0;
    if (cudaGetDevice(&device) != cudaSuccess) return VITPE_ECUDA;
    if (device >= 0 && device < 64 && cached[device] > 0) {
        *sms = cached[device];
        return VITPE_OK;
    }
    if (cudaDeviceGetAttribute(sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess)
        return VITPE_ECUDA;
    if (device >= 0 && device < 64) cached[device] = *sms;
    return VITPE_OK;
}

/* How a resize is cut into blocks. */
struct vitpe__grid_plan {
    int64_t tx; /* channel vectors per block (blockDim.x) */
    int64_t ty; /* grid columns in flight per block (blockDim.y) */
    int direct; /* 1: the scratch row does not fit, use the direct kernel */
};

/* The scratch row does not fit shared memory even at the narrowest channel
 * tile: the direct kernel (device tables) runs instead. */
template <typename ACC, int V>
static int vitpe__direct_needed(const vitpe__rows_args &a) {
    const int64_t ncv = a.channels / V;
    int64_t tx = ncv < 32 ? vitpe__pow2_ceil(ncv) : 32;
    while (tx > 4 && vitpe__rows_smem<ACC, V>(a, tx) > VITPE_SMEM_LIMIT) tx >>= 1;
    return vitpe__rows_smem<ACC, V>(a, tx) > VITPE_SMEM_LIMIT;
}

/* Whether a resize needs its tables in device memory (a workspace): the
 * direct kernel reads them there, and tables past the parameter budget
 * cannot travel inline. Decided at the widest V, the conservative case (a
 * narrower V only shrinks the scratch row). */
template <typename ACC, int VMAX>
static int vitpe__needs_device_tables(const vitpe__rows_args &a) {
    return vitpe__direct_needed<ACC, VMAX>(a) || vitpe__table_bytes<ACC>(a) > VITPE_INLINE_LARGE;
}

template <typename TR, int V>
static vitpe__grid_plan vitpe__choose_grid(const vitpe__rows_args &a, int sms) {
    typedef typename TR::ACC ACC;
    const int64_t ncv = a.channels / V, rows = a.batch * a.th.n_out;
    vitpe__grid_plan g;
    /* Channel tile: a warp's worth of vectors, fewer when C is small; halved
     * while the scratch row is too big for shared memory, and (down to 8
     * vectors) while the grid would leave SMs idle (small tables). */
    g.tx = ncv < 32 ? vitpe__pow2_ceil(ncv) : 32;
    while (g.tx > 4 && vitpe__rows_smem<ACC, V>(a, g.tx) > VITPE_SMEM_LIMIT) g.tx >>= 1;
    while (g.tx > 8 && rows * ((ncv + g.tx - 1) / g.tx) < 2 * (int64_t)sms) g.tx >>= 1;
    g.direct = vitpe__direct_needed<ACC, V>(a);
    /* Columns in flight (blockDim.y): 8, doubled while the grid is too small
     * to fill the GPU and a row still has columns for them (small grids,
     * e.g. the ViT-B backward with 14 rows). One output row per block: the
     * scratch row is refilled per row anyway, and more blocks fill more SMs. */
    const int64_t tiles = (ncv + g.tx - 1) / g.tx;
    const int64_t widest = a.tw.n_in > a.tw.n_out ? a.tw.n_in : a.tw.n_out;
    g.ty = VITPE_TY;
    while (g.tx * g.ty * 2 <= 256 && 2 * g.ty <= widest / 2 &&
           rows * tiles * g.tx * g.ty < (int64_t)sms * 1024)
        g.ty *= 2;
    return g;
}

/* Copies a host plan's two tables into the parameter block, in the rows
 * kernel's shared-memory layout; weights rounded to ACC as the kernel's
 * own staging of device tables does. */
template <typename ACC, int CAP>
static void vitpe__pack_tables(vitpe__inline_tables<CAP> &p, const vitpe_taps *th, const vitpe_taps *tw) {
    unsigned char *q = p.bytes;
    const vitpe_taps *t[2] = {th, tw};
    for (int x = 0; x < 2; x++)
        for (int64_t i = 0; i < t[x]->n_out * t[x]->width; i++, q += sizeof(ACC)) {
            const ACC v = (ACC)t[x]->weight[i];
            memcpy(q, &v, sizeof v);
        }
    for (int x = 0; x < 2; x++) {
        for (int64_t i = 0; i < t[x]->n_out; i++, q += 4) {
            const int32_t v = (int32_t)t[x]->start[i];
            memcpy(q, &v, 4);
        }
        for (int64_t i = 0; i < t[x]->n_out; i++, q += 4) {
            const int32_t v = (int32_t)t[x]->count[i];
            memcpy(q, &v, 4);
        }
    }
}

/* th/tw: the host tables to send inline, or NULL when a.th/a.tw point to
 * device tables. */
template <typename TR, int V, typename TRO = TR>
static int vitpe__launch_rows_with(void *out, const void *inp, const vitpe__rows_args &a,
                                   const vitpe__grid_plan &g, const vitpe_taps *th,
                                   const vitpe_taps *tw, cudaStream_t stream) {
    typedef typename TR::T T;
    typedef typename TRO::T TO;
    typedef typename TR::ACC ACC;
    const int64_t ncv = a.channels / V, rows = a.batch * a.th.n_out;
    const int64_t smem = vitpe__rows_smem<ACC, V>(a, g.tx);
    const bool inline_tables = th && tw;
    if (!g.direct && smem <= VITPE_SMEM_LIMIT) {
        const int64_t tiles = (ncv + g.tx - 1) / g.tx;
        dim3 grid((unsigned)(rows < 0x7fffffff ? rows : 0x7fffffff),
                  (unsigned)(tiles < 65535 ? tiles : 65535));
        dim3 block((unsigned)g.tx, (unsigned)g.ty);
        const int64_t table_bytes = vitpe__table_bytes<ACC>(a);
        if (inline_tables && table_bytes <= VITPE_INLINE_SMALL) {
            vitpe__inline_tables<VITPE_INLINE_SMALL> p;
            vitpe__pack_tables<ACC>(p, th, tw);
            vitpe__rows_kernel<TR, V, VITPE_INLINE_SMALL, TRO><<<grid, block, (size_t)smem, stream>>>(
                (TO *)out, (const T *)inp, a, p);
        } else if (inline_tables && table_bytes <= VITPE_INLINE_LARGE) {
            vitpe__inline_tables<VITPE_INLINE_LARGE> p;
            vitpe__pack_tables<ACC>(p, th, tw);
            vitpe__rows_kernel<TR, V, VITPE_INLINE_LARGE, TRO><<<grid, block, (size_t)smem, stream>>>(
                (TO *)out, (const T *)inp, a, p);
        } else {
            if (!a.th.start || !a.tw.start) return VITPE_EINVAL; /* needs the workspace */
            vitpe__inline_tables<0> none = {};
            vitpe__rows_kernel<TR, V, 0, TRO><<<grid, block, (size_t)smem, stream>>>(
                (TO *)out, (const T *)inp, a, none);
        }
    } else {
        if (!a.th.start || !a.tw.start) return VITPE_EINVAL; /* needs the workspace */
        int sms = 132;
        if (vitpe__sm_count(&sms)) return VITPE_ECUDA;
        const int64_t copied = std::is_same<TR, TRO>::value ? a.prefix + a.suffix : 0;
        const int64_t total = (a.batch / a.slices * copied + a.batch * a.th.n_out * a.tw.n_out) * ncv;
        int64_t blocks = (total + 255) / 256;
        if (blocks < 1) blocks = 1;
        if (blocks > (int64_t)sms * 64) blocks = (int64_t)sms * 64; /* grid-stride beyond */
        vitpe__direct_kernel<TR, V, TRO><<<(unsigned)blocks, 256, 0, stream>>>((TO *)out, (const T *)inp, a);
    }
    return cudaGetLastError() == cudaSuccess ? VITPE_OK : VITPE_ECUDA;
}

/* Whether V-element vectors (VMAX of the 16-bit or 32-bit type: up to 16
 * bytes of the narrower side) can carry the channels: the channel count,
 * both pointers and all strides allow them. */
template <typename TI, typename TO, int VMAX>
static bool vitpe__wide(const void *out, const void *inp, int64_t channels, const int64_t *strides, int n) {
    bool wide = channels % VMAX == 0 && (uintptr_t)out % (sizeof(TO) * VMAX) == 0 &&
                (uintptr_t)inp % (sizeof(TI) * VMAX) == 0;
    for (int i = 0; i < n; i++) wide = wide && strides[i] % VMAX == 0;
    return wide;
}

/* The widest V that vitpe__wide allows; else one element per thread. */
template <typename TR, int VMAX, typename TRO = TR>
static int vitpe__dispatch_vec(void *out, const void *inp, const vitpe__rows_args &a,
                               const vitpe_taps *th, const vitpe_taps *tw, cudaStream_t stream) {
    const int64_t strides[6] = {a.in_bs, a.in_ts, a.out_bs, a.out_ts, a.in_ss, a.out_ss};
    const bool wide = vitpe__wide<typename TR::T, typename TRO::T, VMAX>(out, inp, a.channels, strides, 6);
    int sms = 132;
    if (vitpe__sm_count(&sms)) return VITPE_ECUDA;
    if (wide)
        return vitpe__launch_rows_with<TR, VMAX, TRO>(out, inp, a, vitpe__choose_grid<TR, VMAX>(a, sms), th, tw,
                                                      stream);
    return vitpe__launch_rows_with<TR, 1, TRO>(out, inp, a, vitpe__choose_grid<TR, 1>(a, sms), th, tw, stream);
}

static vitpe__table vitpe__table_at(const void *buffer, const vitpe_plan_layout *L, int t) {
    const char *base = (const char *)buffer;
    vitpe__table v;
    v.start = (const int64_t *)(base + L->start_offset[t]);
    v.count = (const int64_t *)(base + L->count_offset[t]);
    v.weight = (const double *)(base + L->weight_offset[t]);
    v.width = L->width[t];
    v.n_out = L->n_out[t];
    v.n_in = L->n_in[t];
    return v;
}

/* ------------------------------------------------------------------------
 * The T pass of a rank-3 grid (vitpe_stages.h's T stage): output token
 * (b, t, s) = sum_k wt[t,k] * input token (b, start[t] + k, s), s over a
 * slab of `slab` tokens, slabs in_ss / out_ss elements apart. One thread per
 * output vector; the same sum (in tap order, the first term a product, in
 * ACC) as vitpe_cpu.c's T pass, and the same copy where an output slab is
 * one input slab times 1 (one type in and out). Tables inline (CAP bytes:
 * ACC weights, then int32 starts and counts) or, CAP = 0, in device memory. */
struct vitpe__tpass_args {
    vitpe__table tt; /* pointers unused with inline tables */
    int64_t batch, channels, slab;
    int64_t in_bs, in_ss, in_ts, out_bs, out_ss, out_ts;
};

#define VITPE_INLINE_T 1024

template <typename TR, int V, int CAP, typename TRO = TR>
__global__ void __launch_bounds__(256)
vitpe__tpass_kernel(typename TRO::T *__restrict__ out, const typename TR::T *__restrict__ inp,
                    const vitpe__tpass_args a, const __grid_constant__ vitpe__inline_tables<CAP> tables) {
    typedef typename TR::T T;
    typedef typename TR::ACC ACC;
    typedef vitpe__vec<T, V> VT;
    const int64_t ncv = a.channels / V, t_out = a.tt.n_out, width = a.tt.width;
    const int64_t total = a.batch * t_out * a.slab * ncv;
    for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < total;
         idx += (int64_t)gridDim.x * blockDim.x) {
        int64_t i = idx;
        const int64_t c = (i % ncv) * V;
        i /= ncv;
        const int64_t s = i % a.slab;
        i /= a.slab;
        const int64_t t = i % t_out, b = i / t_out;
        int64_t st, n;
        const T *src;
        typename TRO::T *dst = out + b * a.out_bs + t * a.out_ss + s * a.out_ts + c;
        ACC acc[V];
        if constexpr (CAP > 0) {
            const ACC *w = (const ACC *)tables.bytes + t * width;
            const int32_t *starts = (const int32_t *)((const ACC *)tables.bytes + t_out * width);
            st = starts[t];
            n = starts[t_out + t];
            src = inp + b * a.in_bs + st * a.in_ss + s * a.in_ts + c;
            if constexpr (std::is_same<TR, TRO>::value)
                if (n == 1 && w[0] == (ACC)1) { /* a copy, bit for bit */
                    *(VT *)dst = *(const VT *)src;
                    continue;
                }
            vitpe__hsum<TR, V, ACC>(acc, src, a.in_ss, w, n);
        } else {
            const double *w = a.tt.weight + t * width;
            st = __ldg(a.tt.start + t);
            n = __ldg(a.tt.count + t);
            src = inp + b * a.in_bs + st * a.in_ss + s * a.in_ts + c;
            if constexpr (std::is_same<TR, TRO>::value)
                if (n == 1 && __ldg(w) == 1.0) {
                    *(VT *)dst = *(const VT *)src;
                    continue;
                }
            vitpe__hsum<TR, V, double>(acc, src, a.in_ss, w, n);
        }
        vitpe__store_vec<TRO, V>(dst, acc);
    }
}

/* Packs a T table into the T pass's parameter block (ACC weights, int32
 * starts, int32 counts), as vitpe__pack_tables does for H and W. */
template <typename ACC, int CAP>
static void vitpe__pack_t_table(vitpe__inline_tables<CAP> &p, const vitpe_taps *tt) {
    unsigned char *q = p.bytes;
    for (int64_t i = 0; i < tt->n_out * tt->width; i++, q += sizeof(ACC)) {
        const ACC v = (ACC)tt->weight[i];
        memcpy(q, &v, sizeof v);
    }
    for (int64_t i = 0; i < tt->n_out; i++, q += 4) {
        const int32_t v = (int32_t)tt->start[i];
        memcpy(q, &v, 4);
    }
    for (int64_t i = 0; i < tt->n_out; i++, q += 4) {
        const int32_t v = (int32_t)tt->count[i];
        memcpy(q, &v, 4);
    }
}

template <typename ACC>
static int64_t vitpe__t_table_bytes(const vitpe__table &t) {
    return t.n_out * t.width * (int64_t)sizeof(ACC) + 2 * t.n_out * 4;
}

/* tt: the host table to send inline, or NULL when a.tt points to a device
 * table (too large for VITPE_INLINE_T). */
template <typename TR, int VMAX, typename TRO = TR>
static int vitpe__launch_tpass(void *out, const void *inp, const vitpe__tpass_args &a, const vitpe_taps *tt,
                               cudaStream_t stream) {
    typedef typename TR::T T;
    typedef typename TRO::T TO;
    typedef typename TR::ACC ACC;
    const int64_t strides[6] = {a.in_bs, a.in_ss, a.in_ts, a.out_bs, a.out_ss, a.out_ts};
    const bool wide = vitpe__wide<T, TO, VMAX>(out, inp, a.channels, strides, 6);
    const int64_t v = wide ? VMAX : 1, total = a.batch * a.tt.n_out * a.slab * (a.channels / v);
    if (total == 0) return VITPE_OK;
    int sms = 132;
    if (vitpe__sm_count(&sms)) return VITPE_ECUDA;
    int64_t blocks = (total + 255) / 256;
    if (blocks > (int64_t)sms * 64) blocks = (int64_t)sms * 64; /* grid-stride beyond */
    const bool inline_table = tt && vitpe__t_table_bytes<ACC>(a.tt) <= VITPE_INLINE_T;
    if (!inline_table && !a.tt.start) return VITPE_EINVAL; /* needs the workspace */
    if (inline_table) {
        vitpe__inline_tables<VITPE_INLINE_T> p;
        vitpe__pack_t_table<ACC>(p, tt);
        if (wide)
            vitpe__tpass_kernel<TR, VMAX, VITPE_INLINE_T, TRO><<<(unsigned)blocks, 256, 0, stream>>>(
                (TO *)out, (const T *)inp, a, p);
        else
            vitpe__tpass_kernel<TR, 1, VITPE_INLINE_T, TRO><<<(unsigned)blocks, 256, 0, stream>>>(
                (TO *)out, (const T *)inp, a, p);
    } else {
        vitpe__inline_tables<0> none = {};
        if (wide)
            vitpe__tpass_kernel<TR, VMAX, 0, TRO><<<(unsigned)blocks, 256, 0, stream>>>((TO *)out, (const T *)inp,
                                                                                      a, none);
        else
            vitpe__tpass_kernel<TR, 1, 0, TRO><<<(unsigned)blocks, 256, 0, stream>>>((TO *)out, (const T *)inp, a,
                                                                                   none);
    }
    return cudaGetLastError() == cudaSuccess ? VITPE_OK : VITPE_ECUDA;
}

/* Prefix and suffix tokens of every table, copied bit for bit (runs whose
 * rows kernel does not: a T stage, two stages). */
struct vitpe__tokens_args {
    int64_t tables, prefix, suffix, channels;
    int64_t in_bs, in_ts, out_bs, out_ts;
    int64_t in_suffix_at, out_suffix_at; /* the first suffix token's index */
};

template <typename T, int V>
__global__ void __launch_bounds__(256) vitpe__tokens_kernel(T *__restrict__ out, const T *__restrict__ inp,
                                                            const vitpe__tokens_args a) {
    typedef vitpe__vec<T, V> VT;
    const int64_t ncv = a.channels / V, copied = a.prefix + a.suffix, total = a.tables * copied * ncv;
    for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < total;
         idx += (int64_t)gridDim.x * blockDim.x) {
        const int64_t c = (idx % ncv) * V, bp = idx / ncv, b = bp / copied, p = bp % copied;
        const int64_t pi = p < a.prefix ? p : a.in_suffix_at + p - a.prefix;
        const int64_t po = p < a.prefix ? p : a.out_suffix_at + p - a.prefix;
        *(VT *)(out + b * a.out_bs + po * a.out_ts + c) = *(const VT *)(inp + b * a.in_bs + pi * a.in_ts + c);
    }
}

template <typename T, int VMAX>
static int vitpe__launch_tokens(void *out, const void *inp, const vitpe__tokens_args &a, cudaStream_t stream) {
    const int64_t strides[4] = {a.in_bs, a.in_ts, a.out_bs, a.out_ts};
    const bool wide = vitpe__wide<T, T, VMAX>(out, inp, a.channels, strides, 4);
    const int64_t total = a.tables * (a.prefix + a.suffix) * (a.channels / (wide ? VMAX : 1));
    if (total == 0) return VITPE_OK;
    int64_t blocks = (total + 255) / 256;
    if (blocks > 65535) blocks = 65535; /* grid-stride beyond */
    if (wide)
        vitpe__tokens_kernel<T, VMAX><<<(unsigned)blocks, 256, 0, stream>>>((T *)out, (const T *)inp, a);
    else
        vitpe__tokens_kernel<T, 1><<<(unsigned)blocks, 256, 0, stream>>>((T *)out, (const T *)inp, a);
    return cudaGetLastError() == cudaSuccess ? VITPE_OK : VITPE_ECUDA;
}

#endif /* VITPE_CUDA_ROWS_CUH */
