/* test_exact.c — results that are exact, whatever the tolerance elsewhere:
 *   identity   in == out (no scale_factor): bit-exact, every mode and dtype,
 *              half types over every finite bit pattern
 *   constant   a per-channel constant field stays constant (exactly, for
 *              half types, where the rounding to storage absorbs it)
 *   rounding   float -> float16/bfloat16 stores round to nearest even, at
 *              every tie between adjacent values (bilinear midpoints)
 *   nan-chan*  NaN grid inputs stay in their channels, bit for bit as the
 *              arithmetic gives them, through the vector paths
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_harness.h"

/* ------------------------------------------------------------------------
 * Identity resize: bit-exact. ATen has a copy shortcut for some modes; the
 * others compute 1*x + 0*neighbours, exact for finite data other than -0
 * (0*x + -0 is +0, in ATen as here), so -0 is left out of the data. */

static void identity_one(int mode, int ac, int aa, int dt, int64_t H, int64_t W, int64_t B, int64_t P, int64_t C,
                         int exhaustive_bits) {
    tcase tc;
    memset(&tc, 0, sizeof tc);
    tc.dtype = dt;
    tc.h = make_axis(H, H, mode, ac, aa, dt, 0);
    tc.w = make_axis(W, W, mode, ac, aa, dt, 0);
    tc.B = B;
    tc.P = P;
    tc.C = C;
    tc.in_pad = 1;
    tc.out_pad = 2;
    describe(&tc, exhaustive_bits ? "identity(all bit patterns)" : "identity");
    layout Lx = src_layout(&tc, 0), Ld = dst_layout(&tc, 0);
    vitpe_io io = make_io(&tc, &Lx, &Ld);
    vitpe_plan *plan = NULL;
    void *x = alloc_filled(&Lx, dt, 0xFF), *out = alloc_filled(&Ld, dt, 0xA5);
    if (exhaustive_bits) { /* grid element n holds bit pattern n, unless not finite or -0 */
        int64_t n = 0;
        for (int64_t b = 0; b < B; b++)
            for (int64_t t = 0; t < Lx.T; t++)
                for (int64_t c = 0; c < C; c++, n++) {
                    uint16_t bits = (uint16_t)n;
                    uint16_t *p = (uint16_t *)x + at(&Lx, b, t, c);
                    double v = dt == VITPE_F16 ? h2f(bits) : b2f(bits);
                    *p = (isfinite(v) && bits != 0x8000u) ? bits : (uint16_t)0x3c00u;
                }
    } else
        fill_random(x, &Lx, P, dt, dt == VITPE_F16 ? 1.0 : 1e3, 1);
    int st = vitpe_plan_create(&plan, &tc.h, &tc.w, 0);
    if (st == VITPE_OK) st = run_rows(0, out, x, plan, &io, 0, B * H);
    if (record(st == VITPE_OK, "identity", "returned %d", st)) {
        const size_t es = dtype_size(dt);
        int ok = 1;
        for (int64_t b = 0; b < B && ok; b++)
            for (int64_t t = 0; t < Lx.T && ok; t++)
                if (memcmp((char *)out + at(&Ld, b, t, 0) * es, (char *)x + at(&Lx, b, t, 0) * es, (size_t)C * es))
                    for (int64_t c = 0; c < C && ok; c++)
                        if (memcmp((char *)out + at(&Ld, b, t, c) * es, (char *)x + at(&Lx, b, t, c) * es, es))
                            ok = record(0, "identity", "b=%lld token=%lld c=%lld: got %.17g, input %.17g",
                                        (long long)b, (long long)t, (long long)c, get(out, dt, at(&Ld, b, t, c)),
                                        get(x, dt, at(&Lx, b, t, c)));
        if (ok) record(1, "identity", NULL);
    }
    vitpe_plan_destroy(plan);
    free(x);
    free(out);
}

void identity_sweep(void) {
    static const int64_t sizes[][2] = {{1, 1}, {1, 7}, {6, 1}, {7, 5}, {24, 24}, {3, 16}};
    for (int mode = 0; mode < VITPE_MODE_COUNT; mode++)
        for (int ac = 0; ac <= mode_max_align_corners(mode); ac++)
            for (int aa = 0; aa <= mode_max_antialias(mode); aa++)
                for (int dt = 0; dt < 4; dt++) {
                    for (int s = 0; s < (int)(sizeof sizes / sizeof sizes[0]); s++)
                        identity_one(mode, ac, aa, dt, sizes[s][0], sizes[s][1], 1 + s % 2, s % 3 == 0 ? 0 : 2,
                                     (int64_t[]){1, 7, 16, 33, 71}[s % 5], 0);
                    if (dt == VITPE_F16 || dt == VITPE_BF16) /* 16x16 tokens x 256 channels = 65536 patterns */
                        identity_one(mode, ac, aa, dt, 16, 16, 1, 0, 256, 1);
                }
}

/* ------------------------------------------------------------------------
 * Constant field: channel c holds v_c at every grid token; every output
 * must be v_c up to the rounding of weights that sum to 1 in opmath. */

void constant_sweep(void) {
    static const int64_t sizes[][4] = {{1, 1, 1, 9}, {3, 40, 40, 3}, {14, 24, 24, 14}, {9, 4, 2, 3}, {5, 5, 6, 6}};
    for (int mode = 0; mode < VITPE_MODE_COUNT; mode++)
        for (int ac = 0; ac <= mode_max_align_corners(mode); ac++)
            for (int aa = 0; aa <= mode_max_antialias(mode); aa++)
                for (int sf = 0; sf <= mode_info(mode).scale_factor; sf++)
                    for (int dt = 0; dt < 4; dt++)
                        for (int s = 0; s < (int)(sizeof sizes / sizeof sizes[0]); s++) {
                            tcase tc;
                            memset(&tc, 0, sizeof tc);
                            tc.dtype = dt;
                            tc.h = make_axis(sizes[s][0], sizes[s][1], mode, ac, aa, dt, sf);
                            tc.w = make_axis(sizes[s][2], sizes[s][3], mode, ac, aa, dt, sf);
                            tc.B = 2;
                            tc.P = 1;
                            tc.C = 17;
                            tc.in_pad = 1;
                            describe(&tc, "constant");
                            layout Lx = src_layout(&tc, 0), Ld = dst_layout(&tc, 0);
                            vitpe_io io = make_io(&tc, &Lx, &Ld);
                            vitpe_plan *plan = NULL;
                            void *x = alloc_filled(&Lx, dt, 0xFF), *out = alloc_filled(&Ld, dt, 0xA5);
                            double v[17];
                            for (int64_t c = 0; c < tc.C; c++) {
                                set(x, dt, 0, (2.0 * rng_uniform() - 1.0) * (c % 3 == 0 ? 1e3 : 1.0));
                                v[c] = get(x, dt, 0); /* representable in storage */
                            }
                            for (int64_t b = 0; b < tc.B; b++)
                                for (int64_t t = 0; t < Lx.T; t++)
                                    for (int64_t c = 0; c < tc.C; c++) set(x, dt, at(&Lx, b, t, c), v[c]);
                            int st = vitpe_plan_create(&plan, &tc.h, &tc.w, 0);
                            if (st == VITPE_OK) st = run_rows(0, out, x, plan, &io, 0, tc.B * tc.h.out_size);
                            if (record(st == VITPE_OK, "constant", "returned %d", st)) {
                                /* weights sum to 1 within (taps + 3) opmath roundings,
                                   scaled by sum |w| (negative lobes) */
                                double u = dt == VITPE_F64 ? 0x1.0p-52 : 0x1.0p-23;
                                int64_t n = plan->fwd_h.width + plan->fwd_w.width + 3;
                                int ok = 1;
                                for (int64_t b = 0; b < tc.B && ok; b++)
                                    for (int64_t t = tc.P; t < Ld.T && ok; t++)
                                        for (int64_t c = 0; c < tc.C && ok; c++) {
                                            double g = get(out, dt, at(&Ld, b, t, c));
                                            double tol = (dt == VITPE_F32 || dt == VITPE_F64) ? 2.0 * n * u * fabs(v[c]) : 0.0;
                                            if (!(fabs(g - v[c]) <= tol))
                                                ok = record(0, "constant", "b=%lld token=%lld c=%lld: got %.17g, constant %.17g, tol %.3g",
                                                            (long long)b, (long long)t, (long long)c, g, v[c], tol);
                                        }
                                if (ok) record(1, "constant", NULL);
                            }
                            vitpe_plan_destroy(plan);
                            free(x);
                            free(out);
                        }
}

/* ------------------------------------------------------------------------
 * Rounding to float16/bfloat16: a W axis 2 -> 3 with align_corners gives
 * out[1] = 0.5f*a + 0.5f*b (exact in float for storage values), so with b
 * the successor of a every midpoint is a tie: each must round to even,
 * as c10 does. out[0] and out[2] must be a and b. */

void rounding_check(int dt) {
    tcase tc;
    memset(&tc, 0, sizeof tc);
    tc.dtype = dt;
    tc.h = make_axis(1, 1, VITPE_MODE_BILINEAR, 1, 0, dt, 0);
    tc.w = make_axis(2, 3, VITPE_MODE_BILINEAR, 1, 0, dt, 0);
    tc.B = 1;
    tc.C = 65536;
    describe(&tc, "rounding");
    layout Lx = src_layout(&tc, 0), Ld = dst_layout(&tc, 0);
    vitpe_io io = make_io(&tc, &Lx, &Ld);
    uint16_t *x = alloc_filled(&Lx, dt, 0), *out = alloc_filled(&Ld, dt, 0);
    for (int64_t c = 0; c < tc.C; c++) { /* channel c: a = pattern c, b = its successor away from 0 */
        uint16_t a = (uint16_t)c, bnext = (uint16_t)(c + 1);
        double va = dt == VITPE_F16 ? h2f(a) : b2f(a), vb = dt == VITPE_F16 ? h2f(bnext) : b2f(bnext);
        if (!isfinite(va) || !isfinite(vb) || a == 0x8000u || (bnext & 0x7fffu) == 0) a = bnext = 0x3c00u;
        x[at(&Lx, 0, 0, c)] = a;
        x[at(&Lx, 0, 1, c)] = bnext;
    }
    vitpe_plan *plan = NULL;
    int st = vitpe_plan_create(&plan, &tc.h, &tc.w, 0);
    if (st == VITPE_OK) st = run_rows(0, out, x, plan, &io, 0, 1);
    if (record(st == VITPE_OK, "rounding", "returned %d", st)) {
        int ok = 1;
        for (int64_t c = 0; c < tc.C && ok; c++) {
            uint16_t a = x[at(&Lx, 0, 0, c)], b = x[at(&Lx, 0, 1, c)];
            float fa = dt == VITPE_F16 ? h2f(a) : b2f(a), fb = dt == VITPE_F16 ? h2f(b) : b2f(b);
            float mid = 0.5f * fa;
            mid += 0.5f * fb;
            uint16_t want = dt == VITPE_F16 ? f2h(mid) : f2b(mid);
            uint16_t g0 = out[at(&Ld, 0, 0, c)], g1 = out[at(&Ld, 0, 1, c)], g2 = out[at(&Ld, 0, 2, c)];
            if (g0 != a || g1 != want || g2 != b)
                ok = record(0, "rounding", "a=0x%04x b=0x%04x: got 0x%04x 0x%04x 0x%04x, want 0x%04x 0x%04x 0x%04x", a, b,
                            g0, g1, g2, a, want, b);
        }
        if (ok) record(1, "rounding", NULL);
    }
    vitpe_plan_destroy(plan);
    free(x);
    free(out);
}

/* ------------------------------------------------------------------------
 * NaN in the grid, a register block at a time: a NaN channel stays NaN and
 * leaves the channels beside it alone, through the 2- and 4-tap sums, the
 * generic sums, forward and backward. The vector stores of the half types
 * handle two channels per 32-bit lane, where a NaN could leak into its
 * neighbour; the other checks never put NaN on the grid. */

void nan_channels(void) {
    static const struct { int mode, ac, aa; int64_t h[2], w[2]; } cases[] = {
        {VITPE_MODE_BILINEAR, 1, 0, {2, 3}, {2, 3}}, /* 2 taps, and 1 at the ends */
        {VITPE_MODE_BICUBIC, 0, 0, {3, 5}, {3, 7}},  /* 4 taps, clamped ones merged */
        {VITPE_MODE_BILINEAR, 0, 1, {9, 4}, {9, 4}}, /* antialias: the generic sums */
    };
    static const int dts[] = {VITPE_F32, VITPE_F16, VITPE_BF16};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++)
        for (size_t d = 0; d < sizeof dts / sizeof dts[0]; d++) {
            const int dt = dts[d];
            tcase tc;
            memset(&tc, 0, sizeof tc);
            tc.dtype = dt;
            tc.h = make_axis(cases[k].h[0], cases[k].h[1], cases[k].mode, cases[k].ac, cases[k].aa, dt, 0);
            tc.w = make_axis(cases[k].w[0], cases[k].w[1], cases[k].mode, cases[k].ac, cases[k].aa, dt, 0);
            tc.B = 2;
            tc.P = 1;
            tc.C = 128; /* whole register blocks: the vector paths */
            describe(&tc, "nan-channels");
            vitpe_plan *plan = NULL;
            if (!record(vitpe_plan_create(&plan, &tc.h, &tc.w, 1) == VITPE_OK, "nan-chan", "plan")) continue;
            for (int backward = 0; backward <= 1; backward++) {
                layout Ls = src_layout(&tc, backward), Ld = dst_layout(&tc, backward);
                vitpe_io io = make_io(&tc, &Ls, &Ld);
                void *src = alloc_filled(&Ls, dt, 0xFF), *dst = alloc_filled(&Ld, dt, 0xA5);
                fill_random(src, &Ls, tc.P, dt, 1.0, 0);
                /* odd and even channels, in the first, a middle and the last grid token */
                const int64_t grid = Ls.T - tc.P, nan_at[][2] = {{0, 1}, {grid / 2, 6}, {grid - 1, 67}, {0, 126}};
                for (size_t i = 0; i < sizeof nan_at / sizeof nan_at[0]; i++)
                    set(src, dt, at(&Ls, 1, tc.P + nan_at[i][0], nan_at[i][1]), NAN);
                int st = run_rows(backward, dst, src, plan, &io, 0, tc.B * (backward ? tc.h.in_size : tc.h.out_size));
                if (record(st == VITPE_OK, "nan-chan", "returned %d", st))
                    check_arithmetic(backward ? "nan-chan-bwd" : "nan-chan", dst, src, &tc, plan, backward);
                free(src);
                free(dst);
            }
            vitpe_plan_destroy(plan);
        }
}
