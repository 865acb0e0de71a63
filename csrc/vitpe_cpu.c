/* vitpe_cpu.c — CPU forward and backward passes (the naive references they
 * are held to are in vitpe_naive.c; the sums they run, in vitpe_sums.h).
 *
 *   inp  (B, P + Tin*Hin*Win    + S, C)   token-major, channel stride 1
 *   out  (B, P + Tout*Hout*Wout + S, C)   (T = 1 below rank 3, H = 1 at rank 1)
 *
 * Forward, per output grid row oy of each T slice (one work item; items are
 * independent), the row engine:
 *   tmp[ix, c]        = sum_k wy[oy,k] * inp[b, P + (sy[oy]+k)*Win + ix, c]   (H pass)
 *   out[b, P+oy*Wout+ox, c] = sum_k wx[ox,k] * tmp[sx[ox]+k, c]               (W pass)
 * and where the T axis is resized, per output slab row, the T pass:
 *   out[b, P + t*Hout*Wout + s, c] = sum_k wt[t,k] * mid[b, (st[t]+k)*Hout*Wout + s, c]
 * (vitpe_stages.h: which of them a run takes, in one stage or two).
 * Backward runs the same passes over the adjoint tables, in the reverse
 * order, from dout's grid to dinp's: a gather, each dinp element written
 * once with "=" (never accumulated), so the result does not depend on how
 * rows are split between threads.
 *
 * Accumulation is in float (double for float64); half types are widened on
 * load and rounded once on the final store (the slabs between two stages
 * stay float). Row work items own their output rows, so the shim may run
 * any partition of a stage's rows concurrently.
 */
#include <stdlib.h>
#include <string.h>

#include "vitpe.h"
#include "vitpe_taps.h"
#include "vitpe_sums.h"
#include "vitpe_stages.h"

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
 * -> (th.n_out, tw.n_out) resize of each of g->slices slices of each of
 * g->batch tables (a row r is slice b % slices of table b / slices, b = r /
 * th.n_out); the GRID stage of every run (vitpe_stages.h). Pointers are at
 * the first grid token; prefix and suffix tokens are the caller's.
 * Per row and channel block: H pass (input rows -> scratch), W pass (scratch
 * -> output row). Two shortcuts, both exact:
 *  - GATHER (a constant: TI is TO): a row whose every tap, vertical and
 *    horizontal, is one input times 1 (nearest modes, identity axes) is a
 *    gather: tokens are copied bit for bit, as ATen's nearest kernels copy them;
 *  - DIRECT (a constant: TI is ACC) lets a row whose vertical taps are one
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
 * second only used by pairs).
 * The engines NAME read TI and write TO through the sums of HSUF (the H
 * pass, TI -> ACC) and WSUF (the W pass, ACC -> TO): one type in and out
 * (f32, f64, f16, bf16), or a half type and float (f16_f32, f32_f16, ...),
 * the two stages of a rank-3 run on half data, whose slabs in between are
 * float. The half types' full register blocks hold their channels permuted
 * (vitpe_convert.h: even, then odd channels of each 16); float -> float
 * sums keep any order, so a float slab written by f16_f32 holds that order
 * in exactly the blocks a half-type sum over the same channels reads back
 * (full blocks of CB channels from channel 0 of each token, a natural-order
 * tail), and f32_f16 or the T pass's float -> half sums restore it. */
typedef struct vitpe__grid {
    int64_t batch, slices, channels;
    int64_t in_bs, in_ss, in_ts;    /* the tensor read: batch, slice, token strides */
    int64_t out_bs, out_ss, out_ts; /* the tensor written */
} vitpe__grid;

#define VITPE_DEFINE_ROWS(NAME, TI, TO, ACC, HSUF, WSUF, DIRECT, GATHER, FAST, STEP)      \
    /* W pass of one row and channel block: h holds in_w tokens, hstride apart */          \
    VITPE_INLINE void vitpe__wrow_##NAME(TO *drow, int64_t ots, const ACC *h, int64_t hstride, \
                                         const vitpe_taps *tw, int64_t len) {              \
        const int64_t CB = VITPE_CB_##WSUF;                                                \
        const int fast = (FAST) && len % (STEP) == 0;                                      \
        for (int64_t ox = 0; ox < tw->n_out; ox++) {                                       \
            const ACC *hx = h + tw->start[ox] * hstride;                                   \
            const double *wx = tw->weight + ox * tw->width;                                \
            const int64_t nx = tw->count[ox];                                              \
            TO *o = drow + ox * ots;                                                       \
            if (fast && nx == 4)                                                           \
                vitpe__wsum4_##WSUF(o, hx, hstride, wx, len);                              \
            else if (fast && nx == 2)                                                      \
                vitpe__wsum2_##WSUF(o, hx, hstride, wx, len);                              \
            else                                                                           \
                for (int64_t c = 0; c < len; c += CB)                                      \
                    vitpe__wpass_##WSUF(o + c, hx + c, hstride, wx, nx,                    \
                                        len - c < CB ? len - c : CB);                      \
        }                                                                                  \
    }                                                                                      \
    VITPE_CLONES static void vitpe__rows_##NAME(TO *out, const TI *inp, const vitpe_taps *th, \
                                                const vitpe_taps *tw, const vitpe__grid *g, \
                                                int64_t row_begin, int64_t row_end,        \
                                                ACC *tmp) {                                \
        const int64_t CB = VITPE_CB_##HSUF;                                                \
        const int64_t C = g->channels;                                                     \
        const int64_t in_w = tw->n_in, out_h = th->n_out, out_w = tw->n_out;               \
        const int64_t its = g->in_ts, ots = g->out_ts;                                     \
        const int64_t bw = vitpe__block_width(in_w, C, sizeof(ACC)); /* scratch stride */  \
        ACC *tmp_b = tmp + in_w * bw; /* the second row of a pair */                       \
        const int fast = (FAST) && C % (STEP) == 0; /* then every block's length is too */ \
        /* every output column one input column times 1 (nearest, an identity W axis) */   \
        int w_gathers = (GATHER);                                                          \
        for (int64_t ox = 0; ox < out_w && w_gathers; ox++)                                \
            w_gathers = tw->count[ox] == 1 && tw->weight[ox * tw->width] == 1.0;           \
        for (int64_t r = row_begin; r < row_end; r++) {                                    \
            const int64_t b = r / out_h, oy = r % out_h;                                   \
            const int64_t bo = b / g->slices, bs = b % g->slices;                          \
            const TI *src = inp + bo * g->in_bs + bs * g->in_ss;                           \
            TO *dst = out + bo * g->out_bs + bs * g->out_ss;                               \
            const int64_t sy = th->start[oy], ny = th->count[oy];                          \
            const double *wy = th->weight + oy * th->width;                                \
            const TI *srow = src + sy * in_w * its; /* first input row read */             \
            TO *drow = dst + oy * out_w * ots;                                             \
            const int row_is_copy = ny == 1 && wy[0] == 1.0;                               \
            if (row_is_copy && w_gathers) { /* the row is a gather of input tokens */      \
                for (int64_t ox = 0; ox < out_w; ox++)                                     \
                    memcpy(drow + ox * ots, srow + tw->start[ox] * its, (size_t)C * sizeof(TI)); \
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
                        const TI *s = srow + ix * its + c0;                                \
                        if (pair && ny == 4)                                               \
                            vitpe__hsum4x2_##HSUF(d, d_b, s, in_w * its, wy, wy_b, shift, lenw); \
                        else if (pair)                                                     \
                            vitpe__hsum2x2_##HSUF(d, d_b, s, in_w * its, wy, wy_b, shift, lenw); \
                        else if (ny == 4)                                                  \
                            vitpe__hsum4_##HSUF(d, s, in_w * its, wy, lenw);               \
                        else                                                               \
                            vitpe__hsum2_##HSUF(d, s, in_w * its, wy, lenw);               \
                    }                                                                      \
                } else { /* H pass: this row's vertical taps, every input column */        \
                    for (int64_t ix = 0; ix < in_w; ix++)                                  \
                        for (int64_t c = 0; c < lenw; c += CB)                             \
                            vitpe__hpass_##HSUF(tmp + ix * bw + c, srow + ix * its + c0 + c, \
                                                in_w * its, wy, ny,                        \
                                                lenw - c < CB ? lenw - c : CB);            \
                }                                                                          \
                /* W pass: horizontal taps from the H-pass block into the output row(s) */ \
                vitpe__wrow_##NAME(drow + c0, ots, hrow, hstride, tw, lenw);               \
                if (pair) vitpe__wrow_##NAME(drow + out_w * ots + c0, ots, tmp_b, bw, tw, lenw); \
            }                                                                              \
            r += pair; /* row r + 1 is done */                                             \
        }                                                                                  \
    }

VITPE_DEFINE_ROWS(f32, float, float, float, f32, f32, 1, 1, VITPE_F32_FAST, 8)
VITPE_DEFINE_ROWS(f64, double, double, double, f64, f64, 1, 1, 0, 1)
/* Half types: STEP is a whole register block, so that every generic sum on a
 * block the fast sums also touch is a full register block too and keeps the
 * scratch in the same permuted order (a short block goes channel by channel,
 * in natural order). */
VITPE_DEFINE_ROWS(f16, uint16_t, uint16_t, float, f16, f16, 0, 1, VITPE_HALF_FAST, VITPE_CB_f32)
VITPE_DEFINE_ROWS(bf16, uint16_t, uint16_t, float, bf16, bf16, 0, 1, VITPE_HALF_FAST, VITPE_CB_f32)
/* The two GRID stages of a rank-3 run on half data: half -> float slabs
 * (forward), float slabs -> half (backward). */
VITPE_DEFINE_ROWS(f16_f32, uint16_t, float, float, f16, f32, 0, 0, VITPE_HALF_FAST, VITPE_CB_f32)
VITPE_DEFINE_ROWS(bf16_f32, uint16_t, float, float, bf16, f32, 0, 0, VITPE_HALF_FAST, VITPE_CB_f32)
VITPE_DEFINE_ROWS(f32_f16, float, uint16_t, float, f32, f16, 1, 0, VITPE_HALF_FAST, VITPE_CB_f32)
VITPE_DEFINE_ROWS(f32_bf16, float, uint16_t, float, f32, bf16, 1, 0, VITPE_HALF_FAST, VITPE_CB_f32)

/* ------------------------------------------------------------------------
 * The T pass (the T stage of vitpe_stages.h): rows [row_begin, row_end) of
 * g->batch * tt.n_out * slab_h rows of slab_w tokens; token (b, t, s) of the
 * output is sum_k wt[t,k] * token (b, tt.start[t] + k, s) of the input,
 * slabs g->in_ss / g->out_ss elements apart (g->slices unused). Channel
 * blocks of CB from channel 0 of each token, the blocks of the row engine
 * (so a permuted float slab is read back in its own order, see above).
 * COPY (TI is TO): an output slab that is one input slab times 1 is copied
 * bit for bit, as the row engine's gathers. SUM: a generic sum TI -> TO. */
#define VITPE_DEFINE_TPASS(NAME, TI, TO, SUM, CB, COPY)                                    \
    VITPE_CLONES static void vitpe__tpass_##NAME(TO *out, const TI *inp, const vitpe_taps *tt, \
                                                 const vitpe__grid *g, int64_t slab_h,      \
                                                 int64_t slab_w, int64_t row_begin,         \
                                                 int64_t row_end) {                         \
        const int64_t C = g->channels, its = g->in_ts, ots = g->out_ts;                     \
        const int64_t rows_b = tt->n_out * slab_h; /* rows per table */                     \
        for (int64_t r = row_begin; r < row_end; r++) {                                     \
            const int64_t b = r / rows_b, t = (r % rows_b) / slab_h, y = r % slab_h;         \
            const int64_t n = tt->count[t];                                                 \
            const double *w = tt->weight + t * tt->width;                                   \
            const TI *src = inp + b * g->in_bs + tt->start[t] * g->in_ss + y * slab_w * its; \
            TO *dst = out + b * g->out_bs + t * g->out_ss + y * slab_w * ots;               \
            const int copy = (COPY) && n == 1 && w[0] == 1.0;                               \
            for (int64_t x = 0; x < slab_w; x++) {                                          \
                const TI *s = src + x * its;                                                \
                TO *d = dst + x * ots;                                                      \
                if (copy) {                                                                 \
                    memcpy(d, s, (size_t)C * sizeof(TI));                                   \
                    continue;                                                               \
                }                                                                           \
                for (int64_t c = 0; c < C; c += (CB))                                       \
                    SUM(d + c, s + c, g->in_ss, w, n, C - c < (CB) ? C - c : (CB));         \
            }                                                                               \
        }                                                                                   \
    }

/* half -> half in one sum (a T stage alone: H and W identities) */
VITPE_DEFINE_WSUM(vitpe__tsum_f16, uint16_t, uint16_t, float, vitpe__f16_to_f32, vitpe__f32_to_f16,
                  VITPE_CB_f32, vitpe_f32x8, vitpe__ld2_f16, vitpe__st2_f16)
VITPE_DEFINE_WSUM(vitpe__tsum_bf16, uint16_t, uint16_t, float, vitpe__bf16_to_f32, vitpe__f32_to_bf16,
                  VITPE_CB_f32, vitpe_f32x8, vitpe__ld2_bf16, vitpe__st2_bf16)
VITPE_DEFINE_TPASS(f32, float, float, vitpe__hpass_f32, VITPE_CB_f32, 1)
VITPE_DEFINE_TPASS(f64, double, double, vitpe__hpass_f64, VITPE_CB_f64, 1)
VITPE_DEFINE_TPASS(f16, uint16_t, uint16_t, vitpe__tsum_f16, VITPE_CB_f32, 1)
VITPE_DEFINE_TPASS(bf16, uint16_t, uint16_t, vitpe__tsum_bf16, VITPE_CB_f32, 1)
VITPE_DEFINE_TPASS(f16_f32, uint16_t, float, vitpe__hpass_f16, VITPE_CB_f32, 0)
VITPE_DEFINE_TPASS(bf16_f32, uint16_t, float, vitpe__hpass_bf16, VITPE_CB_f32, 0)
VITPE_DEFINE_TPASS(f32_f16, float, uint16_t, vitpe__wpass_f16, VITPE_CB_f32, 0)
VITPE_DEFINE_TPASS(f32_bf16, float, uint16_t, vitpe__wpass_bf16, VITPE_CB_f32, 0)

static size_t vitpe__acc_size(int dtype) { return dtype == VITPE_F64 ? sizeof(double) : sizeof(float); }

int vitpe_scratch_bytes(size_t *bytes, const vitpe_plan *plan, const vitpe_io *io, int backward) {
    int st;
    if (!bytes || !plan) return VITPE_EINVAL;
    if ((st = vitpe__io_check(io))) return st;
    /* one channel block of a scratch row: the input grid's width (forward)
     * or dout's width (backward) times the block width (the GRID stage; the
     * T pass needs none) */
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

/* The intermediate slabs' elements, B * mid grid * C, or VITPE_EOVERFLOW. */
static int vitpe__mid_elements(int64_t *n, const vitpe__staging *s, const vitpe_io *io) {
    int64_t grid;
    int st;
    if ((st = vitpe__mul64(&grid, s->mid_t * s->mid_h, s->mid_w))) return st;
    if ((st = vitpe__mul64(&grid, grid, io->channels))) return st;
    return vitpe__mul64(n, grid, io->batch);
}

int vitpe_cpu_stages(vitpe_stages *stages, const vitpe_plan *plan, const vitpe_io *io, int backward) {
    vitpe__staging s;
    int64_t mid = 0;
    int st;
    if (!stages) return VITPE_EINVAL;
    memset(stages, 0, sizeof(*stages));
    if ((st = vitpe__io_check(io))) return st;
    if ((st = vitpe__stage(&s, plan, io->batch, backward))) return st;
    if (s.count == 2 && (st = vitpe__mid_elements(&mid, &s, io))) return st;
    if ((uint64_t)mid > SIZE_MAX / vitpe__acc_size(io->dtype)) return VITPE_EOVERFLOW;
    stages->count = s.count;
    stages->rows[0] = s.rows[0];
    stages->rows[1] = s.count == 2 ? s.rows[1] : 0;
    stages->workspace_bytes = (size_t)mid * vitpe__acc_size(io->dtype);
    return VITPE_OK;
}

/* The grid engine of a (read, written) type pair, as a uniform signature:
 * pointers are void, types by the vitpe_dtype of each side (ACC_SIDE: the
 * accumulator type, a slab). */
enum { VITPE__DATA = 0, VITPE__SLAB = 1 };

static int vitpe__run_grid(void *out, const void *inp, int dtype, int in_side, int out_side,
                           const vitpe_taps *th, const vitpe_taps *tw, const vitpe__grid *g,
                           int64_t row_begin, int64_t row_end, void *scratch) {
    const int half_in = in_side == VITPE__DATA, half_out = out_side == VITPE__DATA;
    switch (dtype) {
    case VITPE_F32:
        vitpe__rows_f32((float *)out, (const float *)inp, th, tw, g, row_begin, row_end, (float *)scratch);
        return VITPE_OK;
    case VITPE_F64:
        vitpe__rows_f64((double *)out, (const double *)inp, th, tw, g, row_begin, row_end, (double *)scratch);
        return VITPE_OK;
    case VITPE_F16:
        if (half_in && half_out)
            vitpe__rows_f16((uint16_t *)out, (const uint16_t *)inp, th, tw, g, row_begin, row_end, (float *)scratch);
        else if (half_in)
            vitpe__rows_f16_f32((float *)out, (const uint16_t *)inp, th, tw, g, row_begin, row_end, (float *)scratch);
        else if (half_out)
            vitpe__rows_f32_f16((uint16_t *)out, (const float *)inp, th, tw, g, row_begin, row_end, (float *)scratch);
        else
            return VITPE_EINTERNAL;
        return VITPE_OK;
    default:
        if (half_in && half_out)
            vitpe__rows_bf16((uint16_t *)out, (const uint16_t *)inp, th, tw, g, row_begin, row_end, (float *)scratch);
        else if (half_in)
            vitpe__rows_bf16_f32((float *)out, (const uint16_t *)inp, th, tw, g, row_begin, row_end, (float *)scratch);
        else if (half_out)
            vitpe__rows_f32_bf16((uint16_t *)out, (const float *)inp, th, tw, g, row_begin, row_end, (float *)scratch);
        else
            return VITPE_EINTERNAL;
        return VITPE_OK;
    }
}

static int vitpe__run_t(void *out, const void *inp, int dtype, int in_side, int out_side,
                        const vitpe_taps *tt, const vitpe__grid *g, int64_t slab_h, int64_t slab_w,
                        int64_t row_begin, int64_t row_end) {
    const int half_in = in_side == VITPE__DATA, half_out = out_side == VITPE__DATA;
    switch (dtype) {
    case VITPE_F32:
        vitpe__tpass_f32((float *)out, (const float *)inp, tt, g, slab_h, slab_w, row_begin, row_end);
        return VITPE_OK;
    case VITPE_F64:
        vitpe__tpass_f64((double *)out, (const double *)inp, tt, g, slab_h, slab_w, row_begin, row_end);
        return VITPE_OK;
    case VITPE_F16:
        if (half_in && half_out)
            vitpe__tpass_f16((uint16_t *)out, (const uint16_t *)inp, tt, g, slab_h, slab_w, row_begin, row_end);
        else if (half_in)
            vitpe__tpass_f16_f32((float *)out, (const uint16_t *)inp, tt, g, slab_h, slab_w, row_begin, row_end);
        else if (half_out)
            vitpe__tpass_f32_f16((uint16_t *)out, (const float *)inp, tt, g, slab_h, slab_w, row_begin, row_end);
        else
            return VITPE_EINTERNAL;
        return VITPE_OK;
    default:
        if (half_in && half_out)
            vitpe__tpass_bf16((uint16_t *)out, (const uint16_t *)inp, tt, g, slab_h, slab_w, row_begin, row_end);
        else if (half_in)
            vitpe__tpass_bf16_f32((float *)out, (const uint16_t *)inp, tt, g, slab_h, slab_w, row_begin, row_end);
        else if (half_out)
            vitpe__tpass_f32_bf16((uint16_t *)out, (const float *)inp, tt, g, slab_h, slab_w, row_begin, row_end);
        else
            return VITPE_EINTERNAL;
        return VITPE_OK;
    }
}

/* Stage `stage` of a run (vitpe_stages.h) over rows [row_begin, row_end):
 * src/dst are the tensors read and written (io's "in" and "out"), mid the
 * workspace (two stages). */
static int vitpe__run_stage(void *dst, const void *src, const vitpe_plan *plan, const vitpe_io *io,
                            int backward, int stage, int64_t row_begin, int64_t row_end,
                            void *mid, void *scratch) {
    vitpe__staging s;
    int st;
    if ((st = vitpe__io_check(io))) return st;
    if ((st = vitpe__stage(&s, plan, io->batch, backward))) return st;
    if (stage < 0 || stage >= s.count) return VITPE_EINVAL;
    if (row_begin < 0 || row_end < row_begin || row_end > s.rows[stage]) return VITPE_EINVAL;
    if (row_begin == row_end || io->channels == 0) return VITPE_OK;
    if (!dst || !src) return VITPE_EINVAL;
    const int kind = s.kind[stage];
    if (kind == VITPE__STAGE_GRID && !scratch) return VITPE_EINVAL;
    if (s.count == 2) {
        int64_t n;
        if (!mid) return VITPE_EINVAL;
        if ((st = vitpe__mid_elements(&n, &s, io))) return st;
    }
    const int64_t es = io->dtype == VITPE_F64 ? 8 : io->dtype == VITPE_F32 ? 4 : 2;
    const int64_t C = io->channels, P = io->prefix, S = io->suffix;
    const int64_t its = io->in_token_stride, ots = io->out_token_stride;

    /* prefix and suffix tokens pass through, bit for bit, in stage 0: per
     * batch, with its first row */
    if (stage == 0) {
        const int64_t rows_b = s.rows[0] / io->batch;
        for (int64_t b = (row_begin + rows_b - 1) / rows_b; b * rows_b < row_end; b++) {
            const char *sb = (const char *)src + b * io->in_batch_stride * es;
            char *db = (char *)dst + b * io->out_batch_stride * es;
            for (int64_t p = 0; p < P + S; p++) {
                const int64_t ti = p < P ? p : p + s.grid_in, to = p < P ? p : p + s.grid_out;
                memcpy(db + to * ots * es, sb + ti * its * es, (size_t)(C * es));
            }
        }
    }

    /* the two sides of this stage: a tensor's grid (its prefix skipped), or
     * the slabs (B, mid_t, mid_h, mid_w, C) in the accumulator type */
    const int in_side = s.count == 2 && stage == 1 ? VITPE__SLAB : VITPE__DATA;
    const int out_side = s.count == 2 && stage == 0 ? VITPE__SLAB : VITPE__DATA;
    const int64_t slab = s.mid_h * s.mid_w; /* tokens of one slab */
    const void *in = in_side == VITPE__SLAB ? mid : (const char *)src + P * its * es;
    void *out = out_side == VITPE__SLAB ? mid : (char *)dst + P * ots * es;
    vitpe__grid g;
    g.batch = io->batch;
    g.channels = C;
    g.in_ts = in_side == VITPE__SLAB ? C : its;
    g.in_bs = in_side == VITPE__SLAB ? s.mid_t * slab * C : io->in_batch_stride;
    g.out_ts = out_side == VITPE__SLAB ? C : ots;
    g.out_bs = out_side == VITPE__SLAB ? s.mid_t * slab * C : io->out_batch_stride;
    /* consecutive T slices are one (H, W) grid apart */
    g.in_ss = (in_side == VITPE__SLAB ? slab : s.th->n_in * s.tw->n_in) * g.in_ts;
    g.out_ss = (out_side == VITPE__SLAB ? slab : s.th->n_out * s.tw->n_out) * g.out_ts;
    if (kind == VITPE__STAGE_GRID) { /* H and W passes per T slice */
        g.slices = s.count == 2 ? s.mid_t : s.tt->n_in;
        return vitpe__run_grid(out, in, io->dtype, in_side, out_side, s.th, s.tw, &g, row_begin, row_end,
                               scratch);
    }
    g.slices = 1; /* the T pass, over slabs of the (H, W) the GRID stage has or has not resized */
    return vitpe__run_t(out, in, io->dtype, in_side, out_side, s.tt, &g, s.count == 2 ? s.mid_h : s.th->n_out,
                        s.count == 2 ? s.mid_w : s.tw->n_out, row_begin, row_end);
}

int vitpe_forward_cpu_stage(void *out, const void *inp, const vitpe_plan *plan, const vitpe_io *io,
                            int stage, int64_t row_begin, int64_t row_end, void *workspace,
                            void *scratch) {
    if (!plan) return VITPE_EINVAL;
    return vitpe__run_stage(out, inp, plan, io, 0, stage, row_begin, row_end, workspace, scratch);
}

int vitpe_backward_cpu_stage(void *dinp, const void *dout, const vitpe_plan *plan,
                             const vitpe_io *io, int stage, int64_t row_begin, int64_t row_end,
                             void *workspace, void *scratch) {
    if (!plan || !plan->layout.with_adjoint) return VITPE_EINVAL;
    return vitpe__run_stage(dinp, dout, plan, io, 1, stage, row_begin, row_end, workspace, scratch);
}

/* One-stage runs only: a plan of two stages needs the workspace. */
static int vitpe__one_stage(const vitpe_plan *plan, const vitpe_io *io, int backward) {
    vitpe__staging s;
    int st;
    if ((st = vitpe__io_check(io))) return st;
    if ((st = vitpe__stage(&s, plan, io->batch, backward))) return st;
    return s.count == 1 ? VITPE_OK : VITPE_EINVAL;
}

int vitpe_forward_cpu(void *out, const void *inp, const vitpe_plan *plan, const vitpe_io *io,
                      int64_t row_begin, int64_t row_end, void *scratch) {
    int st;
    if (!plan) return VITPE_EINVAL;
    if ((st = vitpe__one_stage(plan, io, 0))) return st;
    return vitpe__run_stage(out, inp, plan, io, 0, 0, row_begin, row_end, NULL, scratch);
}

int vitpe_backward_cpu(void *dinp, const void *dout, const vitpe_plan *plan, const vitpe_io *io,
                       int64_t row_begin, int64_t row_end, void *scratch) {
    int st;
    if (!plan || !plan->layout.with_adjoint) return VITPE_EINVAL;
    if ((st = vitpe__one_stage(plan, io, 1))) return st;
    return vitpe__run_stage(dinp, dout, plan, io, 1, 0, row_begin, row_end, NULL, scratch);
}
