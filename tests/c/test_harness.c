/* test_harness.c — see test_harness.h. */
#include "test_harness.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------
 * Reporting */

int n_passed, n_failed;
double worst_ratio[4];
int64_t n_compared[4], n_differ[4];
char case_name[512];

/* Records one check; prints the failure with the case description. */
int record(int ok, const char *check, const char *fmt, ...) {
    if (ok) {
        n_passed++;
        return 1;
    }
    n_failed++;
    printf("FAIL %-10s [%s]", check, case_name);
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        printf(": ");
        vprintf(fmt, ap);
        va_end(ap);
    }
    printf("\n");
    fflush(stdout);
    return 0;
}


/* ------------------------------------------------------------------------
 * Deterministic randomness (splitmix64) */

uint64_t rng_state = 0x5eed5eed12345678ull;
uint64_t rng_next(void) { return splitmix64(&rng_state); }
double rng_uniform(void) { return (double)(rng_next() >> 11) * 0x1.0p-53; } /* [0, 1) */
int64_t rng_int(int64_t lo, int64_t hi) { /* [lo, hi] */
    return lo + (int64_t)(rng_next() % (uint64_t)(hi - lo + 1));
}

/* ------------------------------------------------------------------------
 * Table layouts: (batch, tokens, C) with element strides, channel stride 1. */

/* Elements from the first to one past the last: the exact allocation. */
int64_t extent(const layout *L) {
    if (L->B == 0 || L->T == 0 || L->C == 0) return 0;
    return at(L, L->B - 1, L->T - 1, L->C - 1) + 1;
}
/* mask[i] = 1 where element i of the buffer belongs to the table */
unsigned char *element_mask(const layout *L) {
    int64_t n = extent(L);
    unsigned char *mask = xmalloc((size_t)n);
    memset(mask, 0, (size_t)n);
    for (int64_t b = 0; b < L->B; b++)
        for (int64_t t = 0; t < L->T; t++) memset(mask + at(L, b, t, 0), 1, (size_t)L->C);
    return mask;
}
void *alloc_filled(const layout *L, int dt, unsigned char byte) {
    size_t bytes = (size_t)extent(L) * dtype_size(dt);
    void *p = xmalloc(bytes);
    memset(p, byte, bytes);
    return p;
}

/* Random finite data in [-amp, amp) (never -0); with `specials`, some
 * prefix elements get the bit patterns above. Padding stays as allocated. */
void fill_random(void *p, const layout *L, int64_t P, int dt, double amp, int specials) {
    for (int64_t b = 0; b < L->B; b++)
        for (int64_t t = 0; t < L->T; t++)
            for (int64_t c = 0; c < L->C; c++) {
                int64_t i = at(L, b, t, c);
                if (specials && t < P && rng_next() % 3 == 0) set_special(p, dt, i, (int)(rng_next() % 5));
                else {
                    set(p, dt, i, (2.0 * rng_uniform() - 1.0) * amp);
                    if (get(p, dt, i) == 0.0) set(p, dt, i, 0.0); /* a tiny negative may round to -0 */
                }
            }
}

/* ------------------------------------------------------------------------
 * Cases */

vitpe_axis make_axis(int64_t in, int64_t out, int mode, int ac, int aa, int dtype, int with_sf) {
    vitpe_axis ax;
    memset(&ax, 0, sizeof ax);
    ax.in_size = in;
    ax.out_size = out;
    ax.mode = mode;
    ax.align_corners = ac;
    ax.antialias = aa;
    ax.opmath_double = dtype == VITPE_F64;
    ax.scale_factor = 0.0;
    if (with_sf) { /* any sf with floor(in * sf) == out, as F.interpolate requires */
        double sf = (out == 2 * in && rng_next() % 2) ? 2.0
                                                      : ((double)out + rng_uniform()) / (double)in;
        ax.scale_factor = fit_scale_factor(in, out, sf);
    }
    return ax;
}

void describe(const tcase *tc, const char *suite) {
    snprintf(case_name, sizeof case_name,
             "%s mode=%s align_corners=%d antialias=%d scale_factor=(%.17g,%.17g) "
             "H %lld->%lld W %lld->%lld dtype=%s B=%lld P=%lld C=%lld in_pad=%lld out_pad=%lld "
             "in_batch_stride0=%d",
             suite, vitpe_mode_name(tc->h.mode), tc->h.align_corners, tc->h.antialias,
             tc->h.scale_factor, tc->w.scale_factor, (long long)tc->h.in_size,
             (long long)tc->h.out_size, (long long)tc->w.in_size, (long long)tc->w.out_size,
             dtype_name(tc->dtype), (long long)tc->B, (long long)tc->P, (long long)tc->C,
             (long long)tc->in_pad, (long long)tc->out_pad, tc->in_bcast);
}

/* The layouts of one direction. Forward: src = inp, dst = out. Backward:
 * src = dout (the forward's output shape), dst = dinp. */
layout src_layout(const tcase *tc, int backward) {
    const vitpe_axis *h = &tc->h, *w = &tc->w;
    layout L;
    L.B = tc->B;
    L.C = tc->C;
    L.T = tc->P + (backward ? h->out_size * w->out_size : h->in_size * w->in_size);
    L.ts = tc->C + tc->in_pad;
    L.bs = tc->in_bcast ? 0 : L.T * L.ts + 3;
    return L;
}
layout dst_layout(const tcase *tc, int backward) {
    const vitpe_axis *h = &tc->h, *w = &tc->w;
    layout L;
    L.B = tc->B;
    L.C = tc->C;
    L.T = tc->P + (backward ? h->in_size * w->in_size : h->out_size * w->out_size);
    L.ts = tc->C + tc->out_pad;
    L.bs = L.T * L.ts + 2 * tc->out_pad;
    return L;
}
vitpe_io make_io(const tcase *tc, const layout *src, const layout *dst) {
    vitpe_io io;
    memset(&io, 0, sizeof io);
    io.dtype = tc->dtype;
    io.batch = tc->B;
    io.prefix = tc->P;
    io.channels = tc->C;
    io.in_batch_stride = src->bs;
    io.in_token_stride = src->ts;
    io.out_batch_stride = dst->bs;
    io.out_token_stride = dst->ts;
    return io;
}

/* Runs the fast pass over rows [r0, r1) with a fresh scratch of exactly the
 * advertised size. */
int run_rows(int backward, void *dst, const void *src, const vitpe_plan *plan, const vitpe_io *io, int64_t r0,
             int64_t r1) {
    size_t bytes;
    int st = vitpe_scratch_bytes(&bytes, plan, io, backward);
    if (st) return st;
    void *scratch = xmalloc(bytes);
    st = backward ? vitpe_backward_cpu(dst, src, plan, io, r0, r1, scratch)
                  : vitpe_forward_cpu(dst, src, plan, io, r0, r1, scratch);
    free(scratch);
    return st;
}

/* ------------------------------------------------------------------------
 * Comparisons */

/* Fast vs naive on the grid tokens. The fast pass sums n_fast terms in the
 * accumulator type along H then W; the naive one up to n_ref terms in
 * double; both round once to storage (naive_tolerance). */
int compare_grid(const char *check, const void *got, const void *ref, const double *mag,
                 const layout *L, int64_t P, int dt, int64_t n_fast, int64_t n_ref) {
    int shown = 0;
    for (int64_t b = 0; b < L->B; b++)
        for (int64_t t = P; t < L->T; t++)
            for (int64_t c = 0; c < L->C; c++) {
                int64_t i = at(L, b, t, c);
                double g = get(got, dt, i), r = get(ref, dt, i), m = mag[(b * L->T + t) * L->C + c];
                double tol = naive_tolerance(dt, m, n_fast, n_ref, 0.0, g, r);
                double d = fabs(g - r);
                n_compared[dt]++;
                n_differ[dt] += g != r;
                if (!(d <= tol)) { /* NaN fails too */
                    if (shown++ < 5)
                        record(0, check, "b=%lld token=%lld c=%lld got=%.17g ref=%.17g |diff|=%.3g tol=%.3g",
                               (long long)b, (long long)t, (long long)c, g, r, d, tol);
                } else if (tol > 0 && d / tol > worst_ratio[dt])
                    worst_ratio[dt] = d / tol;
            }
    if (shown > 5) printf("     ... %d mismatches in all\n", shown);
    return shown ? 0 : record(1, check, NULL);
}

/* Prefix tokens: the fast pass copies bits; the naive one values (NaN may
 * lose its payload through its double round trip). */
int check_prefix(const char *check, const void *got, const layout *Ld, const void *src,
                 const layout *Ls, int64_t P, int dt, int bitwise) {
    size_t es = dtype_size(dt);
    for (int64_t b = 0; b < Ld->B; b++)
        for (int64_t p = 0; p < P; p++)
            for (int64_t c = 0; c < Ld->C; c++) {
                int64_t gi = at(Ld, b, p, c), si = at(Ls, b, p, c);
                int ok = bitwise ? memcmp((const char *)got + gi * es, (const char *)src + si * es, es) == 0
                                 : (get(got, dt, gi) == get(src, dt, si) ||
                                    (isnan(get(got, dt, gi)) && isnan(get(src, dt, si))));
                if (!ok)
                    return record(0, check, "prefix b=%lld token=%lld c=%lld: got %.17g, input %.17g",
                                  (long long)b, (long long)p, (long long)c, get(got, dt, gi), get(src, dt, si));
            }
    return record(1, check, NULL);
}

/* a and b hold the same elements bit for bit; their padding still holds
 * the fill bytes pad_a / pad_b. */
int compare_bits(const char *check, const void *a, unsigned char pad_a, const void *b,
                 unsigned char pad_b, const layout *L, int dt) {
    unsigned char *mask = element_mask(L);
    const unsigned char *pa = a, *pb = b;
    size_t es = dtype_size(dt);
    int ok = 1;
    for (int64_t i = 0; i < extent(L) && ok; i++) {
        if (mask[i]) {
            if (memcmp(pa + i * es, pb + i * es, es) != 0)
                ok = record(0, check, "element %lld differs (%.17g vs %.17g)", (long long)i, get(a, dt, i),
                            get(b, dt, i));
        } else {
            for (size_t k = 0; k < es && ok; k++)
                if (pa[i * es + k] != pad_a || pb[i * es + k] != pad_b)
                    ok = record(0, check, "padding element %lld was written", (long long)i);
        }
    }
    free(mask);
    return ok ? record(1, check, NULL) : 0;
}

void check_arithmetic(const char *check, const void *got, const void *src, const tcase *tc,
                      const vitpe_plan *plan, int backward) {
    const int dt = tc->dtype;
    const size_t es = dtype_size(dt);
    const layout Ls = src_layout(tc, backward), Ld = dst_layout(tc, backward);
    const vitpe_taps *th = backward ? &plan->adj_h : &plan->fwd_h, *tw = backward ? &plan->adj_w : &plan->fwd_w;
    unsigned char want[8];
    for (int64_t b = 0; b < tc->B; b++)
        for (int64_t oy = 0; oy < th->n_out; oy++)
            for (int64_t ox = 0; ox < tw->n_out; ox++)
                for (int64_t c = 0; c < tc->C; c++) {
                    const int64_t i = at(&Ld, b, tc->P + oy * tw->n_out + ox, c);
                    const double v = reference_sum(src, &Ls, dt, b, tc->P, th, oy, tw, ox, c);
                    set(want, dt, 0, v);
                    const double g = get(got, dt, i);
                    if (isnan(g) && isnan(v)) continue; /* NaN payloads are not compared */
                    if (memcmp((const char *)got + (size_t)i * es, want, es) != 0) {
                        record(0, check, "token (%lld, %lld) of batch %lld, channel %lld: %.17g, the "
                               "fast pass's own arithmetic gives %.17g", (long long)oy, (long long)ox,
                               (long long)b, (long long)c, g, get(want, dt, 0));
                        return;
                    }
                }
    record(1, check, NULL);
}
