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
 * float16 / bfloat16 <-> float32, bit-exact with c10::Half / c10::BFloat16 for
 * every non-NaN value (round to nearest even); a NaN stays a quiet NaN of the
 * same sign, where c10 writes the canonical 0x7FC0 for bfloat16. */

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

/* The passes are compiled twice, for AVX2 and for the baseline ISA, and the
 * dynamic loader picks one per CPU (GCC/Clang target_clones, an ifunc: ELF
 * with glibc). Both clones do the same float operations in the same order
 * -- the build has -ffp-contract=off, so the AVX2 clone has no FMA either
 * (measured on Zen 4: FMA gains nothing, separate multiply and add pipes
 * give the same throughput; the passes run near it, and writing the output
 * takes about a third of the time) -- and give bitwise the same results on
 * every CPU. */
#if defined(__GNUC__) && defined(__x86_64__) && defined(__ELF__) && defined(__GLIBC__)
#define VITPE_CLONES __attribute__((target_clones("avx2", "default")))
#define VITPE_INLINE static inline __attribute__((always_inline))
#else
#define VITPE_CLONES
#define VITPE_INLINE static inline
#endif

/* ------------------------------------------------------------------------
 * Channel blocks. The H pass writes, and the W pass reads back count[ox]
 * times per output token, a scratch block of in_w tokens x bw channels;
 * bw is a whole number of register blocks whose scratch block fits
 * VITPE_SCRATCH_BUDGET bytes (ViT-B, 14 columns: all 768 floats; DINOv2,
 * 37 columns: 384 of 1536). Within a block the generic sums run
 * VITPE_BLOCK_BYTES of accumulators at a time (64 floats / 32 doubles:
 * eight AVX2 registers); the float32 2- and 4-tap sums run the whole block
 * a vector at a time. Each output token is written bw channels at a time,
 * contiguous runs of whole cache lines. (Measured on Zen 4, single thread:
 * with the vector-at-a-time sums a 64 KB budget beat 16 KB by 5-10% on
 * ViT-B and DINOv2 float32, and by 1-5% for the other types; blocks of one
 * register block, channel blocks outside the row loop, were 13-30% slower:
 * they write each output token in many separate pieces.) */
#define VITPE_BLOCK_BYTES 256
#ifndef VITPE_SCRATCH_BUDGET
#define VITPE_SCRATCH_BUDGET (64 * 1024)
#endif

/* The scratch block's width in accumulators: as many register blocks as
 * fit the budget over in_w tokens, at least one, at most C. */
static int64_t vitpe__block_width(int64_t in_w, int64_t C, int64_t acc_size) {
    const int64_t cb = VITPE_BLOCK_BYTES / acc_size;
    int64_t blocks = (int64_t)VITPE_SCRATCH_BUDGET / (in_w * VITPE_BLOCK_BYTES);
    if (blocks < 1) blocks = 1;
    return blocks * cb < C ? blocks * cb : C;
}

/* A full block is held in 32-byte vectors (GNU C vector extensions, which
 * GCC and Clang lower to AVX2 or to pairs of SSE registers per clone); the
 * code is explicit so that the accumulators stay in registers whatever the
 * compiler's auto-vectorizer decides. Without the extensions every block
 * takes the channel-by-channel path, which does the same operations. */
#if defined(__GNUC__) && (defined(__clang__) || __GNUC__ >= 9)
#define VITPE_VECTOR 1
typedef float vitpe_f32x8 __attribute__((vector_size(32)));
typedef double vitpe_f64x4 __attribute__((vector_size(32)));
typedef uint32_t vitpe_u32x8 __attribute__((vector_size(32)));
typedef int32_t vitpe_i32x8 __attribute__((vector_size(32)));
/* the same, for loads and stores at any alignment (as immintrin's __m256_u) */
typedef float vitpe_f32x8_u __attribute__((vector_size(32), aligned(1), may_alias));
typedef double vitpe_f64x4_u __attribute__((vector_size(32), aligned(1), may_alias));
typedef uint32_t vitpe_u32x8_u __attribute__((vector_size(32), aligned(1), may_alias));

/* Loads and stores of two vectors of accumulators (64 bytes of float, or 32
 * bytes of a 16-bit type) from/to the storage type: LD2(p, a, b) and
 * ST2(p, a, b), statements. Macros, not functions: vectors passed by value
 * or by address make the compiler spill the accumulators to memory.
 * Vector casts between types of one size reinterpret the bits. */
#define vitpe__ld2_f32(p, a, b)                                                            \
    ((a) = *(const vitpe_f32x8_u *)(const void *)(p),                                      \
     (b) = *(const vitpe_f32x8_u *)(const void *)((p) + 8))
#define vitpe__st2_f32(p, a, b)                                                            \
    (*(vitpe_f32x8_u *)(void *)(p) = (a), *(vitpe_f32x8_u *)(void *)((p) + 8) = (b))
#define vitpe__ld2_f64(p, a, b)                                                            \
    ((a) = *(const vitpe_f64x4_u *)(const void *)(p),                                      \
     (b) = *(const vitpe_f64x4_u *)(const void *)((p) + 4))
#define vitpe__st2_f64(p, a, b)                                                            \
    (*(vitpe_f64x4_u *)(void *)(p) = (a), *(vitpe_f64x4_u *)(void *)((p) + 4) = (b))

/* 16-bit types: 16 values are loaded as eight 32-bit lanes; `a` takes the
 * even channels (low halves), `b` the odd ones (high halves). The channels
 * of a block are thus held permuted, which is harmless: the sums are per
 * channel, and the store interleaves them back the same way. Each value is
 * placed in the high half of a 32-bit word, as the scalar conversions above
 * begin, and the conversions are those above, lane by lane, branch-free. */
#define vitpe__ld2_halves(p, a, b, CONVERT)                                                \
    do {                                                                                   \
        const vitpe_u32x8 l_ = *(const vitpe_u32x8_u *)(const void *)(p);                  \
        (a) = CONVERT(l_ << 16);                                                           \
        (b) = CONVERT(l_ & 0xffff0000u);                                                   \
    } while (0)
#define vitpe__st2_halves(p, a, b, CONVERT)                                                \
    (*(vitpe_u32x8_u *)(void *)(p) = CONVERT(a) | (CONVERT(b) << 16))

/* bfloat16: a value is the high half of its float; stores round to nearest
 * even, a NaN stays NaN (quiet). The NaN test compares |u| as signed ints
 * (both sides are below 2^31): AVX2 has no unsigned compare, and its
 * emulation cost 6% of a bf16 forward. */
#define vitpe__bf16w_to_f32(w) ((vitpe_f32x8)(w))
#define vitpe__f32_to_bf16v(f) vitpe__f32_to_bf16_lanes((vitpe_u32x8)(f))
#define vitpe__f32_to_bf16_lanes(u)                                                        \
    (((vitpe_u32x8)((vitpe_i32x8)((u) & 0x7fffffffu) > 0x7f800000) & (((u) >> 16) | 0x40u)) | \
     (~(vitpe_u32x8)((vitpe_i32x8)((u) & 0x7fffffffu) > 0x7f800000) &                      \
      (((u) + 0x7fffu + (((u) >> 16) & 1u)) >> 16)))
#define vitpe__ld2_bf16(p, a, b) vitpe__ld2_halves(p, a, b, vitpe__bf16w_to_f32)
#define vitpe__st2_bf16(p, a, b) vitpe__st2_halves(p, a, b, vitpe__f32_to_bf16v)

/* float16: vitpe__f16_to_f32 / vitpe__f32_to_f16 with selects for the
 * branches; w is the half in the high 16 bits of a 32-bit word. (Statement
 * expressions: an inline function taking a vector would change its ABI with
 * the ISA, which GCC reports on every build.) */
#define vitpe__f16w_to_f32(w)                                                              \
    __extension__({                                                                        \
        const vitpe_u32x8 w_ = (w), sign_ = w_ & 0x80000000u, two_w_ = w_ + w_;            \
        const vitpe_f32x8 norm_ = (vitpe_f32x8)((two_w_ >> 4) + (0xE0u << 23)) * 0x1.0p-112f; \
        const vitpe_f32x8 denorm_ = (vitpe_f32x8)((two_w_ >> 17) | (126u << 23)) - 0.5f;   \
        const vitpe_u32x8 small_ = (vitpe_u32x8)(two_w_ < (1u << 27));                     \
        (vitpe_f32x8)(sign_ | (small_ & (vitpe_u32x8)denorm_) |                            \
                      (~small_ & (vitpe_u32x8)norm_));                                     \
    })
#define vitpe__f32_to_f16v(f)                                                              \
    __extension__({                                                                        \
        const vitpe_u32x8 w_ = (vitpe_u32x8)(f), shl1_w_ = w_ + w_, sign_ = w_ & 0x80000000u; \
        vitpe_f32x8 base_ = ((vitpe_f32x8)(w_ & 0x7fffffffu) * 0x1.0p+112f) * 0x1.0p-110f; \
        vitpe_u32x8 bias_ = shl1_w_ & 0xFF000000u;                                         \
        const vitpe_u32x8 low_ = (vitpe_u32x8)(bias_ < 0x71000000u);                       \
        bias_ = (low_ & 0x71000000u) | (~low_ & bias_);                                    \
        base_ = (vitpe_f32x8)((bias_ >> 1) + 0x07800000u) + base_;                         \
        const vitpe_u32x8 bits_ = (vitpe_u32x8)base_;                                      \
        const vitpe_u32x8 nonsign_ = ((bits_ >> 13) & 0x00007C00u) + (bits_ & 0x00000FFFu); \
        const vitpe_u32x8 nan_ = (vitpe_u32x8)(shl1_w_ > 0xFF000000u);                     \
        ((sign_ >> 16) | (nan_ & 0x7E00u) | (~nan_ & nonsign_)) & 0xffffu;                 \
    })
#define vitpe__ld2_f16(p, a, b) vitpe__ld2_halves(p, a, b, vitpe__f16w_to_f32)
#define vitpe__st2_f16(p, a, b) vitpe__st2_halves(p, a, b, vitpe__f32_to_f16v)
#else
#define VITPE_VECTOR 0
#endif

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
 * results are bitwise the same; only the loop shape differs. Measured
 * against the register blocks on the ViT-B 14 -> 32 bicubic forward: the
 * weights stay in registers, the loop carries no accumulator array, and the
 * block can span a whole token (bigger blocks were faster here, not slower).
 *
 * The x2 forms serve two output rows from one read of the input rows: rows
 * oy and oy+1 of an upsample start 0 or 1 input rows apart, so 4 taps each
 * read 4 or 5 distinct rows instead of 8. The H pass streams its input rows
 * from L2 (a ViT-B row is 43 KB), and this halves that stream; it took the
 * forward from 133 to 118 us on one Zen 4 core. VITPE_LDV is a volatile
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

/* Types without fast sums (float64, and every type without the vector
 * extensions): the row engine still names them, with FAST 0 (dead code). */
#define VITPE_NO_FAST_SUMS(SUF)                                                             \
    VITPE_INLINE void vitpe__hsum2_##SUF(void *d, const void *s, int64_t st, const double *w, \
                                         int64_t n) { (void)d, (void)s, (void)st, (void)w, (void)n; } \
    VITPE_INLINE void vitpe__hsum4_##SUF(void *d, const void *s, int64_t st, const double *w, \
                                         int64_t n) { (void)d, (void)s, (void)st, (void)w, (void)n; } \
    VITPE_INLINE void vitpe__wsum2_##SUF(void *d, const void *s, int64_t st, const double *w, \
                                         int64_t n) { (void)d, (void)s, (void)st, (void)w, (void)n; } \
    VITPE_INLINE void vitpe__wsum4_##SUF(void *d, const void *s, int64_t st, const double *w, \
                                         int64_t n) { (void)d, (void)s, (void)st, (void)w, (void)n; } \
    VITPE_INLINE void vitpe__hsum2x2_##SUF(void *da, void *db, const void *s, int64_t st,    \
                                           const double *wa, const double *wb, int64_t sh,  \
                                           int64_t n) {                                     \
        (void)da, (void)db, (void)s, (void)st, (void)wa, (void)wb, (void)sh, (void)n;      \
    }                                                                                      \
    VITPE_INLINE void vitpe__hsum4x2_##SUF(void *da, void *db, const void *s, int64_t st,    \
                                           const double *wa, const double *wb, int64_t sh,  \
                                           int64_t n) {                                     \
        (void)da, (void)db, (void)s, (void)st, (void)wa, (void)wb, (void)sh, (void)n;      \
    }
VITPE_NO_FAST_SUMS(f64)
#if !VITPE_VECTOR
VITPE_NO_FAST_SUMS(f32)
VITPE_NO_FAST_SUMS(bf16)
VITPE_NO_FAST_SUMS(f16)
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
#define VITPE_DEFINE_ROWS(SUF, T, ACC, LOAD, STORE, DIRECT, FAST, STEP, VEC, ACC_SUF)       \
    enum { VITPE_CB_##SUF = VITPE_BLOCK_BYTES / sizeof(ACC) };                             \
    VITPE_DEFINE_WSUM(vitpe__hpass_##SUF, ACC, T, ACC, LOAD, VITPE_ID, VITPE_CB_##SUF,     \
                      VEC, vitpe__ld2_##SUF, vitpe__st2_##ACC_SUF)                         \
    VITPE_DEFINE_WSUM(vitpe__wpass_##SUF, T, ACC, ACC, VITPE_ID, STORE, VITPE_CB_##SUF,    \
                      VEC, vitpe__ld2_##ACC_SUF, vitpe__st2_##SUF)                         \
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

VITPE_DEFINE_ROWS(f32, float, float, VITPE_ID, VITPE_ID, 1, VITPE_F32_FAST, 8, vitpe_f32x8, f32)
VITPE_DEFINE_ROWS(f64, double, double, VITPE_ID, VITPE_ID, 1, 0, 1, vitpe_f64x4, f64)
/* Half types: STEP is a whole register block, so that every generic sum on a
 * block the fast sums also touch is a full register block too and keeps the
 * scratch in the same permuted order (a short block goes channel by channel,
 * in natural order). */
VITPE_DEFINE_ROWS(f16, uint16_t, float, vitpe__f16_to_f32, vitpe__f32_to_f16, 0, VITPE_HALF_FAST,
                  VITPE_CB_f32, vitpe_f32x8, f32)
VITPE_DEFINE_ROWS(bf16, uint16_t, float, vitpe__bf16_to_f32, vitpe__f32_to_bf16, 0, VITPE_HALF_FAST,
                  VITPE_CB_f32, vitpe_f32x8, f32)

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
