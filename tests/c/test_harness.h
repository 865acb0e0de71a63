/* test_harness.h — the C test suite's harness (test_harness.c): reporting,
 * deterministic randomness, cases and their buffers, and the comparisons
 * every group of checks uses. The groups: test_plan.c, test_sweep.c,
 * test_exact.c, test_errors.c, test_grids.c; test_main.c runs them in a fixed order (the
 * random stream, and so each case, depends on it).
 */
#ifndef VITPE_TEST_HARNESS_H
#define VITPE_TEST_HARNESS_H

#include <stdint.h>

#include "test_util.h"

/* ------------------------------------------------------------------------
 * Reporting */

extern int n_passed, n_failed;
extern double worst_ratio[4];            /* per dtype: the largest |fast - naive| / tolerance seen */
extern int64_t n_compared[4], n_differ[4]; /* per dtype: grid elements compared, not bitwise equal */
extern char case_name[512];              /* the case being checked, printed with every failure */

/* Records one check (ok: passed); prints a failure with the case
 * description and the printf-style message. Returns ok. */
int record(int ok, const char *check, const char *fmt, ...);

/* ------------------------------------------------------------------------
 * Deterministic randomness (splitmix64; main may reseed rng_state) */

extern uint64_t rng_state;
uint64_t rng_next(void);
double rng_uniform(void);             /* [0, 1) */
int64_t rng_int(int64_t lo, int64_t hi); /* [lo, hi] */

/* ------------------------------------------------------------------------
 * Buffers. Input padding is filled with NaN bytes so that a read of
 * padding shows up in the results; output padding with a sentinel byte that
 * must come back unchanged. Buffers are allocated to their exact extent so
 * that AddressSanitizer catches any access past the last element. */

/* Elements from the first to one past the last: the exact allocation. */
int64_t extent(const layout *L);
/* mask[i] = 1 where element i of the buffer belongs to the table */
unsigned char *element_mask(const layout *L);
void *alloc_filled(const layout *L, int dt, unsigned char byte);
/* Random finite data in [-amp, amp) (never -0); with `specials`, some
 * prefix elements get set_special's bit patterns. Padding stays as is. */
void fill_random(void *p, const layout *L, int64_t P, int dt, double amp, int specials);

/* ------------------------------------------------------------------------
 * Cases */

typedef struct tcase {
    vitpe_axis h, w;
    int dtype;
    int64_t B, P, C;
    int64_t in_pad, out_pad; /* elements between tokens */
    int in_bcast;            /* input (forward) / dout (backward) batch stride 0 */
} tcase;

/* An axis in -> out; with_sf: a random scale_factor that gives these sizes */
vitpe_axis make_axis(int64_t in, int64_t out, int mode, int ac, int aa, int dtype, int with_sf);
/* Sets case_name to the case, under the group's name `suite`. */
void describe(const tcase *tc, const char *suite);
/* The layouts of one direction. Forward: src = inp, dst = out. Backward:
 * src = dout (the forward's output shape), dst = dinp. */
layout src_layout(const tcase *tc, int backward);
layout dst_layout(const tcase *tc, int backward);
vitpe_io make_io(const tcase *tc, const layout *src, const layout *dst);
/* Runs the fast pass over rows [r0, r1) with a fresh scratch of exactly the
 * advertised size; returns its status. */
int run_rows(int backward, void *dst, const void *src, const vitpe_plan *plan, const vitpe_io *io, int64_t r0,
             int64_t r1);

/* ------------------------------------------------------------------------
 * Comparisons (each records one check, or one per failure shown) */

/* Fast vs naive on the grid tokens, to naive_tolerance; mag from
 * term_magnitudes. Counts into worst_ratio, n_compared, n_differ. */
int compare_grid(const char *check, const void *got, const void *ref, const double *mag, const layout *L,
                 int64_t P, int dt, int64_t n_fast, int64_t n_ref);
/* Prefix tokens: bitwise (the fast pass copies bits) or by value (the naive
 * one goes through double, where a NaN may lose its payload). */
int check_prefix(const char *check, const void *got, const layout *Ld, const void *src, const layout *Ls,
                 int64_t P, int dt, int bitwise);
/* a and b hold the same elements bit for bit; their padding still holds
 * the fill bytes pad_a / pad_b. */
int compare_bits(const char *check, const void *a, unsigned char pad_a, const void *b, unsigned char pad_b,
                 const layout *L, int dt);
/* Every grid element of `got` is reference_sum's value rounded to storage,
 * bit for bit (NaN payloads are not compared). */
void check_arithmetic(const char *check, const void *got, const void *src, const tcase *tc,
                      const vitpe_plan *plan, int backward);

/* ------------------------------------------------------------------------
 * The groups of checks */

/* test_plan.c */
void check_plan(const vitpe_plan *plan, const vitpe_axis *h, const vitpe_axis *w);
void check_equivalent_plans(const vitpe_plan *plan, const tcase *tc);
/* test_sweep.c */
void sweep(void);
void fast_paths(void);
/* test_exact.c */
void identity_sweep(void);
void constant_sweep(void);
void rounding_check(int dt);
void nan_channels(void);
/* test_errors.c */
void errors(void);
void batch_overflow(void);
/* test_grids.c */
void grid_plans(void);
void grid_errors(void);
void grid_identity(void);
void grid_stages(void);
void grid_sweep(void);
void grid_positions(void);

#endif /* VITPE_TEST_HARNESS_H */
