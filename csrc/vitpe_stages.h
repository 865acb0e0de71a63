/* vitpe_stages.h — how a plan's passes are staged, one decision for the CPU
 * and the GPU (internal: vitpe_cpu.c, vitpe_cuda.cu; include after vitpe.h).
 *
 * A run maps the src grid (Ts, Hs, Ws) to the dst grid (Td, Hd, Wd) over
 * the tables tt, th, tw of one direction (forward: out index -> input taps;
 * backward: the adjoint tables, dout's grid -> dinp's). Stages, each a pass
 * over every output row of its grid:
 *   GRID  the H and W passes of vitpe_cpu.c's row engine over each T slice
 *         (rows: B * slices * rows of the slice's output)
 *   T     the T pass: token (b, t, s) of the output is sum_k wt[t,k] *
 *         token (b, tt->start[t] + k, s) of the input, s running over a
 *         whole (H, W) slab (rows: B * Td * H, one slab row of W tokens each)
 * An axis whose table is one tap of weight 1 per output, in order (an axis
 * of unchanged size in most modes, the 1 -> 1 axes of rank 1 and 2) is not
 * run at all:
 *   T an identity          1 stage:  GRID, slices = Ts (every plan of rank 1, 2)
 *   H and W identities     1 stage:  T
 *   otherwise              2 stages: forward GRID then T, through
 *                          mid (B, Ts, Hd, Wd, C); backward T then GRID
 *                          (the forward's transpose), through mid (B, Td, Hs, Ws, C)
 * The intermediate slabs are held in the accumulator type (float, double for
 * float64), contiguous, so the result is rounded to storage once. Prefix
 * and suffix tokens are copied in stage 0.
 */
#ifndef VITPE_STAGES_H
#define VITPE_STAGES_H

#include <stdint.h>

#include "vitpe.h"

#define VITPE__STAGE_GRID 0
#define VITPE__STAGE_T 1

typedef struct vitpe__staging {
    int count;                      /* 1 or 2 */
    int kind[2];                    /* VITPE__STAGE_GRID or VITPE__STAGE_T, per stage */
    int64_t rows[2];                /* work items per stage */
    const vitpe_taps *tt, *th, *tw; /* the direction's tables */
    int64_t mid_t, mid_h, mid_w;    /* the intermediate grid (2 stages), per batch */
    int64_t grid_in, grid_out;      /* grid tokens of src and dst, per batch */
} vitpe__staging;

/* One tap of weight 1 per output, output o reading input o. */
static inline int vitpe__taps_identity(const vitpe_taps *t) {
    if (t->n_in != t->n_out) return 0;
    for (int64_t o = 0; o < t->n_out; o++)
        if (t->count[o] != 1 || t->start[o] != o || t->weight[o * t->width] != 1.0) return 0;
    return 1;
}

/* a * b into *r, VITPE_EOVERFLOW where it leaves int64 (sizes are >= 0) */
static inline int vitpe__mul64(int64_t *r, int64_t a, int64_t b) {
    if (a != 0 && b > INT64_MAX / a) return VITPE_EOVERFLOW;
    *r = a * b;
    return VITPE_OK;
}

/* The stages of a run over `batch` tables. */
static inline int vitpe__stage(vitpe__staging *s, const vitpe_plan *plan, int64_t batch, int backward) {
    int st;
    if (!plan || batch < 0) return VITPE_EINVAL;
    if (backward && !plan->layout.with_adjoint) return VITPE_EINVAL;
    s->tt = backward ? &plan->adj_t : &plan->fwd_t;
    s->th = backward ? &plan->adj_h : &plan->fwd_h;
    s->tw = backward ? &plan->adj_w : &plan->fwd_w;
    const int64_t Ts = s->tt->n_in, Hs = s->th->n_in, Ws = s->tw->n_in;
    const int64_t Td = s->tt->n_out, Hd = s->th->n_out, Wd = s->tw->n_out;
    int64_t slab_rows; /* rows per batch of each stage */
    /* Each side is at most VITPE_MAX_AXIS (2^24), so two sides multiply safely;
     * three may not (2^72). */
    if ((st = vitpe__mul64(&s->grid_in, Ts * Hs, Ws))) return st;
    if ((st = vitpe__mul64(&s->grid_out, Td * Hd, Wd))) return st;
    s->mid_t = s->mid_h = s->mid_w = 0;
    if (vitpe__taps_identity(s->tt)) {
        s->count = 1;
        s->kind[0] = VITPE__STAGE_GRID;
        slab_rows = Ts * Hd;
    } else if (vitpe__taps_identity(s->th) && vitpe__taps_identity(s->tw)) {
        s->count = 1;
        s->kind[0] = VITPE__STAGE_T;
        slab_rows = Td * Hd;
    } else {
        s->count = 2;
        s->kind[0] = backward ? VITPE__STAGE_T : VITPE__STAGE_GRID;
        s->kind[1] = backward ? VITPE__STAGE_GRID : VITPE__STAGE_T;
        s->mid_t = backward ? Td : Ts;
        s->mid_h = backward ? Hs : Hd;
        s->mid_w = backward ? Ws : Wd;
        /* stage 0 writes the mid's rows, stage 1 the dst's */
        if ((st = vitpe__mul64(&s->rows[0], batch, s->mid_t * s->mid_h))) return st;
        slab_rows = Td * Hd;
        return vitpe__mul64(&s->rows[1], batch, slab_rows);
    }
    s->rows[1] = 0;
    return vitpe__mul64(&s->rows[0], batch, slab_rows);
}

#endif /* VITPE_STAGES_H */
