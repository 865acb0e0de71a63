/* test_grids.c — grids of rank 1 and 3, and suffix tokens: the staged runs
 * (vitpe_stages.h) against their references, both directions:
 *   grid-fwd / grid-bwd   every stage of vitpe_{forward,backward}_cpu_stage vs
 *                         vitpe_{forward,backward}_naive_nd (the direct triple
 *                         sum), to the tolerance of the magnitude of the terms
 *   grid-split            each stage in several row ranges, run last to first,
 *                         each with its own scratch: bitwise equal to one range;
 *                         padding between tokens and batches never written
 *   grid-bits             bit for bit the staged arithmetic: the H and W sums
 *                         of each T slice (test_util.c's reference_sum), kept
 *                         in the accumulator type, then the T sum (forward; the
 *                         reverse backward), rounded once
 *   grid-half             float16/bfloat16: the float32 run on the widened
 *                         table, rounded once, bit for bit (the half types'
 *                         permuted register blocks survive the float slabs
 *                         between the stages)
 *   grid-tokens           prefix and suffix tokens copied bit for bit
 *   grid-adjoint          <A x, y> == <x, A^T y> over the staged passes, float64
 *   grid-identity         in == out: bit-exact, every mode
 *   grid-plans            rank 2 through vitpe_plan_create_nd is vitpe_plan_create's
 *                         plan; rank 1 is rank 2 with a 1 -> 1 H axis, bit for bit;
 *                         aliases ("linear" at rank 1, "trilinear" at 3)
 *   grid-errors           bad ranks, stages, rows and workspaces
 *   grid-positions        given sample positions (vitpe_axis.positions), ranks
 *                         1-3, the point modes: all the checks above, with
 *                         positions before, between and past the tokens,
 *                         repeated and on nearest's ties; the plan keeps its
 *                         own copy; bad positions and modes refused
 * over every mode x accepted flags x scale_factor x dtype, ranks 1 and 3,
 * with prefix and suffix tokens and channel counts that take the vector
 * paths (multiples of 64) and their tails.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_harness.h"

typedef struct gcase {
    int rank;
    vitpe_axis ax[3]; /* ax[0 .. rank-1], outermost first */
    int dtype;
    int64_t B, P, S, C;
    int64_t in_pad, out_pad;
} gcase;

/* The (T, H, W) sides of the case's grid, the missing axes 1. */
static void sides(const gcase *g, int out, int64_t s[3]) {
    for (int i = 0; i < 3; i++) s[i] = 1;
    for (int i = 0; i < g->rank; i++) s[3 - g->rank + i] = out ? g->ax[i].out_size : g->ax[i].in_size;
}
static int64_t grid_tokens(const gcase *g, int out) {
    int64_t s[3];
    sides(g, out, s);
    return s[0] * s[1] * s[2];
}

static void gdescribe(const gcase *g, const char *suite) {
    int64_t i[3], o[3];
    sides(g, 0, i);
    sides(g, 1, o);
    const vitpe_axis *a = &g->ax[g->rank - 1];
    snprintf(case_name, sizeof case_name,
             "%s rank=%d mode=%s align_corners=%d antialias=%d scale_factor=%d positions=%d (T,H,W) "
             "(%lld,%lld,%lld)->(%lld,%lld,%lld) dtype=%s B=%lld P=%lld S=%lld C=%lld in_pad=%lld out_pad=%lld",
             suite, g->rank, vitpe_mode_name(a->mode), a->align_corners, a->antialias, a->scale_factor > 0,
             a->positions != NULL,
             (long long)i[0], (long long)i[1], (long long)i[2], (long long)o[0], (long long)o[1],
             (long long)o[2], dtype_name(g->dtype), (long long)g->B, (long long)g->P, (long long)g->S,
             (long long)g->C, (long long)g->in_pad, (long long)g->out_pad);
}

/* Forward: src = inp, dst = out; backward: src = dout, dst = dinp. */
static layout glayout(const gcase *g, int backward, int dst) {
    const int out_grid = backward ? !dst : dst;
    layout L;
    L.B = g->B;
    L.C = g->C;
    L.T = g->P + grid_tokens(g, out_grid) + g->S;
    L.ts = g->C + (dst ? g->out_pad : g->in_pad);
    L.bs = L.T * L.ts + (dst ? 2 * g->out_pad : 3);
    return L;
}
static vitpe_io gio(const gcase *g, const layout *src, const layout *dst) {
    vitpe_io io;
    memset(&io, 0, sizeof io);
    io.dtype = g->dtype;
    io.batch = g->B;
    io.prefix = g->P;
    io.suffix = g->S;
    io.channels = g->C;
    io.in_batch_stride = src->bs;
    io.in_token_stride = src->ts;
    io.out_batch_stride = dst->bs;
    io.out_token_stride = dst->ts;
    return io;
}

/* Every stage in order; each stage's rows in `parts` ranges run last to
 * first, each with a fresh scratch of exactly the advertised size. */
static int run_staged(int backward, void *dst, const void *src, const vitpe_plan *plan, const vitpe_io *io,
                      int parts) {
    vitpe_stages s;
    size_t bytes;
    int st = vitpe_cpu_stages(&s, plan, io, backward);
    if (!st) st = vitpe_scratch_bytes(&bytes, plan, io, backward);
    if (st) return st;
    void *ws = s.workspace_bytes ? xmalloc(s.workspace_bytes) : NULL;
    for (int stage = 0; stage < s.count && !st; stage++) {
        int64_t cuts[6], n = 0;
        cuts[n++] = 0;
        for (int k = 0; k < parts - 1 && k < 4; k++) {
            int64_t c = rng_int(cuts[n - 1], s.rows[stage]);
            cuts[n++] = c;
        }
        cuts[n++] = s.rows[stage];
        for (int64_t k = n - 2; k >= 0 && !st; k--) {
            void *scratch = xmalloc(bytes);
            st = backward ? vitpe_backward_cpu_stage(dst, src, plan, io, stage, cuts[k], cuts[k + 1], ws, scratch)
                          : vitpe_forward_cpu_stage(dst, src, plan, io, stage, cuts[k], cuts[k + 1], ws, scratch);
            free(scratch);
        }
    }
    free(ws);
    return st;
}

/* ------------------------------------------------------------------------
 * The staged arithmetic, written plainly (vitpe_stages.h): the T sum of one
 * element over a table of accumulator values or of storage values, the
 * first term a product, taps in order; in float (double for float64). */
static double t_sum(const void *src, int dt_src, const layout *L, int64_t b, int64_t tok0, int64_t slab,
                    const vitpe_taps *tt, int64_t t, int64_t s, int64_t c, int acc_double) {
    const int64_t st = tt->start[t], n = tt->count[t];
    const double *w = tt->weight + t * tt->width;
    if (acc_double) {
        double acc = 0.0;
        for (int64_t k = 0; k < n; k++) {
            double x = get(src, dt_src, at(L, b, tok0 + (st + k) * slab + s, c));
            acc = k == 0 ? w[0] * x : acc + w[k] * x;
        }
        return acc;
    }
    float acc = 0.0f;
    for (int64_t k = 0; k < n; k++) {
        float x = (float)get(src, dt_src, at(L, b, tok0 + (st + k) * slab + s, c));
        acc = k == 0 ? (float)w[0] * x : acc + (float)w[k] * x;
    }
    return acc;
}

/* The result the staged passes promise for the grid tokens of dst, before
 * rounding to storage: ref[(b * grid_dst + token) * C + c]. */
static double *staged_reference(const gcase *g, const vitpe_plan *plan, int backward, const void *src,
                                const layout *Ls) {
    const int dt = g->dtype, acc_double = dt == VITPE_F64, acc_dt = acc_double ? VITPE_F64 : VITPE_F32;
    const vitpe_taps *tt = backward ? &plan->adj_t : &plan->fwd_t, *th = backward ? &plan->adj_h : &plan->fwd_h,
                     *tw = backward ? &plan->adj_w : &plan->fwd_w;
    vitpe_stages s;
    vitpe_io io = gio(g, Ls, Ls);
    const int64_t B = g->B, C = g->C, P = g->P;
    const int64_t Ts = tt->n_in, Hs = th->n_in, Ws = tw->n_in, Td = tt->n_out, Hd = th->n_out, Wd = tw->n_out;
    double *ref = xmalloc((size_t)(B * Td * Hd * Wd * C) * sizeof(double));
    if (vitpe_cpu_stages(&s, plan, &io, backward) != VITPE_OK) {
        free(ref);
        return NULL;
    }
    int t_identity = 1, hw_identity = 1;
    for (int64_t t = 0; t < tt->n_out; t++)
        t_identity &= tt->n_in == tt->n_out && tt->count[t] == 1 && tt->start[t] == t && tt->weight[t * tt->width] == 1.0;
    for (int x = 0; x < 2; x++) {
        const vitpe_taps *a = x ? tw : th;
        for (int64_t o = 0; o < a->n_out; o++)
            hw_identity &= a->n_in == a->n_out && a->count[o] == 1 && a->start[o] == o && a->weight[o * a->width] == 1.0;
    }
    if (t_identity || hw_identity) { /* one stage */
        for (int64_t b = 0; b < B; b++)
            for (int64_t t = 0; t < Td; t++)
                for (int64_t y = 0; y < Hd; y++)
                    for (int64_t x = 0; x < Wd; x++)
                        for (int64_t c = 0; c < C; c++)
                            ref[((b * Td + t) * Hd * Wd + y * Wd + x) * C + c] =
                                t_identity ? reference_sum(src, Ls, dt, b, P + t * Hs * Ws, th, y, tw, x, c)
                                           : t_sum(src, dt, Ls, b, P, Hs * Ws, tt, t, y * Ws + x, c, acc_double);
        return ref;
    }
    /* two stages through slabs in the accumulator type */
    const int64_t mt = backward ? Td : Ts, mh = backward ? Hs : Hd, mw = backward ? Ws : Wd;
    layout Lm = {B, mt * mh * mw, C, mt * mh * mw * C, C};
    void *mid = xmalloc((size_t)(B * mt * mh * mw * C) * (acc_double ? 8 : 4));
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < mt; t++)
            for (int64_t y = 0; y < mh; y++)
                for (int64_t x = 0; x < mw; x++)
                    for (int64_t c = 0; c < C; c++) {
                        double v = backward ? t_sum(src, dt, Ls, b, P, Hs * Ws, tt, t, y * Ws + x, c, acc_double)
                                            : reference_sum(src, Ls, dt, b, P + t * Hs * Ws, th, y, tw, x, c);
                        set(mid, acc_dt, at(&Lm, b, (t * mh + y) * mw + x, c), v);
                    }
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < Td; t++)
            for (int64_t y = 0; y < Hd; y++)
                for (int64_t x = 0; x < Wd; x++)
                    for (int64_t c = 0; c < C; c++)
                        ref[((b * Td + t) * Hd * Wd + y * Wd + x) * C + c] =
                            backward ? reference_sum(mid, &Lm, acc_dt, b, t * Hs * Ws, th, y, tw, x, c)
                                     : t_sum(mid, acc_dt, &Lm, b, 0, Hd * Wd, tt, t, y * Wd + x, c, acc_double);
    free(mid);
    return ref;
}

/* Sum of |wt * wy * wx * src| over the terms of each dst grid element. */
static double *grid_magnitudes(const gcase *g, const vitpe_plan *plan, int backward, const void *src,
                               const layout *Ls) {
    const vitpe_taps *ft = &plan->fwd_t, *fh = &plan->fwd_h, *fw = &plan->fwd_w;
    const int64_t C = g->C, P = g->P, Hi = fh->n_in, Wi = fw->n_in, Ho = fh->n_out, Wo = fw->n_out;
    const int64_t grid_dst = backward ? ft->n_in * Hi * Wi : ft->n_out * Ho * Wo;
    size_t n = (size_t)(g->B * grid_dst * C);
    double *mag = xmalloc(n * sizeof(double));
    memset(mag, 0, n * sizeof(double));
    for (int64_t b = 0; b < g->B; b++)
        for (int64_t ot = 0; ot < ft->n_out; ot++)
            for (int64_t oy = 0; oy < Ho; oy++)
                for (int64_t ox = 0; ox < Wo; ox++)
                    for (int64_t kt = 0; kt < ft->count[ot]; kt++)
                        for (int64_t ky = 0; ky < fh->count[oy]; ky++)
                            for (int64_t kx = 0; kx < fw->count[ox]; kx++) {
                                const double wgt = fabs(ft->weight[ot * ft->width + kt] * fh->weight[oy * fh->width + ky] *
                                                        fw->weight[ox * fw->width + kx]);
                                const int64_t ti = ((ft->start[ot] + kt) * Hi + fh->start[oy] + ky) * Wi + fw->start[ox] + kx;
                                const int64_t to = (ot * Ho + oy) * Wo + ox;
                                const int64_t ts = backward ? to : ti, td = backward ? ti : to;
                                for (int64_t c = 0; c < C; c++)
                                    mag[(b * grid_dst + td) * C + c] += wgt * fabs(get(src, g->dtype, at(Ls, b, P + ts, c)));
                            }
    return mag;
}

/* prefix and suffix tokens of dst are src's, bit for bit */
static int check_tokens(const char *check, const gcase *g, const void *dst, const layout *Ld, const void *src,
                        const layout *Ls) {
    const size_t es = dtype_size(g->dtype);
    for (int64_t b = 0; b < g->B; b++)
        for (int64_t p = 0; p < g->P + g->S; p++) {
            const int64_t ts = p < g->P ? p : Ls->T - (g->P + g->S - p), td = p < g->P ? p : Ld->T - (g->P + g->S - p);
            if (memcmp((const char *)dst + at(Ld, b, td, 0) * es, (const char *)src + at(Ls, b, ts, 0) * es,
                       (size_t)g->C * es))
                return record(0, check, "batch %lld: token %lld is not input token %lld", (long long)b,
                              (long long)td, (long long)ts);
        }
    return record(1, check, NULL);
}

/* One direction of a case: returns dst (the caller frees it). */
static void *check_grid_direction(const gcase *g, const vitpe_plan *plan, int backward, const void *src) {
    const char *tag[5] = {backward ? "grid-bwd" : "grid-fwd", "grid-split", "grid-bits", "grid-tokens", "grid-half"};
    const int dt = g->dtype;
    const size_t es = dtype_size(dt);
    layout Ls = glayout(g, backward, 0), Ld = glayout(g, backward, 1);
    vitpe_io io = gio(g, &Ls, &Ld);
    void *one = alloc_filled(&Ld, dt, 0xA5);
    int st = run_staged(backward, one, src, plan, &io, 1);
    if (!record(st == VITPE_OK, tag[0], "staged run returned %d (%s)", st, vitpe_status_str(st))) return one;

    { /* several row ranges per stage */
        void *split = alloc_filled(&Ld, dt, 0x5A);
        st = run_staged(backward, split, src, plan, &io, (int)rng_int(2, 5));
        if (record(st == VITPE_OK, tag[1], "split run returned %d", st))
            compare_bits(tag[1], split, 0x5A, one, 0xA5, &Ld, dt);
        free(split);
    }
    check_tokens(tag[3], g, one, &Ld, src, &Ls);

    { /* the staged arithmetic, bit for bit */
        double *ref = staged_reference(g, plan, backward, src, &Ls);
        const int64_t grid = Ld.T - g->P - g->S;
        unsigned char want[8];
        int ok = ref != NULL;
        for (int64_t b = 0; b < g->B && ok; b++)
            for (int64_t t = 0; t < grid && ok; t++)
                for (int64_t c = 0; c < g->C && ok; c++) {
                    const int64_t i = at(&Ld, b, g->P + t, c);
                    set(want, dt, 0, ref[(b * grid + t) * g->C + c]);
                    if (memcmp((const char *)one + i * es, want, es))
                        ok = record(0, tag[2], "batch %lld grid token %lld channel %lld: %.17g, the staged "
                                    "arithmetic gives %.17g", (long long)b, (long long)t, (long long)c,
                                    get(one, dt, i), get(want, dt, 0));
                }
        if (ok) record(1, tag[2], NULL);
        free(ref);
    }

    { /* vs the naive N-D reference */
        void *naive = alloc_filled(&Ld, dt, 0x77);
        st = backward ? vitpe_backward_naive_nd(naive, src, g->rank, g->ax, &io)
                      : vitpe_forward_naive_nd(naive, src, g->rank, g->ax, &io);
        if (record(st == VITPE_OK, tag[0], "naive returned %d", st)) {
            const vitpe_taps *tt = backward ? &plan->adj_t : &plan->fwd_t, *th = backward ? &plan->adj_h : &plan->fwd_h,
                             *tw = backward ? &plan->adj_w : &plan->fwd_w;
            double *mag = grid_magnitudes(g, plan, backward, src, &Ls);
            const int64_t grid = Ld.T - g->P - g->S;
            layout Lgrid = Ld;
            Lgrid.T = Ld.T - g->S; /* the suffix is checked bitwise above */
            /* compare_grid wants magnitudes over Lgrid's tokens, prefix included */
            double *full = xmalloc((size_t)(g->B * Lgrid.T * g->C) * sizeof(double));
            memset(full, 0, (size_t)(g->B * Lgrid.T * g->C) * sizeof(double));
            for (int64_t b = 0; b < g->B; b++)
                memcpy(full + (b * Lgrid.T + g->P) * g->C, mag + b * grid * g->C,
                       (size_t)(grid * g->C) * sizeof(double));
            compare_grid(tag[0], one, naive, full, &Lgrid, g->P, dt, tt->width + th->width + tw->width,
                         tt->width * th->width * tw->width);
            free(full);
            free(mag);
        }
        free(naive);
    }

    if (dt == VITPE_F16 || dt == VITPE_BF16) { /* the float32 run on the widened table, rounded once */
        gcase g32 = *g;
        g32.dtype = VITPE_F32;
        for (int i = 0; i < g->rank; i++) g32.ax[i].opmath_double = 0;
        vitpe_plan *p32 = NULL;
        layout Ls32 = glayout(&g32, backward, 0), Ld32 = glayout(&g32, backward, 1);
        vitpe_io io32 = gio(&g32, &Ls32, &Ld32);
        void *s32 = alloc_filled(&Ls32, VITPE_F32, 0), *d32 = alloc_filled(&Ld32, VITPE_F32, 0);
        for (int64_t b = 0; b < g->B; b++)
            for (int64_t t = 0; t < Ls.T; t++)
                for (int64_t c = 0; c < g->C; c++) set(s32, VITPE_F32, at(&Ls32, b, t, c), get(src, dt, at(&Ls, b, t, c)));
        st = vitpe_plan_create_nd(&p32, g->rank, g32.ax, backward);
        if (!st) st = run_staged(backward, d32, s32, p32, &io32, 1);
        if (record(st == VITPE_OK, tag[4], "float32 run returned %d", st)) {
            int ok = 1;
            unsigned char want[2];
            for (int64_t b = 0; b < g->B && ok; b++)
                for (int64_t t = g->P; t < Ld.T - g->S && ok; t++)
                    for (int64_t c = 0; c < g->C && ok; c++) {
                        set(want, dt, 0, get(d32, VITPE_F32, at(&Ld32, b, t, c)));
                        if (memcmp((const char *)one + at(&Ld, b, t, c) * es, want, es))
                            ok = record(0, tag[4], "batch %lld token %lld channel %lld: %.9g, float32 run %.9g",
                                        (long long)b, (long long)t, (long long)c, get(one, dt, at(&Ld, b, t, c)),
                                        get(d32, VITPE_F32, at(&Ld32, b, t, c)));
                    }
            if (ok) record(1, tag[4], NULL);
        }
        vitpe_plan_destroy(p32);
        free(s32);
        free(d32);
    }
    return one;
}

/* <A x, y> == <x, A^T y> over the grid tokens. */
static void check_grid_adjoint(const gcase *g, const void *x, const void *Ax, const void *y, const void *ATy) {
    layout Lx = glayout(g, 0, 0), Lax = glayout(g, 0, 1), Ly = glayout(g, 1, 0), Laty = glayout(g, 1, 1);
    double lhs = 0, rhs = 0, scale = 0;
    for (int64_t b = 0; b < g->B; b++)
        for (int64_t c = 0; c < g->C; c++) {
            for (int64_t t = g->P; t < Lax.T - g->S; t++) {
                double v = get(Ax, VITPE_F64, at(&Lax, b, t, c)) * get(y, VITPE_F64, at(&Ly, b, t, c));
                lhs += v;
                scale += fabs(v);
            }
            for (int64_t t = g->P; t < Lx.T - g->S; t++) {
                double v = get(x, VITPE_F64, at(&Lx, b, t, c)) * get(ATy, VITPE_F64, at(&Laty, b, t, c));
                rhs += v;
                scale += fabs(v);
            }
        }
    record(fabs(lhs - rhs) <= 1e-12 * (scale + 1e-300), "grid-adjoint", "<Ax,y> = %.17g, <x,A^T y> = %.17g", lhs, rhs);
}

static void run_grid_case(const gcase *g) {
    vitpe_plan *plan = NULL;
    gdescribe(g, "grids");
    int st = vitpe_plan_create_nd(&plan, g->rank, g->ax, 1);
    if (!record(st == VITPE_OK && plan, "grid-plans", "vitpe_plan_create_nd returned %d", st)) return;
    record(plan->rank == g->rank, "grid-plans", "plan->rank %d", plan->rank);
    layout Lx = glayout(g, 0, 0), Ly = glayout(g, 1, 0);
    void *x = alloc_filled(&Lx, g->dtype, 0xFF), *y = alloc_filled(&Ly, g->dtype, 0xFF); /* NaN padding */
    fill_random(x, &Lx, g->P, g->dtype, 1.0, 1);
    fill_random(y, &Ly, g->P, g->dtype, 1.0, 0);
    for (int64_t b = 0; b < g->B; b++) /* specials in the suffix too */
        for (int64_t t = Lx.T - g->S; t < Lx.T; t++)
            for (int64_t c = 0; c < g->C; c++)
                if (rng_next() % 3 == 0) set_special(x, g->dtype, at(&Lx, b, t, c), (int)(rng_next() % 5));
    void *Ax = check_grid_direction(g, plan, 0, x);
    void *ATy = check_grid_direction(g, plan, 1, y);
    if (g->dtype == VITPE_F64) check_grid_adjoint(g, x, Ax, y, ATy);
    free(Ax);
    free(ATy);
    free(x);
    free(y);
    vitpe_plan_destroy(plan);
}

static int pick_channels(void) {
    static const int64_t cs[] = {1, 3, 8, 64, 83, 128};
    return (int)cs[rng_next() % (sizeof cs / sizeof cs[0])];
}

/* Runs g's axes over a random layout: batch, prefix and suffix tokens,
 * channels (the vector paths' counts and their tails), padding. */
static void run_random_layout(gcase *g) {
    g->B = rng_int(1, 2);
    g->P = rng_int(0, 2);
    g->S = rng_int(0, 3);
    g->C = pick_channels();
    g->in_pad = rng_int(0, 2);
    g->out_pad = rng_int(0, 2);
    run_grid_case(g);
}

/* Random sizes, every mode x accepted flags x scale_factor x dtype, ranks 1 and 3. */
void grid_sweep(void) {
    for (int rank = 1; rank <= 3; rank += 2)
        for (int mode = 0; mode < VITPE_MODE_COUNT; mode++)
            for (int ac = 0; ac <= mode_max_align_corners(mode); ac++)
                for (int aa = 0; aa <= mode_max_antialias(mode); aa++)
                    for (int sf = 0; sf <= mode_info(mode).scale_factor; sf++)
                        for (int dt = 0; dt < 4; dt++) {
                            gcase g;
                            memset(&g, 0, sizeof g);
                            g.rank = rank;
                            g.dtype = dt;
                            for (int i = 0; i < rank; i++) {
                                const int64_t hi = rank == 1 ? 24 : 6;
                                int64_t in = rng_int(1, hi), out = rng_int(1, hi + 2);
                                /* rank 3: an axis of unchanged size now and then (a stage left out) */
                                if (rank == 3 && rng_next() % 4 == 0) out = in;
                                g.ax[i] = make_axis(in, out, mode, ac, aa, dt, sf);
                            }
                            run_random_layout(&g);
                        }
}

/* The three ways a rank-3 run is staged, each forced once per mode: T
 * unchanged (one GRID stage), H and W unchanged (one T stage), both resized
 * (two stages), with the vector paths' channel counts. */
void grid_stages(void) {
    static const int64_t shapes[][6] = {
        {4, 5, 6, 4, 9, 3},  /* T kept: H and W passes per slice */
        {3, 5, 6, 7, 5, 6},  /* H, W kept: the T pass alone */
        {3, 4, 5, 6, 2, 8},  /* both: two stages */
        {1, 3, 3, 5, 6, 6},  /* one frame to five */
        {6, 1, 1, 2, 1, 1},  /* T only, 1 x 1 slabs */
    };
    for (int mode = 0; mode < VITPE_MODE_COUNT; mode++)
        for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++)
            for (int dt = 0; dt < 4; dt++) {
                gcase g;
                memset(&g, 0, sizeof g);
                g.rank = 3;
                g.dtype = dt;
                const int aa = mode_max_antialias(mode) && k % 2;
                for (int i = 0; i < 3; i++)
                    g.ax[i] = make_axis(shapes[k][i], shapes[k][3 + i], mode, 0, aa, dt, 0);
                g.B = 2;
                g.P = 1;
                g.S = 3;
                g.C = k % 2 ? 128 : 64 + 16 + 5;
                g.in_pad = k % 3;
                g.out_pad = 1;
                run_grid_case(&g);
            }
}

/* in == out (no scale_factor): bit for bit, every mode, ranks 1 and 3 */
void grid_identity(void) {
    for (int rank = 1; rank <= 3; rank += 2)
        for (int mode = 0; mode < VITPE_MODE_COUNT; mode++)
            for (int dt = 0; dt < 4; dt++) {
                gcase g;
                memset(&g, 0, sizeof g);
                g.rank = rank;
                g.dtype = dt;
                for (int i = 0; i < rank; i++) {
                    const int64_t n = rng_int(1, rank == 1 ? 30 : 6);
                    g.ax[i] = make_axis(n, n, mode, 0, 0, dt, 0);
                }
                g.B = 2;
                g.P = 1;
                g.S = 2;
                g.C = 70;
                g.in_pad = 1;
                g.out_pad = 2;
                gdescribe(&g, "grid-identity");
                vitpe_plan *plan = NULL;
                layout Lx = glayout(&g, 0, 0), Ld = glayout(&g, 0, 1);
                vitpe_io io = gio(&g, &Lx, &Ld);
                void *x = alloc_filled(&Lx, dt, 0xFF), *out = alloc_filled(&Ld, dt, 0xA5);
                fill_random(x, &Lx, g.P, dt, 1.0, 1);
                int st = vitpe_plan_create_nd(&plan, rank, g.ax, 0);
                if (!st) st = run_staged(0, out, x, plan, &io, 2);
                if (record(st == VITPE_OK, "grid-identity", "returned %d", st)) {
                    const size_t es = dtype_size(dt);
                    int ok = 1;
                    for (int64_t b = 0; b < g.B && ok; b++)
                        for (int64_t t = 0; t < Lx.T && ok; t++)
                            if (memcmp((char *)out + at(&Ld, b, t, 0) * es, (char *)x + at(&Lx, b, t, 0) * es,
                                       (size_t)g.C * es))
                                ok = record(0, "grid-identity", "token %lld of batch %lld changed", (long long)t,
                                            (long long)b);
                    if (ok) record(1, "grid-identity", NULL);
                }
                vitpe_plan_destroy(plan);
                free(x);
                free(out);
            }
}

/* Rank 2 through _nd is vitpe_plan_create's plan; rank 1 is rank 2 with a
 * 1 -> 1 H axis, bit for bit; the aliases. */
void grid_plans(void) {
    snprintf(case_name, sizeof case_name, "grid-plans: ranks and aliases");
    for (int mode = 0; mode < VITPE_MODE_COUNT; mode++) {
        const int ac = mode_max_align_corners(mode), aa = mode_max_antialias(mode);
        vitpe_axis axes[2] = {make_axis(5, 9, mode, ac, aa, VITPE_F32, 0), make_axis(7, 4, mode, ac, 0, VITPE_F32, 1)};
        vitpe_plan *p2 = NULL, *pnd = NULL, *p1 = NULL, *p21 = NULL;
        vitpe_plan_layout L2, Lnd;
        int ok = vitpe_plan_create(&p2, &axes[0], &axes[1], 1) == VITPE_OK &&
                 vitpe_plan_create_nd(&pnd, 2, axes, 1) == VITPE_OK &&
                 vitpe_plan_measure(&L2, &axes[0], &axes[1], 1) == VITPE_OK &&
                 vitpe_plan_measure_nd(&Lnd, 2, axes, 1) == VITPE_OK;
        ok = ok && !memcmp(&L2, &Lnd, sizeof L2) && !memcmp(&p2->layout, &L2, sizeof L2) &&
             !memcmp(p2->buffer, pnd->buffer, L2.bytes) && p2->rank == 2;
        record(ok, "grid-plans", "mode %s: rank 2 through vitpe_plan_create_nd differs", vitpe_mode_name(mode));
        /* rank 1 over W = rank 2 with H 1 -> 1 */
        vitpe_axis unit = make_axis(1, 1, mode, 0, 0, VITPE_F32, 0), pair[2] = {unit, axes[1]};
        ok = vitpe_plan_create_nd(&p1, 1, &axes[1], 1) == VITPE_OK &&
             vitpe_plan_create_nd(&p21, 2, pair, 1) == VITPE_OK;
        if (record(ok, "grid-plans", "mode %s: rank-1 plans", vitpe_mode_name(mode))) {
            int64_t C = 67, L = 7, Lo = 4;
            float *x = xmalloc((size_t)(2 + L) * C * 4), *a = xmalloc((size_t)(2 + Lo) * C * 4),
                  *b = xmalloc((size_t)(2 + Lo) * C * 4);
            for (int64_t i = 0; i < (2 + L) * C; i++) x[i] = (float)(2.0 * rng_uniform() - 1.0);
            vitpe_io io = {VITPE_F32, 1, 1, C, (2 + L) * C, C, (2 + Lo) * C, C, 1};
            int st = run_staged(0, a, x, p1, &io, 1), st2 = run_staged(0, b, x, p21, &io, 1);
            record(st == VITPE_OK && st2 == VITPE_OK && !memcmp(a, b, (size_t)(2 + Lo) * C * 4), "grid-plans",
                   "mode %s: rank 1 differs from rank 2 with a 1 -> 1 H axis (status %d %d)", vitpe_mode_name(mode),
                   st, st2);
            free(x);
            free(a);
            free(b);
        }
        vitpe_plan_destroy(p2);
        vitpe_plan_destroy(pnd);
        vitpe_plan_destroy(p1);
        vitpe_plan_destroy(p21);
    }
    record(vitpe_mode_lookup("linear", 1) == VITPE_MODE_BILINEAR && vitpe_mode_lookup("trilinear", 3) == VITPE_MODE_BILINEAR &&
               vitpe_mode_lookup("linear", 2) == -1 && vitpe_mode_lookup("trilinear", 2) == -1 &&
               vitpe_mode_lookup("trilinear", 1) == -1 && vitpe_mode_lookup("bicubic", 3) == VITPE_MODE_BICUBIC &&
               vitpe_mode_lookup("nope", 1) == -1 && vitpe_mode_lookup(NULL, 1) == -1,
           "grid-plans", "vitpe_mode_lookup");
    {
        const char *name = NULL;
        int rank = 0, mode = 0, n = 0;
        while (vitpe_mode_alias(n, &name, &rank, &mode) == VITPE_OK) n++;
        record(n == 2 && vitpe_mode_alias(-1, &name, &rank, &mode) == VITPE_EINVAL, "grid-plans",
               "vitpe_mode_alias lists %d aliases", n);
    }
}

void grid_errors(void) {
    snprintf(case_name, sizeof case_name, "grid-errors");
    vitpe_axis ax[4];
    for (int i = 0; i < 4; i++) ax[i] = make_axis(3 + i, 5 - i, VITPE_MODE_BICUBIC, 0, 0, VITPE_F32, 0);
    vitpe_plan *plan = NULL;
    vitpe_plan_layout L;
    record(vitpe_plan_create_nd(&plan, 0, ax, 1) == VITPE_EINVAL && !plan, "grid-errors", "rank 0");
    record(vitpe_plan_create_nd(&plan, 4, ax, 1) == VITPE_EINVAL && !plan, "grid-errors", "rank 4");
    record(vitpe_plan_create_nd(&plan, 3, NULL, 1) == VITPE_EINVAL && !plan, "grid-errors", "NULL axes");
    record(vitpe_plan_measure_nd(&L, 3, NULL, 1) == VITPE_EINVAL, "grid-errors", "measure: NULL axes");
    record(vitpe_plan_measure_nd(NULL, 3, ax, 1) == VITPE_EINVAL, "grid-errors", "measure: NULL layout");
    vitpe_axis bad[3] = {ax[0], ax[1], ax[2]};
    bad[0].in_size = 0;
    record(vitpe_plan_create_nd(&plan, 3, bad, 1) == VITPE_EINVAL && !plan, "grid-errors", "T axis of size 0");
    bad[0] = ax[0];
    bad[0].in_size = VITPE_MAX_AXIS + 1;
    record(vitpe_plan_create_nd(&plan, 3, bad, 1) == VITPE_EOVERFLOW && !plan, "grid-errors", "T axis too long");
    {
        vitpe_io io = {VITPE_F32, 1, 0, 1, 0, 1, 0, 1, 0};
        float buf[1];
        record(vitpe_forward_naive_nd(buf, buf, 0, ax, &io) == VITPE_EINVAL, "grid-errors", "naive rank 0");
        record(vitpe_backward_naive_nd(buf, buf, 4, ax, &io) == VITPE_EINVAL, "grid-errors", "naive rank 4");
    }

    /* a two-stage plan: (T 3 -> 5, H 4 -> 4 bicubic, W 5 -> 3), B=2, P=1, S=2, C=4 */
    gcase g;
    memset(&g, 0, sizeof g);
    g.rank = 3;
    g.dtype = VITPE_F32;
    g.ax[0] = ax[0];
    g.ax[1] = ax[1];
    g.ax[2] = ax[2];
    g.B = 2;
    g.P = 1;
    g.S = 2;
    g.C = 4;
    layout Lx = glayout(&g, 0, 0), Lo = glayout(&g, 0, 1);
    vitpe_io io = gio(&g, &Lx, &Lo);
    vitpe_stages s;
    size_t bytes = 0;
    if (!record(vitpe_plan_create_nd(&plan, 3, g.ax, 0) == VITPE_OK, "grid-errors", "plan")) return;
    int st = vitpe_cpu_stages(&s, plan, &io, 0);
    record(st == VITPE_OK && s.count == 2 && s.rows[0] == 2 * 3 * 4 && s.rows[1] == 2 * 5 * 4 &&
               s.workspace_bytes == (size_t)(2 * 3 * 4 * 3 * 4) * sizeof(float),
           "grid-errors", "stages: status %d, %d stages, rows %lld/%lld, %zu workspace bytes", st, s.count,
           (long long)s.rows[0], (long long)s.rows[1], s.workspace_bytes);
    record(vitpe_cpu_stages(&s, plan, &io, 1) == VITPE_EINVAL, "grid-errors", "backward stages without adjoint");
    record(vitpe_cpu_stages(NULL, plan, &io, 0) == VITPE_EINVAL, "grid-errors", "stages: NULL out");
    record(vitpe_cpu_stages(&s, NULL, &io, 0) == VITPE_EINVAL, "grid-errors", "stages: NULL plan");
    {
        vitpe_io big = io;
        big.batch = INT64_MAX / 4;
        record(vitpe_cpu_stages(&s, plan, &big, 0) == VITPE_EOVERFLOW, "grid-errors", "stages: rows overflow");
        big = io;
        big.suffix = -1;
        record(vitpe_cpu_stages(&s, plan, &big, 0) == VITPE_EINVAL, "grid-errors", "stages: suffix -1");
    }
    vitpe_scratch_bytes(&bytes, plan, &io, 0);
    vitpe_cpu_stages(&s, plan, &io, 0); /* the failed calls above cleared s */
    float *x = alloc_filled(&Lx, VITPE_F32, 0), *out = alloc_filled(&Lo, VITPE_F32, 0xA5);
    void *scratch = xmalloc(bytes), *ws = xmalloc(s.workspace_bytes ? s.workspace_bytes : 1);
    st = vitpe_forward_cpu(out, x, plan, &io, 0, 8, scratch);
    record(st == VITPE_EINVAL, "grid-errors", "a two-stage plan through vitpe_forward_cpu returned %d", st);
    st = vitpe_forward_cpu_stage(out, x, plan, &io, 0, 0, 8, NULL, scratch);
    record(st == VITPE_EINVAL, "grid-errors", "no workspace returned %d", st);
    st = vitpe_forward_cpu_stage(out, x, plan, &io, 2, 0, 8, ws, scratch);
    record(st == VITPE_EINVAL, "grid-errors", "stage 2 returned %d", st);
    st = vitpe_forward_cpu_stage(out, x, plan, &io, -1, 0, 8, ws, scratch);
    record(st == VITPE_EINVAL, "grid-errors", "stage -1 returned %d", st);
    st = vitpe_forward_cpu_stage(out, x, plan, &io, 0, 0, 2 * 3 * 4 + 1, ws, scratch);
    record(st == VITPE_EINVAL, "grid-errors", "stage 0 past its rows returned %d", st);
    st = vitpe_forward_cpu_stage(out, x, plan, &io, 0, 0, 8, ws, NULL);
    record(st == VITPE_EINVAL, "grid-errors", "GRID stage without scratch returned %d", st);
    st = vitpe_backward_cpu_stage(x, out, plan, &io, 0, 0, 1, ws, scratch);
    record(st == VITPE_EINVAL, "grid-errors", "backward without adjoint tables returned %d", st);
    st = vitpe_forward_cpu_stage(out, x, plan, &io, 1, 5, 5, ws, scratch);
    record(st == VITPE_OK, "grid-errors", "an empty range returned %d", st);
    {
        int untouched = 1;
        for (int64_t i = 0; i < extent(&Lo) * 4; i++) untouched &= ((unsigned char *)out)[i] == 0xA5;
        record(untouched, "grid-errors", "a rejected or empty call wrote to its output");
    }
    st = vitpe_forward_cpu_stage(out, x, plan, &io, 1, 0, 1, ws, NULL); /* the T pass needs no scratch */
    record(st == VITPE_OK, "grid-errors", "T stage without scratch returned %d", st);
    free(x);
    free(out);
    free(scratch);
    free(ws);
    vitpe_plan_destroy(plan);
}

/* Sorted positions from before the first token to past the last, with a
 * repeat and a tie (x.5) where there is room. */
static void random_positions(double *p, int64_t in, int64_t out) {
    for (int64_t o = 0; o < out; o++) p[o] = (double)(rng_next() % 100000) / 100000.0 * ((double)in + 1.5) - 0.75;
    if (out >= 3) {
        p[1] = p[2];
        p[out / 2] = floor(p[out / 2]) + 0.5;
    }
    for (int64_t i = 1; i < out; i++) /* insertion sort: a few dozen values */
        for (int64_t j = i; j > 0 && p[j - 1] > p[j]; j--) {
            double t = p[j];
            p[j] = p[j - 1];
            p[j - 1] = t;
        }
}

void grid_positions(void) {
    static double pos[3][64];
    for (int rank = 1; rank <= 3; rank++)
        for (int mode = 0; mode < VITPE_MODE_COUNT; mode++) {
            if (!vitpe_mode_samples_at(mode)) continue;
            for (int dt = 0; dt < 4; dt++)
                for (int rep = 0; rep < 3; rep++) {
                    gcase g;
                    memset(&g, 0, sizeof g);
                    g.rank = rank;
                    g.dtype = dt;
                    for (int i = 0; i < rank; i++) {
                        const int64_t hi = rank == 1 ? 24 : 6;
                        int64_t in = rng_int(1, hi), out = rng_int(1, hi + 2);
                        g.ax[i] = make_axis(in, out, mode, 0, 0, dt, 0);
                        random_positions(pos[i], in, out);
                        g.ax[i].positions = pos[i];
                    }
                    run_random_layout(&g);
                }
        }

    /* the plan keeps its own copy: the caller's array may change after */
    snprintf(case_name, sizeof case_name, "grid-positions plan copy");
    {
        double mine[5] = {-1.0, 0.25, 1.5, 2.0, 9.0}, kept[5];
        vitpe_axis ax = make_axis(4, 5, VITPE_MODE_BICUBIC, 0, 0, VITPE_F32, 0);
        vitpe_plan *plan = NULL;
        ax.positions = mine;
        memcpy(kept, mine, sizeof mine);
        int st = vitpe_plan_create_nd(&plan, 1, &ax, 1);
        if (record(st == VITPE_OK, "grid-positions", "vitpe_plan_create_nd returned %d", st)) {
            for (int i = 0; i < 5; i++) mine[i] = 0.0;
            record(plan->w.positions != mine && memcmp(plan->w.positions, kept, sizeof kept) == 0,
                   "grid-positions", "the plan's positions follow the caller's array");
            vitpe_plan_destroy(plan);
        }
    }

    /* refused: a mode that averages a window, options of the uniform mapping,
     * positions that decrease, are not finite or are out of range */
    snprintf(case_name, sizeof case_name, "grid-positions errors");
    {
        double ok[3] = {0.0, 0.5, 1.0}, down[3] = {0.0, 1.0, 0.5}, nan3[3] = {0.0, NAN, 1.0},
               far[3] = {0.0, 1.0, (double)VITPE_MAX_AXIS * 2.0};
        const double *bad[3] = {down, nan3, far};
        for (int mode = 0; mode < VITPE_MODE_COUNT; mode++) {
            vitpe_axis ax = make_axis(2, 3, mode, 0, 0, VITPE_F32, 0);
            ax.positions = ok;
            const int want = vitpe_mode_samples_at(mode) ? VITPE_OK : VITPE_EINVAL;
            record(vitpe_axis_check(&ax) == want, "grid-positions", "mode %s with positions: %d",
                   vitpe_mode_name(mode), vitpe_axis_check(&ax));
        }
        for (int k = 0; k < 3; k++) {
            vitpe_axis ax = make_axis(2, 3, VITPE_MODE_BILINEAR, 0, 0, VITPE_F32, 0);
            ax.positions = bad[k];
            record(vitpe_axis_check(&ax) == VITPE_EINVAL, "grid-positions", "bad positions %d accepted", k);
        }
        vitpe_axis ac = make_axis(2, 3, VITPE_MODE_BILINEAR, 1, 0, VITPE_F32, 0),
                   aa = make_axis(2, 3, VITPE_MODE_BICUBIC, 0, 1, VITPE_F32, 0),
                   sf = make_axis(2, 3, VITPE_MODE_BILINEAR, 0, 0, VITPE_F32, 1);
        ac.positions = aa.positions = sf.positions = ok;
        record(vitpe_axis_check(&ac) == VITPE_EINVAL && vitpe_axis_check(&aa) == VITPE_EINVAL &&
                   vitpe_axis_check(&sf) == VITPE_EINVAL,
               "grid-positions", "align_corners/antialias/scale_factor accepted with positions");
    }
}
