/* test_util.h — what the C test suite (test_*.c) and the fuzz target
 * (fuzz_*.c) share: element values written independently of the kernels,
 * table layouts, the fast passes' arithmetic written plainly, and the
 * tolerance the fast passes are held to against the naive references.
 * Nothing here reports: each program counts and prints its own way.
 */
#ifndef VITPE_TEST_UTIL_H
#define VITPE_TEST_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "vitpe.h"

/* malloc that never returns NULL (0 bytes: 1): the harness aborts instead */
void *xmalloc(size_t bytes);

/* splitmix64: the next value of the stream *state */
uint64_t splitmix64(uint64_t *state);

/* ------------------------------------------------------------------------
 * Values. float16 / bfloat16 with c10's semantics (round to nearest even,
 * overflow to inf, half subnormals kept), written independently of the
 * kernel's converters. get/set go through double; dt is a vitpe_dtype. */

uint32_t f2u(float f);
float u2f(uint32_t u);
float h2f(uint16_t h);
uint16_t f2h(float f);
float b2f(uint16_t b);
uint16_t f2b(float f);
const char *dtype_name(int dt);
size_t dtype_size(int dt);
double get(const void *p, int dt, int64_t i);
void set(void *p, int dt, int64_t i, double v);
/* The spacing of the storage format at |v| (one unit in the last place). */
double ulp(int dt, double v);
/* Bit patterns a prefix token must survive, which % 5: a quiet and a
 * signaling NaN with payloads, -0, -inf, the smallest subnormal. */
void set_special(void *p, int dt, int64_t i, int which);

/* ------------------------------------------------------------------------
 * Tables (B, T, C): element (b, t, c) at b*bs + t*ts + c, channel stride 1. */

typedef struct layout {
    int64_t B, T, C, bs, ts;
} layout;

static inline int64_t at(const layout *L, int64_t b, int64_t t, int64_t c) { return b * L->bs + t * L->ts + c; }

/* ------------------------------------------------------------------------
 * Axes and modes */

/* sf moved to the nearest value with floor(in * sf) == out, the scale
 * factors F.interpolate accepts for these sizes */
double fit_scale_factor(int64_t in, int64_t out, double sf);
/* What `mode` accepts (vitpe_mode_get_info; a mode the library does not
 * know accepts nothing). */
vitpe_mode_info mode_info(int mode);
/* The largest align_corners / antialias flag the mode accepts (0 or 1). */
int mode_max_align_corners(int mode);
int mode_max_antialias(int mode);

/* ------------------------------------------------------------------------
 * The fast passes' arithmetic and their tolerance */

/* One output element of the fast passes over tables th/tw (forward or
 * adjoint), written plainly: per tap of its W window, the H sum over the
 * input column (accumulator type, taps in order, the first a product), then
 * the W sum over those; the caller rounds once to storage. Register blocks,
 * channel tails, output pairs, rows read in place and gathered rows must
 * all give exactly these bits (the GPU kernels are held to the CPU op bit
 * for bit). src: the table read, Ls its layout, P its prefix tokens. */
double reference_sum(const void *src, const layout *Ls, int dt, int64_t b, int64_t P, const vitpe_taps *th,
                     int64_t oy, const vitpe_taps *tw, int64_t ox, int64_t c);

/* mag[(b * T + t) * C + c] = sum |wy * wx * src| over the terms summed into
 * element (b, t, c) of the table written (forward: a gather over the
 * forward tables; backward: their scatter), T its tokens; prefix tokens
 * |src|. xmalloc'ed, B * T * Ls->C doubles. */
double *term_magnitudes(const vitpe_plan *plan, int backward, const void *src, const layout *Ls, int dt,
                        int64_t P, int64_t B, int64_t T);

/* How far the fast pass (n_fast terms summed in the accumulator type, along
 * H then W) and the naive one (up to n_ref terms in double) may be apart
 * where the terms' magnitudes sum to m: both sums' error bounds, plus
 * `extra`, plus one unit of storage for the half types (the two sums may
 * straddle a rounding boundary). g, r: the two results. */
double naive_tolerance(int dt, double m, int64_t n_fast, int64_t n_ref, double extra, double g, double r);

#endif /* VITPE_TEST_UTIL_H */
