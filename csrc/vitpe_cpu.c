/* vitpe_cpu.c — CPU forward and backward passes (the naive references they
 * are held to are in vitpe_naive.c; the sums they run, in vitpe_sums.h).
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
#include "vitpe_sums.h"

/* ------------------------------------------------------------------------
 * Channel blocks. The H pass writes, and the W pass reads back count[ox]
 * times per output token, a scratch block of in_w tokens x bw channels;
 * bw is a whole number of register blocks whose scratch block fits
 * VITPE_SCRATCH_BUDGET bytes (ViT-B, 14 columns: all 768 floats; DINOv2,
 * 37 columns: 384 of 1536). Within a block the generic sums run
 * VITPE_BLOCK_BYTES of accumulators at a time (64 floats / 32 doubles:
 * eight AVX2 registers); the float32 2- and 4-tap sums run the whole block
 * a vector at a time. Each output token is written bw channels at a time,
 * contiguous runs of whole cache lines: the wider the block, the fewer
 * separate pieces each output token is written in, so the budget is as large
 * as still sits in a core's L2 (scratch_bytes asks for two blocks) beside
 * the input rows the H pass streams. */
#define VITPE_BLOCK_BYTES 256
#define VITPE_SCRATCH_BUDGET (64 * 1024)

/* The scratch block's width in accumulators: as many register blocks as
 * fit the budget over in_w tokens, at least one, at most C. */
static int64_t vitpe__block_width(int64_t in_w, int64_t C, int64_t acc_size) {
    const int64_t cb = VITPE_BLOCK_BYTES / acc_size;
    int64_t blocks = (int64_t)VITPE_SCRATCH_BUDGET / (in_w * VITPE_BLOCK_BYTES);
    if (blocks < 1) blocks = 1;
    return blocks * cb < C ? blocks * cb : C;
}


/* ------------------------------------------------------------------------
 * The generic sums of one element type, one register block of VITPE_CB_SUF
 * accumulators at a time: vitpe__hpass_SUF (storage T -> accumulators ACC,
 * the H pass) and vitpe__wpass_SUF (ACC -> T, the W pass). VEC/ACC_SUF: the
 * vector type and the accumulators' loads and stores (vitpe_convert.h). */
#define VITPE_DEFINE_PASSES(SUF, T, ACC, LOAD, STORE, VEC, ACC_SUF)                         \
    enum { VITPE_CB_##SUF = VITPE_BLOCK_BYTES / sizeof(ACC) };                             \
    VITPE_DEFINE_WSUM(vitpe__hpass_##SUF, ACC, T, ACC, LOAD, VITPE_ID, VITPE_CB_##SUF,     \
                      VEC, vitpe__ld2_##SUF, vitpe__st2_##ACC_SUF)                         \
    VITPE_DEFINE_WSUM(vitpe__wpass_##SUF, T, ACC, ACC, VITPE_ID, STORE, VITPE_CB_##SUF,    \
                      VEC, vitpe__ld2_##ACC_SUF, vitpe__st2_##SUF)

/* Types without vector 2- and 4-tap sums (float64; every type where the
 * vector extensions are missing): the same sums are the generic ones, a
 * register block at a time. The row engine takes them only with FAST, which
 * these types have 0, but it names them for every type. */
#define VITPE_DEFINE_PLAIN_TAP_SUMS(SUF, T, ACC)                                           \
    VITPE_INLINE void vitpe__hsum2_##SUF(ACC *restrict dst, const T *restrict src,         \
                                         int64_t stride, const double *w, int64_t len) {   \
        for (int64_t c = 0; c < len; c += VITPE_CB_##SUF)                                  \
            vitpe__hpass_##SUF(dst + c, src + c, stride, w, 2,                             \
                               len - c < VITPE_CB_##SUF ? len - c : VITPE_CB_##SUF);       \
    }                                                                                      \
    VITPE_INLINE void vitpe__hsum4_##SUF(ACC *restrict dst, const T *restrict src,         \
                                         int64_t stride, const double *w, int64_t len) {   \
        for (int64_t c = 0; c < len; c += VITPE_CB_##SUF)                                  \
            vitpe__hpass_##SUF(dst + c, src + c, stride, w, 4,                             \
                               len - c < VITPE_CB_##SUF ? len - c : VITPE_CB_##SUF);       \
    }                                                                                      \
    VITPE_INLINE void vitpe__wsum2_##SUF(T *restrict dst, const ACC *restrict src,         \
                                         int64_t stride, const double *w, int64_t len) {   \
        for (int64_t c = 0; c < len; c += VITPE_CB_##SUF)                                  \
            vitpe__wpass_##SUF(dst + c, src + c, stride, w, 2,                             \
                               len - c < VITPE_CB_##SUF ? len - c : VITPE_CB_##SUF);       \
    }                                                                                      \
    VITPE_INLINE void vitpe__wsum4_##SUF(T *restrict dst, const ACC *restrict src,         \
                                         int64_t stride, const double *w, int64_t len) {   \
        for (int64_t c = 0; c < len; c += VITPE_CB_##SUF)                                  \
            vitpe__wpass_##SUF(dst + c, src + c, stride, w, 4,                             \
                               len - c < VITPE_CB_##SUF ? len - c : VITPE_CB_##SUF);       \
    }                                                                                      \
    VITPE_INLINE void vitpe__hsum2x2_##SUF(ACC *dst_a, ACC *dst_b, const T *src,           \
                                           int64_t stride, const double *wa,              \
                                           const double *wb, int64_t shift, int64_t len) { \
        vitpe__hsum2_##SUF(dst_a, src, stride, wa, len);                                   \
        vitpe__hsum2_##SUF(dst_b, src + shift * stride, stride, wb, len);                  \
    }                                                                                      \
    VITPE_INLINE void vitpe__hsum4x2_##SUF(ACC *dst_a, ACC *dst_b, const T *src,           \
                                           int64_t stride, const double *wa,              \
                                           const double *wb, int64_t shift, int64_t len) { \
        vitpe__hsum4_##SUF(dst_a, src, stride, wa, len);                                   \
        vitpe__hsum4_##SUF(dst_b, src + shift * stride, stride, wb, len);                  \
    }

VITPE_DEFINE_PASSES(f32, float, float, VITPE_ID, VITPE_ID, vitpe_f32x8, f32)
VITPE_DEFINE_PASSES(f64, double, double, VITPE_ID, VITPE_ID, vitpe_f64x4, f64)
VITPE_DEFINE_PASSES(f16, uint16_t, float, vitpe__f16_to_f32, vitpe__f32_to_f16, vitpe_f32x8, f32)
VITPE_DEFINE_PASSES(bf16, uint16_t, float, vitpe__bf16_to_f32, vitpe__f32_to_bf16, vitpe_f32x8, f32)
VITPE_DEFINE_PLAIN_TAP_SUMS(f64, double, double)
#if !VITPE_VECTOR
VITPE_DEFINE_PLAIN_TAP_SUMS(f32, float, float)
VITPE_DEFINE_PLAIN_TAP_SUMS(f16, uint16_t, float)
VITPE_DEFINE_PLAIN_TAP_SUMS(bf16, uint16_t, float)
#endif

/* ------------------------------------------------------------------------
 * The row engine: output grid rows [row_begin, row_end) of a (n_in_h, n_in_w)
 * -> (th.n_out, tw.n_out) resize; forward and backward both call it.
 * Per row and channel block: H pass (input rows -> scratch), W pass (scratch
 * -> output row). Two shortcuts, both exact:
 *  - a row whose every tap, vertical and horizontal, is one input times 1
 *    (nearest modes, identity axes) is a gather: tokens are copied bit for
 *    bit, as ATen's nearest kernels copy them;
 *  - DIRECT (a constant: T is ACC) lets a row whose vertical taps are one
 *    input row times 1 skip the H pass: the W pass reads that input row in
 *    place (an identity H axis, align_corners end rows).
 * FAST (a constant: float32, float16, bfloat16) takes the 2- and 4-tap
 * sums above where a table has them and C is a multiple of STEP (8 floats;
 * a register block for the half types), and pairs rows oy, oy+1 of the same batch whose
 * vertical taps have the same count and start at most one row apart: one
 * H pass fills both rows' scratch blocks (float32 loads the shared input
 * rows once), then each row has its W pass. A pair never spans two work
 * items (r + 1 < row_end), so how the shim splits rows changes nothing.
 * The scratch holds two blocks of in_w tokens x bw accumulators (the
 * second only used by pairs). */
#define VITPE_DEFINE_ROWS(SUF, T, ACC, DIRECT, FAST, STEP)                                  \
    /* W pass of one row and channel block: h holds in_w tokens, hstride apart */          \
    VITPE_INLINE void vitpe__wrow_##SUF(T *drow, int64_t ots, const ACC *h, int64_t hstride,  \
                                        const vitpe_taps *tw, int64_t len) {               \
        const int64_t CB = VITPE_CB_##SUF;                                                 \
        const int fast = (FAST) && len % (STEP) == 0;                                      \
        for (int64_t ox = 0; ox < tw->n_out; ox++) {                                       \
            const ACC *hx = h + tw->start[ox] * hstride;                                   \
            const double *wx = tw->weight + ox * tw->width;                                \
            const int64_t nx = tw->count[ox];                                              \
            T *o = drow + ox * ots;                                                        \
            if (fast && nx == 4)                                                           \
                vitpe__wsum4_##SUF(o, hx, hstride, wx, len);                               \
            else if (fast && nx == 2)                                                      \
                vitpe__wsum2_##SUF(o, hx, hstride, wx, len);                               \
            else                                                                           \
                for (int64_t c = 0; c < len; c += CB)                                      \
                    vitpe__wpass_##SUF(o + c, hx + c, hstride, wx, nx,                     \
                                       len - c < CB ? len - c : CB);                       \
        }                                                                                  \
    }                                                                                      \
    VITPE_CLONES static void vitpe__rows_##SUF(T *out, const T *inp, const vitpe_taps *th, \
                                               const vitpe_taps *tw, const vitpe_io *io,   \
                                               int64_t row_begin, int64_t row_end,         \
                                               ACC *tmp) {                                 \
        const int64_t CB = VITPE_CB_##SUF;                                                 \
        const int64_t C = io->channels, P = io->prefix;                                    \
        const int64_t in_w = tw->n_in, out_h = th->n_out, out_w = tw->n_out;               \
        const int64_t its = io->in_token_stride, ots = io->out_token_stride;               \
        const int64_t bw = vitpe__block_width(in_w, C, sizeof(ACC)); /* scratch stride */  \
        ACC *tmp_b = tmp + in_w * bw; /* the second row of a pair */                       \
        const int fast = (FAST) && C % (STEP) == 0; /* then every block's length is too */ \
        /* every output column one input column times 1 (nearest, an identity W axis) */   \
        int w_gathers = 1;                                                                 \
        for (int64_t ox = 0; ox < out_w && w_gathers; ox++)                                \
            w_gathers = tw->count[ox] == 1 && tw->weight[ox * tw->width] == 1.0;           \
        for (int64_t r = row_begin; r < row_end; r++) {                                    \
            const int64_t b = r / out_h, oy = r % out_h;                                   \
            const T *src = inp + b * io->in_batch_stride;                                  \
            T *dst = out + b * io->out_batch_stride;                                       \
            if (oy == 0) /* prefix tokens pass through, bit for bit */                     \
                for (int64_t p = 0; p < P; p++)                                            \
                    memcpy(dst + p * ots, src + p * its, (size_t)C * sizeof(T));           \
            const int64_t sy = th->start[oy], ny = th->count[oy];                          \
            const double *wy = th->weight + oy * th->width;                                \
            const T *srow = src + (P + sy * in_w) * its; /* first input row read */        \
            T *drow = dst + (P + oy * out_w) * ots;                                        \
            const int row_is_copy = ny == 1 && wy[0] == 1.0;                               \
            if (row_is_copy && w_gathers) { /* the row is a gather of input tokens */      \
                for (int64_t ox = 0; ox < out_w; ox++)                                     \
                    memcpy(drow + ox * ots, srow + tw->start[ox] * its, (size_t)C * sizeof(T)); \
                continue;                                                                  \
            }                                                                              \
            const int direct = (DIRECT) && row_is_copy;                                    \
            const int fast_h = fast && (ny == 2 || ny == 4);                               \
            const int pair = fast_h && r + 1 < row_end && oy + 1 < out_h &&                \
                             th->count[oy + 1] == ny && th->start[oy + 1] - sy <= 1;        \
            const double *wy_b = wy + th->width; /* the pair's second row */               \
            const int64_t shift = pair ? th->start[oy + 1] - sy : 0;                       \
            for (int64_t c0 = 0; c0 < C; c0 += bw) {                                       \
                const int64_t lenw = C - c0 < bw ? C - c0 : bw;                            \
                const ACC *hrow = tmp;                                                     \
                int64_t hstride = bw;                                                      \
                if (direct) {                                                              \
                    hrow = (const ACC *)(const void *)(srow + c0);                         \
                    hstride = its;                                                         \
                } else if (fast_h) { /* H pass: 2 or 4 taps, maybe for two rows */         \
                    for (int64_t ix = 0; ix < in_w; ix++) {                                \
                        ACC *d = tmp + ix * bw, *d_b = tmp_b + ix * bw;                    \
                        const T *s = srow + ix * its + c0;                                 \
                        if (pair && ny == 4)                                               \
                            vitpe__hsum4x2_##SUF(d, d_b, s, in_w * its, wy, wy_b, shift, lenw); \
                        else if (pair)                                                     \
                            vitpe__hsum2x2_##SUF(d, d_b, s, in_w * its, wy, wy_b, shift, lenw); \
                        else if (ny == 4)                                                  \
                            vitpe__hsum4_##SUF(d, s, in_w * its, wy, lenw);                \
                        else                                                               \
                            vitpe__hsum2_##SUF(d, s, in_w * its, wy, lenw);                \
                    }                                                                      \
                } else { /* H pass: this row's vertical taps, every input column */        \
                    for (int64_t ix = 0; ix < in_w; ix++)                                  \
                        for (int64_t c = 0; c < lenw; c += CB)                             \
                            vitpe__hpass_##SUF(tmp + ix * bw + c, srow + ix * its + c0 + c,\
                                               in_w * its, wy, ny,                         \
                                               lenw - c < CB ? lenw - c : CB);             \
                }                                                                          \
                /* W pass: horizontal taps from the H-pass block into the output row(s) */ \
                vitpe__wrow_##SUF(drow + c0, ots, hrow, hstride, tw, lenw);                \
                if (pair) vitpe__wrow_##SUF(drow + out_w * ots + c0, ots, tmp_b, bw, tw, lenw); \
            }                                                                              \
            r += pair; /* row r + 1 is done */                                             \
        }                                                                                  \
    }

VITPE_DEFINE_ROWS(f32, float, float, 1, VITPE_F32_FAST, 8)
VITPE_DEFINE_ROWS(f64, double, double, 1, 0, 1)
/* Half types: STEP is a whole register block, so that every generic sum on a
 * block the fast sums also touch is a full register block too and keeps the
 * scratch in the same permuted order (a short block goes channel by channel,
 * in natural order). */
VITPE_DEFINE_ROWS(f16, uint16_t, float, 0, VITPE_HALF_FAST, VITPE_CB_f32)
VITPE_DEFINE_ROWS(bf16, uint16_t, float, 0, VITPE_HALF_FAST, VITPE_CB_f32)

static size_t vitpe__acc_size(int dtype) { return dtype == VITPE_F64 ? sizeof(double) : sizeof(float); }

int vitpe_scratch_bytes(size_t *bytes, const vitpe_plan *plan, const vitpe_io *io, int backward) {
    int st;
    if (!bytes || !plan) return VITPE_EINVAL;
    if ((st = vitpe__io_check(io))) return st;
    /* one channel block of a scratch row: the input grid's width (forward)
     * or dout's width (backward) times the block width */
    const size_t acc = vitpe__acc_size(io->dtype);
    const int64_t in_w = backward ? plan->w.out_size : plan->w.in_size;
    const size_t row = (size_t)in_w;
    const size_t cb = (size_t)vitpe__block_width(in_w, io->channels, (int64_t)acc);
    /* a grid row of C channels must be addressable even though the scratch
     * holds only a block of it: the passes index input rows with it */
    if (io->channels != 0 && row > SIZE_MAX / 2 / (size_t)io->channels / acc) return VITPE_EOVERFLOW;
    *bytes = 2 * row * cb * acc; /* two blocks: a pair of rows (float32) uses both */
    return VITPE_OK;
}

static int vitpe__run_rows(void *out, const void *inp, const vitpe_taps *th, const vitpe_taps *tw,
                           const vitpe_io *io, int64_t row_begin, int64_t row_end, void *scratch) {
    int st;
    if ((st = vitpe__io_check(io))) return st;
    if (th->n_out > 0 && io->batch > INT64_MAX / th->n_out) return VITPE_EOVERFLOW; /* B * rows */
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

