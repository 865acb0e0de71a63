/* fuzz_vitpe.h — what the fuzz target's two files share: fuzz_vitpe.c
 * (decoding an input into a resize, the axis contract, the plan stage, the
 * drivers) and fuzz_checks.c (tensors, the plan's tables, forward and
 * backward held to their contract and references). See fuzz_vitpe.c.
 */
#ifndef VITPE_FUZZ_VITPE_H
#define VITPE_FUZZ_VITPE_H

#include <stddef.h>
#include <stdint.h>

#include "vitpe.h"
#include "test_util.h"

#define LIM ((int64_t)1 << 24)        /* vitpe's largest axis */
#define MAX_ELEMS ((int64_t)1 << 17)  /* per tensor buffer */
#define MAX_WORK ((int64_t)1 << 21)   /* multiply-adds of one naive/reference pass */
#define MAX_PLAN_BYTES ((size_t)4 << 20)
#define MAX_SCRATCH_BYTES ((size_t)4 << 20)
#define MAX_ADJ_SWEEP ((int64_t)1 << 18) /* in + out of an axis whose adjoint is measured */
/* ------------------------------------------------------------------------
 * Findings (fuzz_vitpe.c) */

extern int g_failed;        /* findings in this execution */
/* how far executions got: plans built, directions run over all rows and
 * compared (to their arithmetic, to naive), adjoint identities checked */
extern long long g_reach[5];
extern char g_case[512];    /* what this execution decoded, printed with each finding */

void finding(const char *fmt, ...);
#define CHECK(cond, ...) ((cond) ? 1 : (finding(__VA_ARGS__), 0))

/* The library's allocations (fuzz_vitpe.c): between track(fail_in) and
 * untrack() they are counted (untrack returns mallocs minus frees), and the
 * fail_in-th malloc (1-based; 0: none) returns NULL. Without the link-time
 * wrap (VITPE_FUZZ_WRAP_MALLOC) nothing is counted and nothing fails. */
void track(int fail_in);
int64_t untrack(void);
#ifdef VITPE_FUZZ_WRAP_MALLOC
#define CAN_FAIL_MALLOC 1
#else
#define CAN_FAIL_MALLOC 0
#endif

/* ------------------------------------------------------------------------
 * Reading the input: exhausted input reads as zero bytes */

typedef struct reader { const uint8_t *p; size_t n; } reader;
static inline unsigned u8(reader *r) { return r->n ? (r->n--, *r->p++) : 0u; }
static inline uint64_t bytes_le(reader *r, int k) {
    uint64_t v = 0;
    for (int i = 0; i < k; i++) v |= (uint64_t)u8(r) << (8 * i);
    return v;
}
static inline int64_t pick(reader *r, int64_t lo, int64_t hi) { /* [lo, hi] */
    const uint64_t span = (uint64_t)hi - (uint64_t)lo + 1; /* 0: all of int64 */
    const int k = span == 0 || span > 0xffffffffu ? 8 : span > 65536 ? 4 : span > 256 ? 2 : 1;
    const uint64_t v = bytes_le(r, k);
    return (int64_t)((uint64_t)lo + (span ? v % span : v));
}

/* ------------------------------------------------------------------------
 * Tensors (fuzz_checks.c): (B, T, C) with element (b, t, c) at
 * b*bs + t*ts + c, for any strides (negative, zero, overlapping), in a
 * buffer of exactly the extent they span, so that ASan sees any access past
 * either end. cover[i] counts the elements at buffer element i: 0 is
 * padding, 2 an overlap (such an output is checked for memory safety only). */

typedef struct tensor {
    layout L;
    int dt;
    int64_t lo, n;          /* buffer element 0 is offset lo (<= 0) */
    unsigned char *mem, *cover;
    int disjoint;           /* no two elements share memory */
} tensor;

static inline void *origin(const tensor *x) { return x->mem + (size_t)(-x->lo) * dtype_size(x->dt); }
void tensor_free(tensor *x);

/* ------------------------------------------------------------------------
 * The checks (fuzz_checks.c) */

/* The plan's tables against the axes and the layout vitpe_plan_measure gave. */
void check_plan(const vitpe_plan *p, const vitpe_axis *h, const vitpe_axis *w, const vitpe_plan_layout *L);

typedef struct direction {
    int backward;
    const vitpe_plan *plan;
    const vitpe_taps *th, *tw; /* the tables it runs over */
    vitpe_io io;
    int64_t rows;              /* io.batch * th->n_out, -1 where that overflows */
} direction;


/* One library call over rows [r0, r1). `null`: 0 passes a scratch of
 * exactly the size vitpe_scratch_bytes gives; 1, 2, 3 pass NULL for dst,
 * src, scratch; 4 a 64-byte dummy scratch (for calls that must not run). */
int run(const direction *d, void *dst, const void *src, int64_t r0, int64_t r1, int null);
/* One direction: forward (src inp, dst out) or backward (src dout, dst dinp)
 * over tensors decoded from r, held to the contract and the references.
 * Leaves src and dst in *x, *y for the adjoint identity when both are
 * float64, finite and disjoint. */
void run_direction(reader *r, const vitpe_plan *plan, const vitpe_axis *h, const vitpe_axis *w,
                   const vitpe_io *shape, int backward, tensor *x, tensor *y);
/* <A x, y> == <x, A^T y> over the grid tokens (float64 data). */
void check_adjoint(const vitpe_io *io, const tensor *x, const tensor *Ax, const tensor *y, const tensor *ATy);

#endif /* VITPE_FUZZ_VITPE_H */
