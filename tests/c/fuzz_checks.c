/* fuzz_checks.c — the fuzz target's checks (see fuzz_vitpe.c): tensors of
 * any strides, the plan's tables, and forward/backward over any row split,
 * held bitwise to their own arithmetic (reference_sum, as the C suite holds
 * them), to the naive references (naive_tolerance) and to <Ax,y> = <x,ATy>.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_vitpe.h"

/* ------------------------------------------------------------------------
 * Tensors */

/* Allocates x over its extent, every byte `fill`; 0 if over the cap. */
static int tensor_alloc(tensor *x, const layout *L, int dt, unsigned char fill) {
    memset(x, 0, sizeof *x);
    x->L = *L;
    x->dt = dt;
    x->disjoint = 1;
    /* loops run over B x T x C, and over B x T when C is 0 */
    if ((double)L->B * (double)L->T > (double)MAX_ELEMS) return 0;
    if (L->B > 0 && L->T > 0 && L->C > 0) {
        double span = fabs((double)(L->B - 1) * (double)L->bs) + fabs((double)(L->T - 1) * (double)L->ts) + (double)L->C;
        if (span > (double)MAX_ELEMS || (double)L->B * (double)L->T * (double)L->C > (double)MAX_ELEMS) return 0;
        int64_t b_end = (L->B - 1) * L->bs, t_end = (L->T - 1) * L->ts;
        x->lo = (b_end < 0 ? b_end : 0) + (t_end < 0 ? t_end : 0);
        x->n = (b_end > 0 ? b_end : 0) + (t_end > 0 ? t_end : 0) + L->C - x->lo;
    }
    x->mem = xmalloc((size_t)x->n * dtype_size(dt));
    memset(x->mem, fill, (size_t)x->n * dtype_size(dt));
    x->cover = xmalloc((size_t)x->n);
    memset(x->cover, 0, (size_t)x->n);
    for (int64_t b = 0; b < L->B; b++)
        for (int64_t t = 0; t < L->T; t++)
            for (int64_t c = 0; c < L->C; c++) {
                unsigned char *k = &x->cover[at(L, b, t, c) - x->lo];
                if (*k) x->disjoint = 0, *k = 2;
                else *k = 1;
            }
    return 1;
}
void tensor_free(tensor *x) { free(x->mem); free(x->cover); x->mem = x->cover = NULL; }

/* Strides for (B, T, C): padded, reversed, broadcast or overlapping. */
static void decode_strides(reader *r, layout *L) {
    L->ts = L->C + (u8(r) % 2 ? pick(r, 1, 7) : 0);
    switch (u8(r) % 16) {
    case 13: L->ts = -L->ts; break;                   /* tokens in reverse memory order */
    case 14: L->ts = 0; break;                        /* one token, broadcast */
    case 15: L->ts = L->C / 2; break;                 /* overlapping tokens */
    }
    const int64_t span = (L->T > 0 ? (L->T - 1) * (L->ts < 0 ? -L->ts : L->ts) : 0) + L->C;
    L->bs = span + (u8(r) % 2 ? pick(r, 1, 5) : 0);
    switch (u8(r) % 16) {
    case 13: L->bs = -L->bs; break;
    case 14: L->bs = 0; break;
    case 15: L->bs = span / 2; break;
    }
}

/* Random data; some prefix elements get NaN payloads, -0, inf, subnormals
 * (copied bit for bit), and rarely grid elements are inf/NaN. */
static void fill_data(tensor *x, reader *r, int64_t P, double amp, int nonfinite) {
    uint64_t s = bytes_le(r, 4) * 0x9e3779b97f4a7c15ull + 1; /* data from the input's seed, not its bytes */
    void *o = origin(x);
    for (int64_t b = 0; b < x->L.B; b++)
        for (int64_t t = 0; t < x->L.T; t++)
            for (int64_t c = 0; c < x->L.C; c++) {
                s ^= s << 13, s ^= s >> 7, s ^= s << 17;
                const int64_t i = at(&x->L, b, t, c);
                const int special = (int)(s >> 61);
                if (t < P && special < 5 && x->disjoint) /* aliased, it could land on the grid */
                    set_special(o, x->dt, i, special);
                else if (nonfinite && (s & 63) == 0)
                    set(o, x->dt, i, (s & 64) ? NAN : (s & 128) ? INFINITY : -INFINITY);
                else
                    set(o, x->dt, i, ((double)(s >> 11) * 0x1.0p-52 - 1.0) * amp);
            }
}


/* ------------------------------------------------------------------------
 * The plan's tables */

static void check_taps(const vitpe_taps *t, int64_t n_out, int64_t n_in, const char *which, int forward) {
    if (!CHECK(t->n_out == n_out && t->n_in == n_in && t->width >= 0, "%s table is %lldx%lld, want %lldx%lld",
               which, (long long)t->n_out, (long long)t->n_in, (long long)n_out, (long long)n_in))
        return;
    for (int64_t o = 0; o < n_out; o++) {
        const int64_t s = t->start[o], n = t->count[o];
        if (!CHECK(n >= 0 && n <= t->width && s >= 0 && s + n <= n_in,
                   "%s row %lld: start %lld count %lld (width %lld, %lld inputs)", which, (long long)o,
                   (long long)s, (long long)n, (long long)t->width, (long long)n_in))
            return;
        if (!CHECK(!forward || n >= 1, "%s row %lld reads no input", which, (long long)o)) return;
        if (!CHECK(o == 0 || (s >= t->start[o - 1] && s + n >= t->start[o - 1] + t->count[o - 1]),
                   "%s row %lld: window not monotone", which, (long long)o))
            return;
        for (int64_t k = 0; k < t->width; k++) {
            const double w = t->weight[o * t->width + k];
            if (!CHECK(k < n ? isfinite(w) : w == 0.0, "%s row %lld slot %lld: weight %g", which, (long long)o,
                       (long long)k, w))
                return;
        }
    }
}

/* The adjoint holds exactly the forward's taps: every forward tap in its
 * slot with the same weight, and no other. */
static void check_transpose(const vitpe_taps *f, const vitpe_taps *a, const char *which) {
    int64_t nf = 0, na = 0;
    for (int64_t i = 0; i < a->n_out; i++) na += a->count[i];
    for (int64_t o = 0; o < f->n_out; o++)
        for (int64_t k = 0; k < f->count[o]; k++, nf++) {
            const int64_t i = f->start[o] + k, j = o - a->start[i];
            if (!CHECK(j >= 0 && j < a->count[i] && a->weight[i * a->width + j] == f->weight[o * f->width + k],
                       "%s adjoint lacks forward tap (%lld, %lld)", which, (long long)o, (long long)i))
                return;
        }
    CHECK(nf == na, "%s: %lld forward taps, %lld adjoint taps", which, (long long)nf, (long long)na);
}

/* The plan's axis is the caller's, except that it points to its own copy of
 * the sample positions (a cached plan outlives the caller's array). */
static int same_axis(const vitpe_axis *planned, const vitpe_axis *given) {
    vitpe_axis a = *planned, b = *given;
    if ((a.positions == NULL) != (b.positions == NULL)) return 0;
    if (a.positions && (a.positions == b.positions ||
                        memcmp(a.positions, b.positions, (size_t)a.out_size * sizeof(double)) != 0))
        return 0;
    a.positions = b.positions = NULL;
    return memcmp(&a, &b, sizeof a) == 0;
}

void check_plan(const vitpe_plan *p, const vitpe_axis *h, const vitpe_axis *w, const vitpe_plan_layout *L) {
    CHECK(memcmp(&p->layout, L, sizeof *L) == 0, "plan layout differs from vitpe_plan_measure");
    CHECK(same_axis(&p->h, h) && same_axis(&p->w, w), "plan axes differ (or share the caller's positions)");
    check_taps(&p->fwd_h, h->out_size, h->in_size, "H forward", 1);
    check_taps(&p->fwd_w, w->out_size, w->in_size, "W forward", 1);
    if (!p->layout.with_adjoint || g_failed) return;
    check_taps(&p->adj_h, h->in_size, h->out_size, "H adjoint", 0);
    check_taps(&p->adj_w, w->in_size, w->out_size, "W adjoint", 0);
    if (g_failed) return;
    check_transpose(&p->fwd_h, &p->adj_h, "H");
    check_transpose(&p->fwd_w, &p->adj_w, "W");
}


/* ------------------------------------------------------------------------
 * Forward and backward */

static int runs_ok(const direction *d, int64_t r0, int64_t r1) { /* the contract's valid ranges */
    return d->rows >= 0 && r0 >= 0 && r0 <= r1 && r1 <= d->rows;
}

/* One library call over rows [r0, r1) (fuzz_vitpe.h). */
int run(const direction *d, void *dst, const void *src, int64_t r0, int64_t r1, int null) {
    static double dummy[8];
    size_t bytes = 0;
    void *scratch = null == 4 ? (void *)dummy : NULL;
    if (null == 0 || null == 1 || null == 2) {
        int st = vitpe_scratch_bytes(&bytes, d->plan, &d->io, d->backward);
        if (!CHECK(st == VITPE_OK, "vitpe_scratch_bytes returned %d", st)) return -1;
        /* Tensors within MAX_ELEMS need at most 2 MB: more (a grid 2^24 wide,
         * no batches) comes with calls that must not touch it. */
        if (bytes > MAX_SCRATCH_BYTES && runs_ok(d, r0, r1) && r0 < r1 && d->io.channels > 0) {
            finding("vitpe_scratch_bytes asks %zu bytes for tensors within the cap", bytes);
            return -1;
        }
        scratch = bytes > MAX_SCRATCH_BYTES ? (void *)dummy : xmalloc(bytes);
    }
    track(0);
    int st = d->backward ? vitpe_backward_cpu(null == 1 ? NULL : dst, null == 2 ? NULL : src, d->plan, &d->io, r0,
                                              r1, scratch)
                         : vitpe_forward_cpu(null == 1 ? NULL : dst, null == 2 ? NULL : src, d->plan, &d->io, r0,
                                             r1, scratch);
    int64_t net = untrack();
    CHECK(net == 0, "%s rows [%lld, %lld): %lld allocations not freed", d->backward ? "backward" : "forward",
          (long long)r0, (long long)r1, (long long)net);
    CHECK(st != VITPE_EINTERNAL, "rows [%lld, %lld) returned VITPE_EINTERNAL", (long long)r0, (long long)r1);
    if (scratch != (void *)dummy) free(scratch);
    return st;
}

/* Rows [r0, r1) must be refused or, if valid per the contract, succeed. */
static void run_expect(const direction *d, void *dst, const void *src, int64_t r0, int64_t r1, int null) {
    int st = run(d, dst, src, r0, r1, null);
    int valid = runs_ok(d, r0, r1) && (null == 0 || null == 4 || r0 == r1 || d->io.channels == 0);
    CHECK(valid ? st == VITPE_OK : (st == VITPE_EINVAL || st == VITPE_EOVERFLOW),
          "%s rows [%lld, %lld) of %lld (null %d) returned %d", d->backward ? "backward" : "forward", (long long)r0,
          (long long)r1, (long long)d->rows, null, st);
}

static int untouched(const tensor *x, unsigned char fill) {
    for (int64_t i = 0; i < x->n * (int64_t)dtype_size(x->dt); i++)
        if (x->mem[i] != fill) return 0;
    return 1;
}

/* The grid row (work item) that writes token t of batch b. */
static int64_t row_of(const direction *d, int64_t b, int64_t t) {
    return b * d->th->n_out + (t < d->io.prefix ? 0 : (t - d->io.prefix) / d->tw->n_out);
}

/* Bitwise: the fast pass vs its own arithmetic (reference_sum, one rounding
 * to storage), prefix tokens vs the input. */
static void check_bits(const direction *d, const tensor *got, const tensor *src) {
    const int dt = got->dt;
    const size_t es = dtype_size(dt);
    unsigned char want[8];
    for (int64_t b = 0; b < got->L.B; b++) {
        for (int64_t p = 0; p < d->io.prefix; p++)
            for (int64_t c = 0; c < got->L.C; c++)
                if (!CHECK(!memcmp((char *)origin(got) + at(&got->L, b, p, c) * (int64_t)es,
                                   (char *)origin(src) + at(&src->L, b, p, c) * (int64_t)es, es),
                           "prefix (b %lld, token %lld, c %lld) not copied bit for bit", (long long)b, (long long)p,
                           (long long)c))
                    return;
        for (int64_t oy = 0; oy < d->th->n_out; oy++)
            for (int64_t ox = 0; ox < d->tw->n_out; ox++)
                for (int64_t c = 0; c < got->L.C; c++) {
                    const int64_t i = at(&got->L, b, d->io.prefix + oy * d->tw->n_out + ox, c);
                    const double v =
                        reference_sum(origin(src), &src->L, src->dt, b, d->io.prefix, d->th, oy, d->tw, ox, c);
                    const double g = get(origin(got), dt, i);
                    set(want, dt, 0, v);
                    if (isnan(g) && isnan(v)) continue; /* payloads are not compared */
                    if (!CHECK(!memcmp((char *)origin(got) + i * (int64_t)es, want, es),
                               "%s (b %lld, y %lld, x %lld, c %lld) = %.17g, its arithmetic gives %.17g",
                               d->backward ? "dinp" : "out", (long long)b, (long long)oy, (long long)ox, (long long)c,
                               g, get(want, dt, 0)))
                        return;
                }
    }
}

/* +-inf as the next step past the largest finite value of the storage type,
 * so that a sum overflowing on one side only is one unit off, not infinitely */
static double past_largest(int dt, double x) {
    if (!isinf(x) || dt == VITPE_F64) return x;
    return copysign(dt == VITPE_F16 ? 65536.0 : 0x1p128, x);
}

/* Fast vs naive, with the C suite's tolerance (naive_tolerance: error bounds
 * of the two sums from the magnitudes of their terms, plus one storage unit
 * for the half types) and an absolute term for subnormal results. */
static void check_naive(const direction *d, const vitpe_axis *h, const vitpe_axis *w, const tensor *got,
                        const tensor *src, reader *r) {
    const int dt = got->dt;
    const layout *Ld = &got->L, *Ls = &src->L;
    const int64_t C = Ld->C, P = d->io.prefix, T = Ld->T;
    tensor ref;
    tensor_alloc(&ref, Ld, dt, 0x77);
    vitpe_io io = d->io;
    io.out_batch_stride = Ld->bs, io.out_token_stride = Ld->ts;
    int fail = CAN_FAIL_MALLOC && u8(r) % 8 == 0;
    for (int attempt = fail; attempt >= 0; attempt--) { /* a failing malloc first, then for real */
        track(attempt);
        int st = d->backward ? vitpe_backward_naive(origin(&ref), origin(src), h, w, &io)
                             : vitpe_forward_naive(origin(&ref), origin(src), h, w, &io);
        int64_t net = untrack();
        CHECK(net == 0, "naive: %lld allocations not freed (status %d)", (long long)net, st);
        if (attempt) {
            CHECK(st == VITPE_ENOMEM && untouched(&ref, 0x77), "naive with a failing malloc returned %d", st);
        } else if (!CHECK(st == VITPE_OK, "naive returned %d", st)) {
            tensor_free(&ref);
            return;
        }
    }
    double *mag = term_magnitudes(d->plan, d->backward, origin(src), Ls, dt, P, Ld->B, T);
    const double tiny = dt == VITPE_F64 ? 0x1.0p-1074 : 0x1.0p-149; /* subnormal results */
    const int64_t n_fast = d->th->width + d->tw->width, n_ref = d->th->width * d->tw->width;
    for (int64_t b = 0; b < Ld->B; b++)
        for (int64_t t = P; t < T; t++)
            for (int64_t c = 0; c < C; c++) {
                int64_t i = at(Ld, b, t, c);
                double g = get(origin(got), dt, i), v = get(origin(&ref), dt, i), m = mag[(b * T + t) * C + c];
                if (g == v) continue; /* infinities too: a float16 sum past 65504 overflows in both */
                g = past_largest(dt, g), v = past_largest(dt, v);
                double tol = naive_tolerance(dt, m, n_fast, n_ref, (double)(n_fast + n_ref + 6) * tiny, g, v);
                if (!CHECK(fabs(g - v) <= tol, "%s (b %lld, token %lld, c %lld) = %.17g, naive %.17g, tol %.3g",
                           d->backward ? "dinp" : "out", (long long)b, (long long)t, (long long)c, g, v, tol))
                    goto done;
            }
done:
    free(mag);
    tensor_free(&ref);
}

/* A row range that must not write: invalid, empty, or (case 7) any, which
 * the caller then only runs where it writes nothing. */
static void decode_range(reader *r, int64_t rows, int64_t *r0, int64_t *r1) {
    const int64_t n = rows < 0 ? 4 : rows;
    switch (u8(r) % 8) {
    case 0: *r0 = -pick(r, 1, 3), *r1 = pick(r, 0, 3); break;
    case 1: *r0 = n < INT64_MAX ? pick(r, 1, n + 1) : n, *r1 = *r0 - 1; break; /* reversed */
    case 2: *r0 = 0, *r1 = n < INT64_MAX ? n + 1 : n; break;
    case 3: *r0 = INT64_MIN, *r1 = INT64_MAX; break;
    case 4: *r0 = *r1 = pick(r, 0, n); break;
    case 5: *r0 = *r1 = n < INT64_MAX ? n + 1 : n; break;
    case 6: *r0 = *r1 = INT64_MAX; break;
    default: *r0 = pick(r, 0, n), *r1 = pick(r, *r0, n); break;
    }
}

/* One direction (fuzz_vitpe.h). */
void run_direction(reader *r, const vitpe_plan *plan, const vitpe_axis *h, const vitpe_axis *w,
                   const vitpe_io *shape, int backward, tensor *x, tensor *y) {
    direction d = {backward, plan, backward ? &plan->adj_h : &plan->fwd_h, backward ? &plan->adj_w : &plan->fwd_w,
                   *shape, -1};
    const vitpe_io *io = shape;
    const int valid_io = io->dtype >= VITPE_F32 && io->dtype <= VITPE_BF16 && io->batch >= 0 && io->prefix >= 0 &&
                         io->channels >= 0;
    if (valid_io && (d.th->n_out == 0 || io->batch <= INT64_MAX / d.th->n_out)) d.rows = io->batch * d.th->n_out;
    const int64_t Bm = io->batch <= 3 ? io->batch : 1; /* batches in memory; more alias batch 0 */
    layout Ls = {Bm, 0, io->channels, 0, 0}, Ld = Ls;
    tensor src, dst;
    memset(&src, 0, sizeof src);
    memset(&dst, 0, sizeof dst);
    int feasible = valid_io && io->prefix <= 64 && io->channels <= 4096;
    if (feasible) {
        Ls.T = io->prefix + d.th->n_in * d.tw->n_in;
        Ld.T = io->prefix + d.th->n_out * d.tw->n_out;
        decode_strides(r, &Ls);
        decode_strides(r, &Ld);
        if (io->batch > 3) Ls.bs = Ld.bs = 0;
        d.io.in_batch_stride = Ls.bs, d.io.in_token_stride = Ls.ts;
        d.io.out_batch_stride = Ld.bs, d.io.out_token_stride = Ld.ts;
        feasible = tensor_alloc(&src, &Ls, io->dtype, 0xFF) && tensor_alloc(&dst, &Ld, io->dtype, 0xA5);
    }
    if (valid_io) {
        size_t bytes;
        int st = vitpe_scratch_bytes(&bytes, plan, &d.io, backward);
        CHECK(st == VITPE_OK || (st == VITPE_EOVERFLOW && io->channels >= ((int64_t)1 << 32)),
              "vitpe_scratch_bytes returned %d", st);
    }
    if (!feasible) { /* what cannot run must be refused, or be empty, and touch nothing */
        static unsigned char dummy[64];
        memset(dummy, 0xA5, sizeof dummy);
        for (int k = u8(r) % 4; k >= 0; k--) {
            int64_t r0, r1;
            decode_range(r, d.rows, &r0, &r1);
            if (!runs_ok(&d, r0, r1) || r0 == r1 || io->channels == 0) run_expect(&d, dummy, dummy, r0, r1, 4);
        }
        for (size_t i = 0; i < sizeof dummy; i++)
            if (!CHECK(dummy[i] == 0xA5, "a call that could not run wrote to its output")) break;
        goto out;
    }
    static const double amps[] = {1.0, 300.0, 1e-3, 1e-41, 1e30};
    const double amp = amps[u8(r) % (io->dtype == VITPE_F16 ? 3 : io->dtype == VITPE_BF16 ? 4 : 5)];
    const int nonfinite = u8(r) % 16 == 0;
    fill_data(&src, r, io->prefix, amp, nonfinite);

    /* invalid and empty ranges, NULL arguments: no effect */
    for (int k = u8(r) % 4; k > 0; k--) {
        int64_t r0, r1;
        decode_range(r, d.rows, &r0, &r1);
        const int null = u8(r) % 8 == 0 ? 1 + (int)(u8(r) % 3) : 0;
        if (!runs_ok(&d, r0, r1) || r0 == r1 || io->channels == 0 || null)
            run_expect(&d, origin(&dst), origin(&src), r0, r1, null);
    }
    CHECK(untouched(&dst, 0xA5), "a refused, empty or NULL-argument call wrote to its output");

    if (io->batch > 3) { /* a huge batch: rows at both ends, all batches aliasing one */
        const int64_t k = d.rows < 0 ? 1 : d.rows < 3 ? d.rows : 3;
        run_expect(&d, origin(&dst), origin(&src), 0, k, 0);
        if (d.rows >= 0) run_expect(&d, origin(&dst), origin(&src), d.rows - k, d.rows, 0);
        goto out;
    }
    int st = run(&d, origin(&dst), origin(&src), 0, d.rows, 0);
    if (!CHECK(st == VITPE_OK, "%s over all %lld rows returned %d", backward ? "backward" : "forward",
               (long long)d.rows, st) ||
        !dst.disjoint)
        goto out; /* overlapping outputs: memory safety only */
    g_reach[1]++;

    { /* the rows split in up to 4 ranges, run in any order: the same bits */
        tensor two;
        tensor_alloc(&two, &Ld, io->dtype, 0x5A);
        int64_t cut[5], order[4];
        const int parts = 1 + (int)(u8(r) % 4);
        cut[0] = 0, cut[parts] = d.rows;
        for (int i = 1; i < parts; i++) {
            int64_t c = pick(r, 0, d.rows), j = i;
            for (; j > 1 && cut[j - 1] > c; j--) cut[j] = cut[j - 1];
            cut[j] = c;
        }
        for (int i = 0; i < parts; i++) order[i] = i;
        for (int i = parts - 1; i > 0; i--) {
            int j = (int)(u8(r) % (unsigned)(i + 1));
            int64_t t = order[i];
            order[i] = order[j], order[j] = t;
        }
        for (int i = 0; i < parts && st == VITPE_OK; i++) {
            if (i == parts - 1) { /* before the last range: its rows still hold the fill */
                const int64_t h0 = cut[order[i]], h1 = cut[order[i] + 1];
                for (int64_t b = 0; b < Ld.B; b++)
                    for (int64_t t = 0; t < Ld.T; t++) {
                        const int64_t row = row_of(&d, b, t);
                        if (row < h0 || row >= h1) continue;
                        for (int64_t c = 0; c < Ld.C; c++) {
                            const unsigned char *p = two.mem + (at(&Ld, b, t, c) - two.lo) * (int64_t)dtype_size(io->dtype);
                            for (size_t k = 0; k < dtype_size(io->dtype); k++)
                                if (!CHECK(p[k] == 0x5A, "rows other than [%lld, %lld) wrote row %lld",
                                           (long long)h0, (long long)h1, (long long)row))
                                    goto split_done;
                        }
                    }
            }
            st = run(&d, origin(&two), origin(&src), cut[order[i]], cut[order[i] + 1], 0);
            CHECK(st == VITPE_OK, "rows [%lld, %lld) returned %d", (long long)cut[order[i]],
                  (long long)cut[order[i] + 1], st);
        }
        if (st == VITPE_OK) {
            const size_t es = dtype_size(io->dtype);
            for (int64_t i = 0; i < dst.n; i++) {
                const unsigned char *p = dst.mem + i * (int64_t)es, *q = two.mem + i * (int64_t)es;
                /* NaN payloads and signs are not compared, as in check_bits: a
                 * NaN's sign follows operand order, which compilers may commute */
                int same = dst.cover[i] ? !memcmp(p, q, es) || (isnan(get(dst.mem, io->dtype, i)) &&
                                                                isnan(get(two.mem, io->dtype, i)))
                                        : 1;
                for (size_t k = 0; k < es && !dst.cover[i]; k++) same &= p[k] == 0xA5 && q[k] == 0x5A;
                if (!CHECK(same, dst.cover[i] ? "a split run differs from one run (buffer element %lld)"
                                              : "padding element %lld was written", (long long)i))
                    break;
            }
        }
    split_done:
        tensor_free(&two);
    }

    { /* bitwise vs its arithmetic, then vs the naive reference */
        int64_t sh = 0, sw = 0;
        for (int64_t o = 0; o < d.th->n_out; o++) sh += d.th->count[o];
        for (int64_t o = 0; o < d.tw->n_out; o++) sw += d.tw->count[o];
        const double work = (double)Bm * (double)io->channels * (double)sh * (double)sw;
        if (work <= (double)MAX_WORK && Bm > 0) { /* (naive backward takes a grid of memory even for B = 0) */
            check_bits(&d, &dst, &src);
            g_reach[2]++;
            if (!nonfinite && amp < 1e30) check_naive(&d, h, w, &dst, &src, r), g_reach[3]++;
        }
    }
    if (io->dtype == VITPE_F64 && !nonfinite && !g_failed) {
        *x = src, *y = dst;
        return;
    }
out:
    tensor_free(&src);
    tensor_free(&dst);
}

/* <A x, y> == <x, A^T y> over the grid tokens (float64 data). */
void check_adjoint(const vitpe_io *io, const tensor *x, const tensor *Ax, const tensor *y, const tensor *ATy) {
    double lhs = 0, rhs = 0, scale = 0;
    for (int64_t b = 0; b < x->L.B; b++)
        for (int64_t c = 0; c < x->L.C; c++) {
            for (int64_t t = io->prefix; t < Ax->L.T; t++) {
                double v = get(origin(Ax), VITPE_F64, at(&Ax->L, b, t, c)) * get(origin(y), VITPE_F64, at(&y->L, b, t, c));
                lhs += v, scale += fabs(v);
            }
            for (int64_t t = io->prefix; t < x->L.T; t++) {
                double v = get(origin(x), VITPE_F64, at(&x->L, b, t, c)) * get(origin(ATy), VITPE_F64, at(&ATy->L, b, t, c));
                rhs += v, scale += fabs(v);
            }
        }
    CHECK(fabs(lhs - rhs) <= 1e-10 * scale, "<Ax,y> = %.17g, <x,ATy> = %.17g", lhs, rhs);
}
