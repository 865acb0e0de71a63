/* vitpe_convert.h — element types of the CPU passes (internal: vitpe_cpu.c,
 * vitpe_naive.c; include after vitpe.h).
 *
 *   float16 / bfloat16 <-> float32   scalar, bit-exact with c10
 *   vitpe_f32x8, vitpe_f64x4 ...     32-byte GNU C vectors (VITPE_VECTOR 1)
 *   vitpe__ld2_SUF / vitpe__st2_SUF  two vectors of accumulators from/to a
 *                                    storage type, SUF in f32 f64 f16 bf16
 *   VITPE_CLONES, VITPE_INLINE       the ISA clones the passes are built as
 *   vitpe__io_check                  the io contract (dtype one of these four)
 */
#ifndef VITPE_CONVERT_H
#define VITPE_CONVERT_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "vitpe.h"

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
 -- the build has -ffp-contract=off, so the AVX2 clone has no FMA either:
 * the passes are bound by loads and stores, not by the multiply and add
 * pipes, so a fused multiply-add would buy little and cost the bitwise
 * agreement with ATen -- and give bitwise the same results on every CPU. */
#if defined(__GNUC__) && defined(__x86_64__) && defined(__ELF__) && defined(__GLIBC__)
#define VITPE_CLONES __attribute__((target_clones("avx2", "default")))
#define VITPE_INLINE static inline __attribute__((always_inline))
#else
#define VITPE_CLONES
#define VITPE_INLINE static inline
#endif

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
 * emulation takes extra instructions per vector on every store. */
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

static inline int vitpe__io_check(const vitpe_io *io) {
    if (!io || io->dtype < VITPE_F32 || io->dtype > VITPE_BF16) return VITPE_EINVAL;
    if (io->batch < 0 || io->prefix < 0 || io->channels < 0 || io->suffix < 0) return VITPE_EINVAL;
    return VITPE_OK;
}

#endif /* VITPE_CONVERT_H */
