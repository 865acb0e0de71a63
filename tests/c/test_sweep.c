/* test_sweep.c — the fast passes against their references, both directions:
 *   fwd        vitpe_forward_cpu (one row range) vs vitpe_forward_naive, to a
 *              tolerance derived from the magnitude of the terms summed
 *   fwd-split  several row ranges, each with its own scratch, in scrambled
 *              order: bitwise equal to one range; every element written,
 *              padding between tokens/batches never touched
 *   fwd-part   one sub-range writes exactly its rows (and the prefix tokens
 *              of batches whose row 0 it holds), nothing else
 *   fwd-bits   bit for bit the arithmetic the pass promises (reference_sum)
 *   prefix     prefix tokens (with NaN payloads, -0, inf, subnormals) are
 *              copied bit for bit
 *   bwd*       the same for vitpe_backward_cpu (gather over the adjoint
 *              tables) vs vitpe_backward_naive (scatter)
 *   adjoint    <A x, y> == <x, A^T y> over the fast passes, float64 data
 *   fwd-only   a plan without adjoint tables runs the same forward
 * over every mode x accepted flags x scale_factor x dtype (sweep), and over
 * the vector 2- and 4-tap sums and row pairs (fast_paths).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_harness.h"

static void *check_direction(const tcase *tc, const vitpe_plan *plan, int backward, const void *src) {
    const char *tag[4] = {backward ? "bwd" : "fwd", backward ? "bwd-split" : "fwd-split",
                          backward ? "bwd-part" : "fwd-part", backward ? "bwd-prefix" : "fwd-prefix"};
    const int dt = tc->dtype;
    layout Ls = src_layout(tc, backward), Ld = dst_layout(tc, backward);
    vitpe_io io = make_io(tc, &Ls, &Ld);
    const int64_t rows = tc->B * (backward ? tc->h.in_size : tc->h.out_size);
    const int64_t grid_w = backward ? tc->w.in_size : tc->w.out_size;
    int st;

    /* 1. one row range */
    void *one = alloc_filled(&Ld, dt, 0xA5);
    st = run_rows(backward, one, src, plan, &io, 0, rows);
    if (!record(st == VITPE_OK, tag[0], "fast pass returned %d (%s)", st, vitpe_status_str(st))) return one;

    /* 2. several ranges, run last to first, each with its own scratch */
    {
        void *split = alloc_filled(&Ld, dt, 0x5A);
        int64_t cuts[6], n = 0;
        cuts[n++] = 0;
        for (int k = 0, parts = (int)rng_int(2, 4); k < parts - 1; k++) {
            int64_t c = rng_int(cuts[n - 1], rows);
            cuts[n++] = c;
        }
        cuts[n++] = rows;
        for (int64_t k = n - 2; k >= 0 && st == VITPE_OK; k--)
            st = run_rows(backward, split, src, plan, &io, cuts[k], cuts[k + 1]);
        if (record(st == VITPE_OK, tag[1], "a sub-range returned %d", st))
            compare_bits(tag[1], split, 0x5A, one, 0xA5, &Ld, dt);
        free(split);
    }

    /* 3. one sub-range writes its rows and nothing else */
    {
        int64_t r0 = rng_int(0, rows), r1 = rng_int(r0, rows);
        void *part = alloc_filled(&Ld, dt, 0x3C);
        unsigned char *mask = element_mask(&Ld);
        const size_t es = dtype_size(dt);
        int ok = 1;
        st = run_rows(backward, part, src, plan, &io, r0, r1);
        ok = record(st == VITPE_OK, tag[2], "rows [%lld, %lld) returned %d", (long long)r0, (long long)r1, st);
        for (int64_t b = 0; b < tc->B && ok; b++)
            for (int64_t t = 0; t < Ld.T && ok; t++) {
                int64_t row = b * (rows / tc->B) + (t < tc->P ? 0 : (t - tc->P) / grid_w);
                int inside = row >= r0 && row < r1;
                const unsigned char *p = (const unsigned char *)part + at(&Ld, b, t, 0) * es;
                const unsigned char *q = (const unsigned char *)one + at(&Ld, b, t, 0) * es;
                for (size_t k = 0; k < (size_t)tc->C * es && ok; k++)
                    if (inside ? p[k] != q[k] : p[k] != 0x3C)
                        ok = record(0, tag[2], "rows [%lld, %lld): token %lld of batch %lld %s", (long long)r0,
                                    (long long)r1, (long long)t, (long long)b,
                                    inside ? "differs from the full run" : "was written outside the range");
            }
        for (int64_t i = 0; i < extent(&Ld) && ok; i++) /* padding */
            for (size_t k = 0; k < es && ok; k++)
                if (!mask[i] && ((const unsigned char *)part)[i * es + k] != 0x3C)
                    ok = record(0, tag[2], "rows [%lld, %lld): padding element %lld was written", (long long)r0,
                                (long long)r1, (long long)i);
        if (ok) record(1, tag[2], NULL);
        free(mask);
        free(part);
    }

    /* 4. bit for bit, the arithmetic it promises */
    check_arithmetic(backward ? "bwd-bits" : "fwd-bits", one, src, tc, plan, backward);

    /* 5. vs the naive reference */
    {
        void *ref = alloc_filled(&Ld, dt, 0x77);
        st = backward ? vitpe_backward_naive(ref, src, &tc->h, &tc->w, &io)
                      : vitpe_forward_naive(ref, src, &tc->h, &tc->w, &io);
        if (record(st == VITPE_OK, tag[0], "naive returned %d", st)) {
            double *mag = term_magnitudes(plan, backward, src, &Ls, dt, tc->P, tc->B, Ld.T);
            const vitpe_taps *th = backward ? &plan->adj_h : &plan->fwd_h, *tw = backward ? &plan->adj_w : &plan->fwd_w;
            compare_grid(tag[0], one, ref, mag, &Ld, tc->P, dt, th->width + tw->width, th->width * tw->width);
            check_prefix(tag[3], one, &Ld, src, &Ls, tc->P, dt, 1);
            check_prefix(tag[3], ref, &Ld, src, &Ls, tc->P, dt, 0);
            free(mag);
        }
        free(ref);
    }
    return one;
}

/* <A x, y> == <x, A^T y> over the grid tokens (prefix tokens are the
 * identity on both sides and may hold NaN). Per batch the identity holds
 * whatever the batch strides, so the sums over batches do too. */
static void check_adjoint(const tcase *tc, const void *x, const void *Ax, const void *y, const void *ATy) {
    layout Lx = src_layout(tc, 0), Lax = dst_layout(tc, 0), Ly = src_layout(tc, 1), Laty = dst_layout(tc, 1);
    double lhs = 0, rhs = 0, scale = 0;
    for (int64_t b = 0; b < tc->B; b++)
        for (int64_t c = 0; c < tc->C; c++) {
            for (int64_t t = tc->P; t < Lax.T; t++) {
                double v = get(Ax, VITPE_F64, at(&Lax, b, t, c)) * get(y, VITPE_F64, at(&Ly, b, t, c));
                lhs += v;
                scale += fabs(v);
            }
            for (int64_t t = tc->P; t < Lx.T; t++) {
                double v = get(x, VITPE_F64, at(&Lx, b, t, c)) * get(ATy, VITPE_F64, at(&Laty, b, t, c));
                rhs += v;
                scale += fabs(v);
            }
        }
    record(fabs(lhs - rhs) <= 1e-10 * scale, "adjoint", "<Ax,y> = %.17g, <x,ATy> = %.17g, rel. diff %.3g", lhs,
           rhs, fabs(lhs - rhs) / (scale > 0 ? scale : 1));
}

static void run_case(const tcase *tc) {
    const int dt = tc->dtype;
    vitpe_plan *plan = NULL, *plan_fwd_only = NULL;
    describe(tc, "sweep");
    int st = vitpe_plan_create(&plan, &tc->h, &tc->w, 1);
    if (!record(st == VITPE_OK && plan, "plan", "vitpe_plan_create returned %d (%s)", st, vitpe_status_str(st)))
        return;
    check_plan(plan, &tc->h, &tc->w);
    check_equivalent_plans(plan, tc);
    double amp = dt != VITPE_F16 && rng_next() % 4 == 0 ? 300.0 : 1.0;

    layout Lx = src_layout(tc, 0), Ly = src_layout(tc, 1);
    void *x = alloc_filled(&Lx, dt, 0xFF); /* NaN padding: reading it poisons the result */
    void *y = alloc_filled(&Ly, dt, 0xFF);
    fill_random(x, &Lx, tc->P, dt, amp, 1);
    fill_random(y, &Ly, tc->P, dt, amp, 1);

    void *Ax = check_direction(tc, plan, 0, x);
    void *ATy = check_direction(tc, plan, 1, y);
    if (dt == VITPE_F64) check_adjoint(tc, x, Ax, y, ATy);

    /* a plan without adjoint tables runs the same forward */
    st = vitpe_plan_create(&plan_fwd_only, &tc->h, &tc->w, 0);
    if (record(st == VITPE_OK, "plan", "forward-only vitpe_plan_create returned %d", st)) {
        layout Ld = dst_layout(tc, 0);
        vitpe_io io = make_io(tc, &Lx, &Ld);
        void *out = alloc_filled(&Ld, dt, 0xA5);
        st = run_rows(0, out, x, plan_fwd_only, &io, 0, tc->B * tc->h.out_size);
        if (record(st == VITPE_OK, "fwd-only", "returned %d", st)) compare_bits("fwd-only", out, 0xA5, Ax, 0xA5, &Ld, dt);
        free(out);
        vitpe_plan_destroy(plan_fwd_only);
    }
    free(Ax);
    free(ATy);
    free(x);
    free(y);
    vitpe_plan_destroy(plan);
}

/* ------------------------------------------------------------------------
 * The sweep: every mode x legal flags x scale_factor given/not x dtype,
 * over special size pairs (1x1, 1xN, non-square, identity, large up/down
 * scale, ViT 14 -> 24) and random ones; B, P, C, padding drawn per case. */

static const int64_t special_sizes[][4] = {
    /* Hin, Hout, Win, Wout */
    {1, 1, 1, 1},  {1, 1, 1, 9},   {1, 6, 5, 1},  {3, 40, 40, 3}, {40, 3, 3, 40},
    {14, 24, 14, 24}, {24, 14, 7, 7}, {7, 7, 5, 5}, {2, 3, 9, 4},  {5, 10, 1, 2},
};
#define N_SPECIAL ((int)(sizeof special_sizes / sizeof special_sizes[0]))
#define N_RANDOM 3

void sweep(void) {
    /* C: below, at and above the channel blocks (16 wide, 64 floats / 32
       doubles per 256-byte block), with a scalar tail */
    static const int64_t Bs[] = {1, 3}, Ps[] = {0, 1, 5}, Cs[] = {1, 7, 16, 33, 64, 71, 137};
    int64_t k = 0;
    for (int mode = 0; mode < VITPE_MODE_COUNT; mode++)
        for (int ac = 0; ac <= mode_max_align_corners(mode); ac++)
            for (int aa = 0; aa <= mode_max_antialias(mode); aa++)
                for (int sf = 0; sf <= mode_info(mode).scale_factor; sf++)
                    for (int dt = 0; dt < 4; dt++)
                        for (int s = 0; s < N_SPECIAL + N_RANDOM; s++, k++) {
                            int64_t sz[4];
                            for (int j = 0; j < 4; j++)
                                sz[j] = s < N_SPECIAL ? special_sizes[s][j] : rng_int(1, 17);
                            tcase tc;
                            memset(&tc, 0, sizeof tc);
                            tc.dtype = dt;
                            /* scale_factor given on one or both axes */
                            int sf_h = sf && (rng_next() % 3 != 0), sf_w = sf && !sf_h ? 1 : sf && rng_next() % 2;
                            tc.h = make_axis(sz[0], sz[1], mode, ac, aa, dt, sf_h);
                            tc.w = make_axis(sz[2], sz[3], mode, ac, aa, dt, sf_w);
                            tc.B = Bs[k % 2];
                            tc.P = Ps[(k / 2) % 3];
                            tc.C = Cs[rng_next() % 6];
                            tc.in_pad = rng_next() % 2 ? rng_int(1, 5) : 0;
                            tc.out_pad = rng_next() % 2 ? rng_int(1, 5) : 0;
                            tc.in_bcast = rng_next() % 4 == 0;
                            run_case(&tc);
                        }
}

/* ------------------------------------------------------------------------
 * The 2- and 4-tap sums (bilinear, bicubic) a vector at a time, and row
 * pairs sharing one H pass, for every dtype (float64 takes the generic
 * sums): C a multiple of 8 (float32) or 64 (half types) or neither,
 * upsamples (pairs starting 0 and 1 rows apart), one and several channel
 * blocks (C = 4160 is more than the scratch budget allows at these widths),
 * odd row counts and ranges that split pairs (fwd-split), align_corners'
 * 1-tap end rows, padded strides. The sweep's C of 16 and 64 reach the same
 * paths on small grids. */

void fast_paths(void) {
    static const int64_t sizes[][4] = {
        /* Hin, Hout, Win, Wout */
        {4, 9, 5, 12}, {5, 12, 4, 9}, {3, 7, 3, 8}, {7, 16, 6, 13}, {6, 6, 5, 11}, {9, 5, 4, 10},
    };
    static const int64_t Cs[] = {8, 24, 64, 4160};
    for (int dt = 0; dt < 4; dt++)
    for (int mode = VITPE_MODE_BILINEAR; mode <= VITPE_MODE_BICUBIC; mode++)
        for (int ac = 0; ac <= 1; ac++)
            for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++)
                for (size_t c = 0; c < sizeof Cs / sizeof Cs[0]; c++) {
                    /* several blocks: float32 and bfloat16 (float16 shares the code) */
                    if (Cs[c] > 64 && (dt == VITPE_F64 || dt == VITPE_F16)) continue;
                    tcase tc;
                    memset(&tc, 0, sizeof tc);
                    tc.dtype = dt;
                    tc.h = make_axis(sizes[s][0], sizes[s][1], mode, ac, 0, dt, 0);
                    tc.w = make_axis(sizes[s][2], sizes[s][3], mode, ac, 0, dt, 0);
                    tc.B = 1 + (int64_t)(s % 2);
                    tc.P = (int64_t)(s % 3);
                    tc.C = Cs[c];
                    tc.in_pad = s % 2 ? 64 : 0; /* token strides stay multiples of 64 ... */
                    tc.out_pad = s % 3 == 1 ? 3 : 0; /* ... or not (unaligned vectors) */
                    run_case(&tc);
                }
}
