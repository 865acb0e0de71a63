/* vitpe_cpu.c — CPU forward and backward passes, and the naive references.
 *
 *   inp  (B, P + Hin*Win,   C)   token-major, channel stride 1
 *   out  (B, P + Hout*Wout, C)
 *
 * Forward, per output grid row oy (one work item; items are independent):
 *   tmp[ix, c]        = sum_k wy[oy,k] * inp[b, P + (sy[oy]+k)*Win + ix, c]   (H pass)
 *   out[b, P+oy*Wout+ox, c] = sum_k wx[ox,k] * tmp[sx[ox]+k, c]               (W pass)
 * Backward runs the same two passes over the adjoint tables, from dout's
 * (Hout, Wout) grid to dinp's (Hin, Win) grid: a gather, each dinp element
 * written once with "=" (never accumulated), so the result does not depend
 * on how rows are split between threads.
 *
 * Accumulation is in float (double for float64); half types are widened on
 * load and rounded once on the final store. Row work items own their output
 * rows, so the shim may run any partition of [0, B*rows) concurrently.
 */
#include <stdlib.h>
#include <string.h>

#include "vitpe.h"
#include "vitpe_taps.h"

/* ------------------------------------------------------------------------
 * float16 / bfloat16 <-> float32, bit-exact with c10::Half / c10::BFloat16
 * (round to nearest even; NaN stays NaN). */

static inline uint32_t vitpe__bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float vitpe__float(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

static inline float vitpe__f16_to_f32(uint16_t h) {
    const uint32_t w = (uint32_t)h << 16, sign = w & 0x80000000u, two_w = w + w;
    /* normals: move the exponent/mantissa into place, rebias by a multiply */
    const float normalized = vitpe__float((two_w >> 4) + (0xE0u << 23)) * 0x1.0p-112f;
    /* subnormals: build 0.5 + m*2^-24 exactly, subtract the 0.5 */
    const float denormalized = vitpe__float((two_w >> 17) | (126u << 23)) - 0.5f;
    return vitpe__float(sign | (two_w < (1u << 27) ? vitpe__bits(denormalized)
                                                   : vitpe__bits(normalized)));
}

static inline uint16_t vitpe__f32_to_f16(float f) {
    const uint32_t w = vitpe__bits(f), shl1_w = w + w, sign = w & 0x80000000u;
    /* scale so that overflow goes to infinity and underflow is rounded by the FPU */
    float base = (fabsf(f) * 0x1.0p+112f) * 0x1.0p-110f;
    uint32_t bias = shl1_w & 0xFF000000u;
    if (bias < 0x71000000u) bias = 0x71000000u;
    base = vitpe__float((bias >> 1) + 0x07800000u) + base;
    const uint32_t bits = vitpe__bits(base);
    const uint32_t nonsign = ((bits >> 13) & 0x00007C00u) + (bits & 0x00000FFFu);
    return (uint16_t)((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign));
}

static inline float vitpe__bf16_to_f32(uint16_t b) { return vitpe__float((uint32_t)b << 16); }

static inline uint16_t vitpe__f32_to_bf16(float f) {
    uint32_t u = vitpe__bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

#define VITPE_ID(x) (x)

/* ------------------------------------------------------------------------
 * Weighted sum of n rows spaced `stride` elements apart, over C channels:
 *   dst[c] = sum_k w[k] * src[k*stride + c]
 * Channels go in blocks of 16 held in registers across all taps (the
 * compiler vectorizes the fixed-length loops), then a scalar tail. The sum
 * runs over k in order, as ATen's interpolate loops do. n == 0 writes zeros
 * (an input no output reads gets a zero gradient). */
#define VITPE_BLOCK 16
#define VITPE_DEFINE_WSUM(NAME, DST_T, SRC_T, ACC, LOAD, STORE)                            \
    static void NAME(DST_T *restrict dst, const SRC_T *restrict src, int64_t stride,       \
                     const double *restrict w, int64_t n, int64_t C) {                     \
        int64_t c = 0;                                                                     \
        if (n == 0) {                                                                      \
            for (c = 0; c < C; c++) dst[c] = STORE((ACC)0);                                \
            return;                                                                        \
        }                                                                                  \
        for (; c + VITPE_BLOCK <= C; c += VITPE_BLOCK) {                                   \
            ACC acc[VITPE_BLOCK];                                                          \
            const SRC_T *s = src + c;                                                      \
            ACC wk = (ACC)w[0];                                                            \
            for (int j = 0; j < VITPE_BLOCK; j++) acc[j] = wk * LOAD(s[j]);                \
            for (int64_t k = 1; k < n; k++) {                                              \
                s += stride;                                                               \
                wk = (ACC)w[k];                                                            \
                for (int j = 0; j < VITPE_BLOCK; j++) acc[j] += wk * LOAD(s[j]);           \
            }                                                                              \
            for (int j = 0; j < VITPE_BLOCK; j++) dst[c + j] = STORE(acc[j]);              \
        }                                                                                  \
        for (; c < C; c++) {                                                               \
            ACC acc = (ACC)w[0] * LOAD(src[c]);                                            \
            for (int64_t k = 1; k < n; k++) acc += (ACC)w[k] * LOAD(src[k * stride + c]);  \
            dst[c] = STORE(acc);                                                           \
        }                                                                                  \
    }

/* ------------------------------------------------------------------------
 * The row engine: output grid rows [row_begin, row_end) of a (n_in_h, n_in_w)
 * -> (th.n_out, tw.n_out) resize; forward and backward both call it. */
#define VITPE_DEFINE_ROWS(SUF, T, ACC, LOAD, STORE)                                        \
    VITPE_DEFINE_WSUM(vitpe__hpass_##SUF, ACC, T, ACC, LOAD, VITPE_ID)                     \
    VITPE_DEFINE_WSUM(vitpe__wpass_##SUF, T, ACC, ACC, VITPE_ID, STORE)                    \
    static void vitpe__rows_##SUF(T *out, const T *inp, const vitpe_taps *th,              \
                                  const vitpe_taps *tw, const vitpe_io *io,                \
                                  int64_t row_begin, int64_t row_end, ACC *tmp) {          \
        const int64_t C = io->channels, P = io->prefix;                                    \
        const int64_t in_w = tw->n_in, out_h = th->n_out, out_w = tw->n_out;               \
        const int64_t its = io->in_token_stride, ots = io->out_token_stride;               \
        for (int64_t r = row_begin; r < row_end; r++) {                                    \
            const int64_t b = r / out_h, oy = r % out_h;                                   \
            const T *src = inp + b * io->in_batch_stride;                                  \
            T *dst = out + b * io->out_batch_stride;                                       \
            if (oy == 0) /* prefix tokens pass through, bit for bit */                     \
                for (int64_t p = 0; p < P; p++)                                            \
                    memcpy(dst + p * ots, src + p * its, (size_t)C * sizeof(T));           \
            /* H pass: this row's vertical taps, every input column */                     \
            const int64_t sy = th->start[oy], ny = th->count[oy];                          \
            const double *wy = th->weight + oy * th->width;                                \
            for (int64_t ix = 0; ix < in_w; ix++)                                          \
                vitpe__hpass_##SUF(tmp + ix * C, src + (P + sy * in_w + ix) * its,         \
                                   in_w * its, wy, ny, C);                                 \
            /* W pass: horizontal taps from the scratch row into the output row */         \
            T *drow = dst + (P + oy * out_w) * ots;                                        \
            for (int64_t ox = 0; ox < out_w; ox++)                                         \
                vitpe__wpass_##SUF(drow + ox * ots, tmp + tw->start[ox] * C, C,            \
                                   tw->weight + ox * tw->width, tw->count[ox], C);         \
        }                                                                                  \
    }

VITPE_DEFINE_ROWS(f32, float, float, VITPE_ID, VITPE_ID)
VITPE_DEFINE_ROWS(f64, double, double, VITPE_ID, VITPE_ID)
VITPE_DEFINE_ROWS(f16, uint16_t, float, vitpe__f16_to_f32, vitpe__f32_to_f16)
VITPE_DEFINE_ROWS(bf16, uint16_t, float, vitpe__bf16_to_f32, vitpe__f32_to_bf16)

static size_t vitpe__acc_size(int dtype) { return dtype == VITPE_F64 ? sizeof(double) : sizeof(float); }

static int vitpe__io_check(const vitpe_io *io) {
    if (!io || io->dtype < VITPE_F32 || io->dtype > VITPE_BF16) return VITPE_EINVAL;
    if (io->batch < 0 || io->prefix < 0 || io->channels < 0) return VITPE_EINVAL;
    return VITPE_OK;
}

int vitpe_scratch_bytes(size_t *bytes, const vitpe_plan *plan, const vitpe_io *io, int backward) {
    int st;
    if (!bytes || !plan) return VITPE_EINVAL;
    if ((st = vitpe__io_check(io))) return st;
    /* one scratch row: the input grid's width (forward) or dout's width (backward) */
    size_t row = (size_t)(backward ? plan->w.out_size : plan->w.in_size);
    if (io->channels != 0 && row > SIZE_MAX / (size_t)io->channels) return VITPE_EOVERFLOW;
    row *= (size_t)io->channels;
    if (row > SIZE_MAX / vitpe__acc_size(io->dtype)) return VITPE_EOVERFLOW;
    *bytes = row * vitpe__acc_size(io->dtype);
    return VITPE_OK;
}

static int vitpe__run_rows(void *out, const void *inp, const vitpe_taps *th, const vitpe_taps *tw,
                           const vitpe_io *io, int64_t row_begin, int64_t row_end, void *scratch) {
    int st;
    if ((st = vitpe__io_check(io))) return st;
    if (row_begin < 0 || row_end < row_begin || row_end > io->batch * th->n_out) return VITPE_EINVAL;
    if (row_begin == row_end || io->channels == 0) return VITPE_OK;
    if (!out || !inp || !scratch) return VITPE_EINVAL;
    switch (io->dtype) {
    case VITPE_F32:
        vitpe__rows_f32((float *)out, (const float *)inp, th, tw, io, row_begin, row_end, (float *)scratch);
        break;
    case VITPE_F64:
        vitpe__rows_f64((double *)out, (const double *)inp, th, tw, io, row_begin, row_end, (double *)scratch);
        break;
    case VITPE_F16:
        vitpe__rows_f16((uint16_t *)out, (const uint16_t *)inp, th, tw, io, row_begin, row_end, (float *)scratch);
        break;
    default:
        vitpe__rows_bf16((uint16_t *)out, (const uint16_t *)inp, th, tw, io, row_begin, row_end, (float *)scratch);
        break;
    }
    return VITPE_OK;
}

int vitpe_forward_cpu(void *out, const void *inp, const vitpe_plan *plan, const vitpe_io *io,
                      int64_t row_begin, int64_t row_end, void *scratch) {
    if (!plan) return VITPE_EINVAL;
    return vitpe__run_rows(out, inp, &plan->fwd_h, &plan->fwd_w, io, row_begin, row_end, scratch);
}

int vitpe_backward_cpu(void *dinp, const void *dout, const vitpe_plan *plan, const vitpe_io *io,
                       int64_t row_begin, int64_t row_end, void *scratch) {
    if (!plan || !plan->layout.with_adjoint) return VITPE_EINVAL;
    return vitpe__run_rows(dinp, dout, &plan->adj_h, &plan->adj_w, io, row_begin, row_end, scratch);
}

/* ------------------------------------------------------------------------
 * Naive references. Direct 2-D sums in double straight from the tap
 * formulas: no tables, no separable passes, no scratch rows. Slow on
 * purpose; the C tests hold the fast path to them. */

static double vitpe__load(const void *p, int dtype, int64_t i) {
    switch (dtype) {
    case VITPE_F32: return ((const float *)p)[i];
    case VITPE_F64: return ((const double *)p)[i];
    case VITPE_F16: return vitpe__f16_to_f32(((const uint16_t *)p)[i]);
    default: return vitpe__bf16_to_f32(((const uint16_t *)p)[i]);
    }
}

static void vitpe__store(void *p, int dtype, int64_t i, double v) {
    switch (dtype) {
    case VITPE_F32: ((float *)p)[i] = (float)v; break;
    case VITPE_F64: ((double *)p)[i] = v; break;
    case VITPE_F16: ((uint16_t *)p)[i] = vitpe__f32_to_f16((float)v); break;
    default: ((uint16_t *)p)[i] = vitpe__f32_to_bf16((float)v); break;
    }
}

static int vitpe__naive_check(const vitpe_axis *h, const vitpe_axis *w, const vitpe_io *io,
                              size_t *wbytes) {
    int st;
    if ((st = vitpe_axis_check(h)) || (st = vitpe_axis_check(w)) || (st = vitpe__io_check(io)))
        return st;
    *wbytes = (size_t)(vitpe__axis_width(h) + vitpe__axis_width(w)) * sizeof(double);
    return VITPE_OK;
}

int vitpe_forward_naive(void *out, const void *inp, const vitpe_axis *h, const vitpe_axis *w,
                        const vitpe_io *io) {
    size_t wbytes;
    int st = vitpe__naive_check(h, w, io, &wbytes);
    if (st) return st;
    double *wy = (double *)malloc(wbytes), *wx;
    if (!wy) return VITPE_ENOMEM;
    wx = wy + vitpe__axis_width(h);
    const int64_t C = io->channels, P = io->prefix, Win = w->in_size, Wout = w->out_size;
    for (int64_t b = 0; b < io->batch; b++) {
        const int64_t ib = b * io->in_batch_stride, ob = b * io->out_batch_stride;
        for (int64_t p = 0; p < P; p++)
            for (int64_t c = 0; c < C; c++)
                vitpe__store(out, io->dtype, ob + p * io->out_token_stride + c,
                             vitpe__load(inp, io->dtype, ib + p * io->in_token_stride + c));
        for (int64_t oy = 0; oy < h->out_size; oy++) {
            int64_t sy, ny = vitpe__axis_taps(h, oy, &sy, wy);
            for (int64_t ox = 0; ox < Wout; ox++) {
                int64_t sx, nx = vitpe__axis_taps(w, ox, &sx, wx);
                for (int64_t c = 0; c < C; c++) {
                    double acc = 0.0;
                    for (int64_t ky = 0; ky < ny; ky++)
                        for (int64_t kx = 0; kx < nx; kx++)
                            acc += wy[ky] * wx[kx] *
                                   vitpe__load(inp, io->dtype,
                                               ib + (P + (sy + ky) * Win + sx + kx) * io->in_token_stride + c);
                    vitpe__store(out, io->dtype, ob + (P + oy * Wout + ox) * io->out_token_stride + c, acc);
                }
            }
        }
    }
    free(wy);
    return VITPE_OK;
}

int vitpe_backward_naive(void *dinp, const void *dout, const vitpe_axis *h, const vitpe_axis *w,
                         const vitpe_io *io) {
    size_t wbytes, grid;
    int st = vitpe__naive_check(h, w, io, &wbytes);
    if (st) return st;
    const int64_t C = io->channels, P = io->prefix, Win = w->in_size, Wout = w->out_size;
    grid = (size_t)(h->in_size * Win) * (size_t)C; /* one batch's dinp grid, in double */
    if (grid > (SIZE_MAX - wbytes) / sizeof(double)) return VITPE_EOVERFLOW;
    double *wy = (double *)malloc(wbytes + grid * sizeof(double)), *wx, *acc;
    if (!wy) return VITPE_ENOMEM;
    wx = wy + vitpe__axis_width(h);
    acc = wx + vitpe__axis_width(w);
    for (int64_t b = 0; b < io->batch; b++) {
        /* io's "in" strides describe dout, "out" strides dinp */
        const int64_t gb = b * io->in_batch_stride, db = b * io->out_batch_stride;
        for (int64_t p = 0; p < P; p++)
            for (int64_t c = 0; c < C; c++)
                vitpe__store(dinp, io->dtype, db + p * io->out_token_stride + c,
                             vitpe__load(dout, io->dtype, gb + p * io->in_token_stride + c));
        memset(acc, 0, grid * sizeof(double));
        for (int64_t oy = 0; oy < h->out_size; oy++) {
            int64_t sy, ny = vitpe__axis_taps(h, oy, &sy, wy);
            for (int64_t ox = 0; ox < Wout; ox++) {
                int64_t sx, nx = vitpe__axis_taps(w, ox, &sx, wx);
                for (int64_t c = 0; c < C; c++) {
                    double g = vitpe__load(dout, io->dtype, gb + (P + oy * Wout + ox) * io->in_token_stride + c);
                    for (int64_t ky = 0; ky < ny; ky++)
                        for (int64_t kx = 0; kx < nx; kx++)
                            acc[((sy + ky) * Win + sx + kx) * C + c] += wy[ky] * wx[kx] * g;
                }
            }
        }
        for (int64_t t = 0; t < h->in_size * Win; t++)
            for (int64_t c = 0; c < C; c++)
                vitpe__store(dinp, io->dtype, db + (P + t) * io->out_token_stride + c, acc[t * C + c]);
    }
    free(wy);
    return VITPE_OK;
}
