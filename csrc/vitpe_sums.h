/* vitpe_sums.h — the weighted sums of the CPU passes (internal: vitpe_cpu.c).
 *
 *   dst[c] = sum_k w[k] * src[k*stride + c]      k < n, c < len
 *
 * VITPE_DEFINE_WSUM   any n, one register block of channels (the generic sums)
 * vitpe__sumN_f32     n = 2 or 4, float32, a vector at a time over a block
 * VITPE_DEFINE_FAST_HALF   the same for float16 / bfloat16
 * Every form sums over k in order from w[0]*src[0], so all agree bitwise.
 */
#ifndef VITPE_SUMS_H
#define VITPE_SUMS_H

#include "vitpe_convert.h"

/* Weighted sum of n rows spaced `stride` elements apart, over len <= CB
 * channels:
 *   dst[c] = sum_k w[k] * src[k*stride + c]
 * A full block keeps its CB accumulators in registers across all taps; a
 * short block (the channel tail, or C < CB) goes channel by channel. Both
 * sum over k in order starting from w[0]*src[0], as ATen's interpolate
 * loops do, so they agree bitwise. n == 0 writes zeros (an input no output
 * reads gets a zero gradient). VEC/LD2/ST2: the vector type and its
 * load from SRC_T / store to DST_T. */
#define VITPE_DEFINE_WSUM(NAME, DST_T, SRC_T, ACC, LOAD, STORE, CB, VEC, LD2, ST2)         \
    VITPE_INLINE void NAME(DST_T *restrict dst, const SRC_T *restrict src, int64_t stride, \
                           const double *restrict w, int64_t n, int64_t len) {             \
        if (n == 0) {                                                                      \
            for (int64_t c = 0; c < len; c++) dst[c] = STORE((ACC)0);                      \
            return;                                                                        \
        }                                                                                  \
        VITPE_WSUM_BLOCK(DST_T, SRC_T, ACC, CB, VEC, LD2, ST2)                             \
        for (int64_t c = 0; c < len; c++) {                                                \
            ACC acc = (ACC)w[0] * LOAD(src[c]);                                            \
            for (int64_t k = 1; k < n; k++) acc += (ACC)w[k] * LOAD(src[k * stride + c]);  \
            dst[c] = STORE(acc);                                                           \
        }                                                                                  \
    }
#if VITPE_VECTOR
#define VITPE_WSUM_BLOCK(DST_T, SRC_T, ACC, CB, VEC, LD2, ST2)                             \
    if (len == CB) {                                                                       \
        enum { VL = sizeof(VEC) / sizeof(ACC), NV = CB / VL };                             \
        VEC acc[NV], x0, x1;                                                               \
        VEC wk = (ACC)w[0] - (VEC){0}; /* a broadcast (x - 0 is x, even for -0) */         \
        for (int j = 0; j < NV; j += 2) {                                                  \
            LD2(src + j * VL, x0, x1);                                                     \
            acc[j] = wk * x0;                                                              \
            acc[j + 1] = wk * x1;                                                          \
        }                                                                                  \
        for (int64_t k = 1; k < n; k++) {                                                  \
            const SRC_T *s = src + k * stride;                                             \
            wk = (ACC)w[k] - (VEC){0};                                                     \
            for (int j = 0; j < NV; j += 2) {                                              \
                LD2(s + j * VL, x0, x1);                                                   \
                acc[j] += wk * x0;                                                         \
                acc[j + 1] += wk * x1;                                                     \
            }                                                                              \
        }                                                                                  \
        for (int j = 0; j < NV; j += 2) ST2(dst + j * VL, acc[j], acc[j + 1]);             \
        return;                                                                            \
    }
#else
#define VITPE_WSUM_BLOCK(DST_T, SRC_T, ACC, CB, VEC, LD2, ST2)
#endif

/* ------------------------------------------------------------------------
 * Fast sums for 2 and 4 taps (bilinear and bicubic away from clamped
 * borders), float32 first:
 * sums a vector of 8 channels at a time, over a whole block, with the
 * weights broadcast once. The operations and their order are those of the
 * generic sums above (w[0]*x[0], then + w[k]*x[k] for k = 1, 2, ...), so the
 * results are bitwise the same; only the loop shape differs, and it is the
 * faster shape: the weights stay in registers, the loop carries no
 * accumulator array, and the block can span a whole token.
 *
 * The x2 forms serve two output rows from one read of the input rows: rows
 * oy and oy+1 of an upsample start 0 or 1 input rows apart, so 4 taps each
 * read 4 or 5 distinct rows instead of 8. The H pass streams its input rows
 * from L2 (a ViT-B row is 43 KB), and this halves that stream. VITPE_LDV is a volatile
 * load: it makes the compiler load a shared row once into a register
 * instead of folding the load into each multiply that uses it (which would
 * read it twice again). */
#if VITPE_VECTOR
#define VITPE_F32_FAST 1
#define VITPE_BCAST(w) ((float)(w) - (vitpe_f32x8){0})
#define VITPE_LD(p) (*(const vitpe_f32x8_u *)(const void *)(p))
#define VITPE_LDV(p) (*(const volatile vitpe_f32x8_u *)(const void *)(p))
#define VITPE_ST(p, v) (*(vitpe_f32x8_u *)(void *)(p) = (v))

/* dst[c] = sum_k w[k] * src[k*stride + c], k < 2 or 4, c < len (a multiple of 8) */
VITPE_INLINE void vitpe__sum2_f32(float *restrict dst, const float *restrict src, int64_t stride,
                                  const double *w, int64_t len) {
    const vitpe_f32x8 w0 = VITPE_BCAST(w[0]), w1 = VITPE_BCAST(w[1]);
    for (int64_t c = 0; c < len; c += 8) {
        vitpe_f32x8 a = w0 * VITPE_LD(src + c);
        a += w1 * VITPE_LD(src + stride + c);
        VITPE_ST(dst + c, a);
    }
}

VITPE_INLINE void vitpe__sum4_f32(float *restrict dst, const float *restrict src, int64_t stride,
                                  const double *w, int64_t len) {
    const vitpe_f32x8 w0 = VITPE_BCAST(w[0]), w1 = VITPE_BCAST(w[1]);
    const vitpe_f32x8 w2 = VITPE_BCAST(w[2]), w3 = VITPE_BCAST(w[3]);
    for (int64_t c = 0; c < len; c += 8) {
        vitpe_f32x8 a = w0 * VITPE_LD(src + c);
        a += w1 * VITPE_LD(src + stride + c);
        a += w2 * VITPE_LD(src + 2 * stride + c);
        a += w3 * VITPE_LD(src + 3 * stride + c);
        VITPE_ST(dst + c, a);
    }
}

/* dst_a as vitpe__sum2_f32 with wa; dst_b with wb over the rows `shift`
 * (0 or 1) further on */
VITPE_INLINE void vitpe__sum2x2_f32(float *restrict dst_a, float *restrict dst_b,
                                    const float *restrict src, int64_t stride, const double *wa,
                                    const double *wb, int64_t shift, int64_t len) {
    const vitpe_f32x8 a0 = VITPE_BCAST(wa[0]), a1 = VITPE_BCAST(wa[1]);
    const vitpe_f32x8 b0 = VITPE_BCAST(wb[0]), b1 = VITPE_BCAST(wb[1]);
    if (shift == 0) {
        for (int64_t c = 0; c < len; c += 8) {
            const vitpe_f32x8 x0 = VITPE_LDV(src + c), x1 = VITPE_LDV(src + stride + c);
            vitpe_f32x8 a = a0 * x0, b = b0 * x0;
            a += a1 * x1;
            b += b1 * x1;
            VITPE_ST(dst_a + c, a);
            VITPE_ST(dst_b + c, b);
        }
    } else {
        for (int64_t c = 0; c < len; c += 8) {
            const vitpe_f32x8 x1 = VITPE_LDV(src + stride + c);
            vitpe_f32x8 a = a0 * VITPE_LD(src + c), b = b0 * x1;
            a += a1 * x1;
            b += b1 * VITPE_LD(src + 2 * stride + c);
            VITPE_ST(dst_a + c, a);
            VITPE_ST(dst_b + c, b);
        }
    }
}

VITPE_INLINE void vitpe__sum4x2_f32(float *restrict dst_a, float *restrict dst_b,
                                    const float *restrict src, int64_t stride, const double *wa,
                                    const double *wb, int64_t shift, int64_t len) {
    const vitpe_f32x8 a0 = VITPE_BCAST(wa[0]), a1 = VITPE_BCAST(wa[1]);
    const vitpe_f32x8 a2 = VITPE_BCAST(wa[2]), a3 = VITPE_BCAST(wa[3]);
    const vitpe_f32x8 b0 = VITPE_BCAST(wb[0]), b1 = VITPE_BCAST(wb[1]);
    const vitpe_f32x8 b2 = VITPE_BCAST(wb[2]), b3 = VITPE_BCAST(wb[3]);
    if (shift == 0) {
        for (int64_t c = 0; c < len; c += 8) {
            const vitpe_f32x8 x0 = VITPE_LDV(src + c), x1 = VITPE_LDV(src + stride + c);
            const vitpe_f32x8 x2 = VITPE_LDV(src + 2 * stride + c);
            const vitpe_f32x8 x3 = VITPE_LDV(src + 3 * stride + c);
            vitpe_f32x8 a = a0 * x0, b = b0 * x0;
            a += a1 * x1;
            b += b1 * x1;
            a += a2 * x2;
            b += b2 * x2;
            a += a3 * x3;
            b += b3 * x3;
            VITPE_ST(dst_a + c, a);
            VITPE_ST(dst_b + c, b);
        }
    } else {
        for (int64_t c = 0; c < len; c += 8) {
            const vitpe_f32x8 x1 = VITPE_LDV(src + stride + c);
            const vitpe_f32x8 x2 = VITPE_LDV(src + 2 * stride + c);
            const vitpe_f32x8 x3 = VITPE_LDV(src + 3 * stride + c);
            vitpe_f32x8 a = a0 * VITPE_LD(src + c), b = b0 * x1;
            a += a1 * x1;
            b += b1 * x2;
            a += a2 * x2;
            b += b2 * x3;
            a += a3 * x3;
            b += b3 * VITPE_LD(src + 4 * stride + c);
            VITPE_ST(dst_a + c, a);
            VITPE_ST(dst_b + c, b);
        }
    }
}

/* The row engine's names for them: H pass (input -> scratch), W pass
 * (scratch -> output), pairs (H pass only) */
#define vitpe__hsum2_f32 vitpe__sum2_f32
#define vitpe__hsum4_f32 vitpe__sum4_f32
#define vitpe__wsum2_f32 vitpe__sum2_f32
#define vitpe__wsum4_f32 vitpe__sum4_f32
#define vitpe__hsum2x2_f32 vitpe__sum2x2_f32
#define vitpe__hsum4x2_f32 vitpe__sum4x2_f32

/* float16 / bfloat16: the same sums 16 channels a step (SUM2, SUM4:
 * dst[c] = sum_k w[k] * src[k*stride + c]), through the loads and stores of
 * the register blocks (LD2 from SRC_T, ST2 to DST_T: two vectors, the even
 * and the odd channels of 16 half values; the float scratch holds them in
 * that order, as full register blocks leave it, so the row engine takes
 * these only where C is a multiple of a register block). Widening on load
 * and one rounding on the final store, as there. Pairs are two plain H
 * sums: with two vectors per row, sharing four rows would need more than
 * the sixteen AVX2 registers. */
#define VITPE_DEFINE_SUMS16(SUM2, SUM4, DST_T, SRC_T, LD2, ST2)                             \
    VITPE_INLINE void SUM2(DST_T *restrict dst, const SRC_T *restrict src, int64_t stride, \
                          const double *w, int64_t len) {                                   \
        const vitpe_f32x8 w0 = VITPE_BCAST(w[0]), w1 = VITPE_BCAST(w[1]);                 \
        vitpe_f32x8 x0, x1;                                                                \
        for (int64_t c = 0; c < len; c += 16) {                                            \
            LD2(src + c, x0, x1);                                                          \
            vitpe_f32x8 a = w0 * x0, b = w0 * x1;                                          \
            LD2(src + stride + c, x0, x1);                                                 \
            a += w1 * x0;                                                                  \
            b += w1 * x1;                                                                  \
            ST2(dst + c, a, b);                                                            \
        }                                                                                  \
    }                                                                                      \
    VITPE_INLINE void SUM4(DST_T *restrict dst, const SRC_T *restrict src, int64_t stride, \
                          const double *w, int64_t len) {                                   \
        const vitpe_f32x8 w0 = VITPE_BCAST(w[0]), w1 = VITPE_BCAST(w[1]);                 \
        const vitpe_f32x8 w2 = VITPE_BCAST(w[2]), w3 = VITPE_BCAST(w[3]);                 \
        vitpe_f32x8 x0, x1;                                                                \
        for (int64_t c = 0; c < len; c += 16) {                                            \
            LD2(src + c, x0, x1);                                                          \
            vitpe_f32x8 a = w0 * x0, b = w0 * x1;                                          \
            LD2(src + stride + c, x0, x1);                                                 \
            a += w1 * x0;                                                                  \
            b += w1 * x1;                                                                  \
            LD2(src + 2 * stride + c, x0, x1);                                             \
            a += w2 * x0;                                                                  \
            b += w2 * x1;                                                                  \
            LD2(src + 3 * stride + c, x0, x1);                                             \
            a += w3 * x0;                                                                  \
            b += w3 * x1;                                                                  \
            ST2(dst + c, a, b);                                                            \
        }                                                                                  \
    }

/* H pass: half input -> float scratch; W pass: float scratch -> half output */
#define VITPE_DEFINE_FAST_HALF(SUF)                                                         \
    VITPE_DEFINE_SUMS16(vitpe__hsum2_##SUF, vitpe__hsum4_##SUF, float, uint16_t,             \
                        vitpe__ld2_##SUF, vitpe__st2_f32)                                  \
    VITPE_DEFINE_SUMS16(vitpe__wsum2_##SUF, vitpe__wsum4_##SUF, uint16_t, float,             \
                        vitpe__ld2_f32, vitpe__st2_##SUF)                                  \
    VITPE_INLINE void vitpe__hsum2x2_##SUF(float *restrict dst_a, float *restrict dst_b,     \
                                           const uint16_t *restrict src, int64_t stride,    \
                                           const double *wa, const double *wb,              \
                                           int64_t shift, int64_t len) {                    \
        vitpe__hsum2_##SUF(dst_a, src, stride, wa, len);                                   \
        vitpe__hsum2_##SUF(dst_b, src + shift * stride, stride, wb, len);                  \
    }                                                                                      \
    VITPE_INLINE void vitpe__hsum4x2_##SUF(float *restrict dst_a, float *restrict dst_b,     \
                                           const uint16_t *restrict src, int64_t stride,    \
                                           const double *wa, const double *wb,              \
                                           int64_t shift, int64_t len) {                    \
        vitpe__hsum4_##SUF(dst_a, src, stride, wa, len);                                   \
        vitpe__hsum4_##SUF(dst_b, src + shift * stride, stride, wb, len);                  \
    }
VITPE_DEFINE_FAST_HALF(bf16)
VITPE_DEFINE_FAST_HALF(f16)
#define VITPE_HALF_FAST 1
#else
#define VITPE_F32_FAST 0
#define VITPE_HALF_FAST 0
#endif

#endif /* VITPE_SUMS_H */
