/* test_vitpe.c — checks vitpe's C kernels against their own references, no torch.
 *
 *   inp (B, P + Hin*Win, C) --plan + H/W passes--> out (B, P + Hout*Wout, C)
 *
 * What is held to what (each check is one "passed"/"failed" item):
 *   plan       tap tables: windows in range and monotone, unused slots zero,
 *              adjoint tables exactly the transpose of the forward tables;
 *              lanczos3's antialias flag and area's scale_factor change
 *              nothing; a plan without adjoint runs the same forward (fwd-only)
 *   fwd        vitpe_forward_cpu (one row range) vs vitpe_forward_naive, to a
 *              tolerance derived from the magnitude of the terms summed
 *   fwd-split  several row ranges, each with its own scratch, in scrambled
 *              order: bitwise equal to one range; every element written,
 *              padding between tokens/batches never touched
 *   fwd-part   one sub-range writes exactly its rows (and the prefix tokens
 *              of batches whose row 0 it holds), nothing else
 *   prefix     prefix tokens (with NaN payloads, -0, inf, subnormals) are
 *              copied bit for bit
 *   bwd*       the same for vitpe_backward_cpu (gather over the adjoint
 *              tables) vs vitpe_backward_naive (scatter)
 *   adjoint    <A x, y> == <x, A^T y> over the fast passes, float64 data
 *   identity   in == out (no scale_factor): bit-exact, every mode and dtype,
 *              half types over every finite bit pattern
 *   constant   a per-channel constant field stays constant (exactly, for
 *              half types, where the rounding to storage absorbs it)
 *   rounding   float -> float16/bfloat16 stores round to nearest even, at
 *              every tie between adjacent values (bilinear midpoints)
 *   nan-chan*  NaN grid inputs stay in their channels, bit for bit as the
 *              arithmetic gives them, through the vector paths
 *   errors     invalid axes, sizes over the limit, bad io, bad row ranges,
 *              backward without adjoint tables, status/mode strings, and
 *              (last, as UBSan aborts on it) a batch whose row count
 *              overflows int64
 *
 * The tap formulas themselves (ATen's) are checked against F.interpolate by
 * the Python tests; here naive and fast share them, and what is held is the
 * engine, the tables, the conversions and the API contract.
 *
 * Input padding is filled with NaN bytes so that a read of padding shows up
 * in the results; output padding is filled with a sentinel byte and must
 * come back unchanged. Buffers are allocated to their exact extent so that
 * AddressSanitizer catches any access past the last element.
 *
 * Build and run: make -C tests/c test  (exit status 1 on any failure).
 */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vitpe.h"

/* ------------------------------------------------------------------------
 * Reporting */

static int n_passed, n_failed;
static double worst_ratio[4]; /* per dtype: the largest |fast - naive| / tolerance seen */
static int64_t n_compared[4], n_differ[4]; /* per dtype: grid elements compared, not bitwise equal */
static char case_name[512]; /* the case being checked, printed with every failure */

/* Records one check; prints the failure with the case description. */
static int record(int ok, const char *check, const char *fmt, ...) {
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

static void *xmalloc(size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        printf("FAIL: test harness out of memory (%zu bytes)\n", bytes);
        exit(1);
    }
    return p;
}

/* ------------------------------------------------------------------------
 * Deterministic randomness (splitmix64) */

static uint64_t rng_state = 0x5eed5eed12345678ull;
static uint64_t rng_next(void) {
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static double rng_uniform(void) { return (double)(rng_next() >> 11) * 0x1.0p-53; } /* [0, 1) */
static int64_t rng_int(int64_t lo, int64_t hi) { /* [lo, hi] */
    return lo + (int64_t)(rng_next() % (uint64_t)(hi - lo + 1));
}

/* ------------------------------------------------------------------------
 * float16 / bfloat16, written independently of the kernel's converters but
 * with c10's semantics: round to nearest even, overflow to inf; the half
 * subnormals are kept. (NaN results are never compared bitwise.) */

static uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

static float h2f(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0) { /* zero or subnormal: m * 2^-24, exact in float */
        float v = ldexpf((float)m, -24);
        return sign ? -v : v;
    }
    if (e == 31) return u2f(sign | 0x7f800000u | (m << 13));
    return u2f(sign | ((e + 112u) << 23) | (m << 13));
}

static uint16_t f2h(float f) {
    uint32_t u = f2u(f), sign = (u >> 16) & 0x8000u;
    u &= 0x7fffffffu;
    if (u > 0x7f800000u) return (uint16_t)(sign | 0x7e00u); /* NaN */
    if (u >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* >= 65520 rounds to inf */
    if (u < 0x38800000u) {                                   /* below 2^-14: subnormal */
        if (u < 0x33000000u) return (uint16_t)sign;          /* below 2^-25: zero */
        uint32_t e = u >> 23, m = (u & 0x7fffffu) | 0x800000u, shift = 126 - e;
        uint32_t q = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1u))) q++;
        return (uint16_t)(sign | q);
    }
    uint32_t r = u - 0x38000000u; /* rebias 127 -> 15 */
    uint32_t q = r >> 13, rem = r & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (q & 1u))) q++; /* a carry bumps the exponent */
    return (uint16_t)(sign | q);
}

static float b2f(uint16_t b) { return u2f((uint32_t)b << 16); }
static uint16_t f2b(float f) {
    uint32_t u = f2u(f);
    if (isnan(f)) return 0x7fc0u;
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static const char *dtype_name(int dt) {
    static const char *names[] = {"float32", "float64", "float16", "bfloat16"};
    return dt >= 0 && dt < 4 ? names[dt] : "?";
}
static size_t dtype_size(int dt) { return dt == VITPE_F64 ? 8 : dt == VITPE_F32 ? 4 : 2; }

static double get(const void *p, int dt, int64_t i) {
    switch (dt) {
    case VITPE_F32: return ((const float *)p)[i];
    case VITPE_F64: return ((const double *)p)[i];
    case VITPE_F16: return h2f(((const uint16_t *)p)[i]);
    default: return b2f(((const uint16_t *)p)[i]);
    }
}
static void set(void *p, int dt, int64_t i, double v) {
    switch (dt) {
    case VITPE_F32: ((float *)p)[i] = (float)v; break;
    case VITPE_F64: ((double *)p)[i] = v; break;
    case VITPE_F16: ((uint16_t *)p)[i] = f2h((float)v); break;
    default: ((uint16_t *)p)[i] = f2b((float)v); break;
    }
}

/* The spacing of the storage format at |v| (one unit in the last place). */
static double ulp(int dt, double v) {
    int e;
    v = fabs(v);
    if (v == 0.0 || !isfinite(v)) v = 0x1.0p-1000;
    frexp(v, &e); /* v = f * 2^e, f in [0.5, 1) */
    switch (dt) {
    case VITPE_F16: return ldexp(1.0, (e - 1 < -14 ? -14 : e - 1) - 10);
    case VITPE_BF16: return ldexp(1.0, (e - 1 < -126 ? -126 : e - 1) - 7);
    case VITPE_F32: return ldexp(1.0, (e - 1 < -126 ? -126 : e - 1) - 23);
    default: return ldexp(1.0, (e - 1 < -1022 ? -1022 : e - 1) - 52);
    }
}

/* ------------------------------------------------------------------------
 * Table layouts: (batch, tokens, C) with element strides, channel stride 1. */

typedef struct layout {
    int64_t batch, tokens, C, bstride, tstride;
} layout;

static int64_t at(const layout *L, int64_t b, int64_t t, int64_t c) {
    return b * L->bstride + t * L->tstride + c;
}
/* Elements from the first to one past the last: the exact allocation. */
static int64_t extent(const layout *L) {
    if (L->batch == 0 || L->tokens == 0 || L->C == 0) return 0;
    return at(L, L->batch - 1, L->tokens - 1, L->C - 1) + 1;
}
/* mask[i] = 1 where element i of the buffer belongs to the table */
static unsigned char *element_mask(const layout *L) {
    int64_t n = extent(L);
    unsigned char *mask = xmalloc((size_t)n);
    memset(mask, 0, (size_t)n);
    for (int64_t b = 0; b < L->batch; b++)
        for (int64_t t = 0; t < L->tokens; t++) memset(mask + at(L, b, t, 0), 1, (size_t)L->C);
    return mask;
}
static void *alloc_filled(const layout *L, int dt, unsigned char byte) {
    size_t bytes = (size_t)extent(L) * dtype_size(dt);
    void *p = xmalloc(bytes);
    memset(p, byte, bytes);
    return p;
}

/* Bit patterns a prefix token must survive: NaN payloads (quiet and
 * signaling), -0, inf, the smallest subnormal. */
static void set_special(void *p, int dt, int64_t i, int which) {
    static const uint16_t h[] = {0x7e01, 0x7c01, 0x8000, 0xfc00, 0x0001};
    static const uint16_t bf[] = {0x7fc1, 0x7f81, 0x8000, 0xff80, 0x0001};
    static const uint32_t f[] = {0x7fc00001u, 0x7f800001u, 0x80000000u, 0xff800000u, 0x00000001u};
    static const uint64_t d[] = {0x7ff8000000000001ull, 0x7ff0000000000001ull, 0x8000000000000000ull,
                                 0xfff0000000000000ull, 0x0000000000000001ull};
    which %= 5;
    switch (dt) {
    case VITPE_F32: memcpy((float *)p + i, &f[which], 4); break;
    case VITPE_F64: memcpy((double *)p + i, &d[which], 8); break;
    case VITPE_F16: ((uint16_t *)p)[i] = h[which]; break;
    default: ((uint16_t *)p)[i] = bf[which]; break;
    }
}

/* Random finite data in [-amp, amp) (never -0); with `specials`, some
 * prefix elements get the bit patterns above. Padding stays as allocated. */
static void fill_random(void *p, const layout *L, int64_t P, int dt, double amp, int specials) {
    for (int64_t b = 0; b < L->batch; b++)
        for (int64_t t = 0; t < L->tokens; t++)
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

typedef struct tcase {
    vitpe_axis h, w;
    int dtype;
    int64_t B, P, C;
    int64_t in_pad, out_pad; /* elements between tokens */
    int in_bcast;            /* input (forward) / dout (backward) batch stride 0 */
} tcase;

static vitpe_axis make_axis(int64_t in, int64_t out, int mode, int ac, int aa, int dtype, int with_sf) {
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
        while (floor((double)in * sf) < (double)out) sf = nextafter(sf, INFINITY);
        while (floor((double)in * sf) > (double)out) sf = nextafter(sf, 0.0);
        ax.scale_factor = sf;
    }
    return ax;
}

static void describe(const tcase *tc, const char *suite) {
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
static layout src_layout(const tcase *tc, int backward) {
    const vitpe_axis *h = &tc->h, *w = &tc->w;
    layout L;
    L.batch = tc->B;
    L.C = tc->C;
    L.tokens = tc->P + (backward ? h->out_size * w->out_size : h->in_size * w->in_size);
    L.tstride = tc->C + tc->in_pad;
    L.bstride = tc->in_bcast ? 0 : L.tokens * L.tstride + 3;
    return L;
}
static layout dst_layout(const tcase *tc, int backward) {
    const vitpe_axis *h = &tc->h, *w = &tc->w;
    layout L;
    L.batch = tc->B;
    L.C = tc->C;
    L.tokens = tc->P + (backward ? h->in_size * w->in_size : h->out_size * w->out_size);
    L.tstride = tc->C + tc->out_pad;
    L.bstride = L.tokens * L.tstride + 2 * tc->out_pad;
    return L;
}
static vitpe_io make_io(const tcase *tc, const layout *src, const layout *dst) {
    vitpe_io io;
    memset(&io, 0, sizeof io);
    io.dtype = tc->dtype;
    io.batch = tc->B;
    io.prefix = tc->P;
    io.channels = tc->C;
    io.in_batch_stride = src->bstride;
    io.in_token_stride = src->tstride;
    io.out_batch_stride = dst->bstride;
    io.out_token_stride = dst->tstride;
    return io;
}

/* Runs the fast pass over rows [r0, r1) with a fresh scratch of exactly the
 * advertised size. */
static int run_rows(int backward, void *dst, const void *src, const vitpe_plan *plan,
                    const vitpe_io *io, int64_t r0, int64_t r1) {
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
 * The plan's tables */

static int check_taps(const vitpe_taps *t, const char *which) {
    for (int64_t o = 0; o < t->n_out; o++) {
        int64_t s = t->start[o], n = t->count[o];
        if (n < 0 || n > t->width || s < 0 || s + n > t->n_in)
            return record(0, "plan", "%s row %lld: start %lld count %lld width %lld n_in %lld", which,
                          (long long)o, (long long)s, (long long)n, (long long)t->width, (long long)t->n_in);
        if (o > 0 && (s < t->start[o - 1] || s + n < t->start[o - 1] + t->count[o - 1]))
            return record(0, "plan", "%s row %lld: window not monotone", which, (long long)o);
        for (int64_t k = n; k < t->width; k++)
            if (t->weight[o * t->width + k] != 0.0)
                return record(0, "plan", "%s row %lld: unused slot %lld is nonzero", which, (long long)o,
                              (long long)k);
    }
    return 1;
}

/* dense[o * n_in + i] = weight of input i in output o */
static double *densify(const vitpe_taps *t) {
    double *m = xmalloc((size_t)(t->n_out * t->n_in) * sizeof(double));
    memset(m, 0, (size_t)(t->n_out * t->n_in) * sizeof(double));
    for (int64_t o = 0; o < t->n_out; o++)
        for (int64_t k = 0; k < t->count[o]; k++) m[o * t->n_in + t->start[o] + k] = t->weight[o * t->width + k];
    return m;
}

static int check_transpose(const vitpe_taps *fwd, const vitpe_taps *adj, const char *which) {
    if (adj->n_out != fwd->n_in || adj->n_in != fwd->n_out)
        return record(0, "plan", "%s adjoint is %lldx%lld, forward %lldx%lld", which, (long long)adj->n_out,
                      (long long)adj->n_in, (long long)fwd->n_out, (long long)fwd->n_in);
    double *F = densify(fwd), *A = densify(adj);
    int ok = 1;
    for (int64_t o = 0; o < fwd->n_out && ok; o++)
        for (int64_t i = 0; i < fwd->n_in && ok; i++)
            if (F[o * fwd->n_in + i] != A[i * fwd->n_out + o]) {
                ok = record(0, "plan", "%s: forward[%lld][%lld] = %.17g but adjoint[%lld][%lld] = %.17g", which,
                            (long long)o, (long long)i, F[o * fwd->n_in + i], (long long)i, (long long)o,
                            A[i * fwd->n_out + o]);
            }
    free(F);
    free(A);
    return ok;
}

static void check_plan(const vitpe_plan *plan, const vitpe_axis *h, const vitpe_axis *w) {
    vitpe_plan_layout L;
    int ok = vitpe_plan_measure(&L, h, w, 1) == VITPE_OK && memcmp(&L, &plan->layout, sizeof L) == 0;
    ok = record(ok, "plan", "layout differs from vitpe_plan_measure") && ok;
    ok = check_taps(&plan->fwd_h, "H forward") && ok;
    ok = check_taps(&plan->fwd_w, "W forward") && ok;
    ok = check_taps(&plan->adj_h, "H adjoint") && ok;
    ok = check_taps(&plan->adj_w, "W adjoint") && ok;
    ok = check_transpose(&plan->fwd_h, &plan->adj_h, "H") && ok;
    ok = check_transpose(&plan->fwd_w, &plan->adj_w, "W") && ok;
    /* every output reads at least one input: no silent zeros in the forward */
    for (int64_t o = 0; o < plan->fwd_h.n_out && ok; o++) ok = plan->fwd_h.count[o] >= 1;
    for (int64_t o = 0; o < plan->fwd_w.n_out && ok; o++) ok = plan->fwd_w.count[o] >= 1;
    record(ok, "plan", "an output reads no input");
}

/* Flags that must not change the tables: lanczos3 is antialiased either
 * way; area (adaptive average pooling) ignores scale_factor. */
static void check_equivalent_plans(const vitpe_plan *plan, const tcase *tc) {
    vitpe_axis h = tc->h, w = tc->w;
    const char *what;
    if (h.mode == VITPE_MODE_LANCZOS3) {
        h.antialias = w.antialias = !h.antialias;
        what = "lanczos3 with the antialias flag flipped";
    } else if (h.mode == VITPE_MODE_AREA && (h.scale_factor > 0 || w.scale_factor > 0)) {
        h.scale_factor = w.scale_factor = 0.0;
        what = "area without scale_factor";
    } else
        return;
    vitpe_plan *other = NULL;
    int st = vitpe_plan_create(&other, &h, &w, 1);
    int same = st == VITPE_OK && memcmp(&other->layout, &plan->layout, sizeof plan->layout) == 0 &&
               memcmp(other->buffer, plan->buffer, plan->layout.bytes) == 0;
    record(same, "plan", "%s builds different tables (status %d)", what, st);
    vitpe_plan_destroy(other);
}

/* ------------------------------------------------------------------------
 * Comparisons */

/* mag[b, t, c] = sum |wy * wx * src| over the terms summed into dst[b, t, c]
 * (forward: a gather over the forward tables; backward: their scatter). */
static double *magnitudes(const tcase *tc, const vitpe_plan *plan, int backward, const void *src,
                          const layout *Ls, const layout *Ld) {
    const vitpe_taps *th = &plan->fwd_h, *tw = &plan->fwd_w;
    const int64_t C = tc->C, P = tc->P, Win = tc->w.in_size, Wout = tc->w.out_size;
    size_t n = (size_t)(Ld->batch * Ld->tokens * C);
    double *mag = xmalloc(n * sizeof(double));
    memset(mag, 0, n * sizeof(double));
    for (int64_t b = 0; b < tc->B; b++) {
        double *mb = mag + b * Ld->tokens * C;
        for (int64_t p = 0; p < P; p++)
            for (int64_t c = 0; c < C; c++) mb[p * C + c] = fabs(get(src, tc->dtype, at(Ls, b, p, c)));
        for (int64_t oy = 0; oy < th->n_out; oy++)
            for (int64_t ox = 0; ox < tw->n_out; ox++)
                for (int64_t ky = 0; ky < th->count[oy]; ky++)
                    for (int64_t kx = 0; kx < tw->count[ox]; kx++) {
                        double wgt = fabs(th->weight[oy * th->width + ky] * tw->weight[ox * tw->width + kx]);
                        int64_t ti = P + (th->start[oy] + ky) * Win + tw->start[ox] + kx, to = P + oy * Wout + ox;
                        int64_t ts = backward ? to : ti, td = backward ? ti : to;
                        for (int64_t c = 0; c < C; c++)
                            mb[td * C + c] += wgt * fabs(get(src, tc->dtype, at(Ls, b, ts, c)));
                    }
    }
    return mag;
}

/* Fast vs naive on the grid tokens. The fast pass sums n_fast terms in the
 * accumulator type along H then W; the naive one up to n_ref terms in
 * double; both round once to storage. Half types may differ by one unit of
 * storage where the two sums straddle a rounding boundary. */
static int compare_grid(const char *check, const void *got, const void *ref, const double *mag,
                        const layout *L, int64_t P, int dt, int64_t n_fast, int64_t n_ref) {
    const double u_acc = dt == VITPE_F64 ? 0x1.0p-53 : 0x1.0p-24;
    int shown = 0;
    for (int64_t b = 0; b < L->batch; b++)
        for (int64_t t = P; t < L->tokens; t++)
            for (int64_t c = 0; c < L->C; c++) {
                int64_t i = at(L, b, t, c);
                double g = get(got, dt, i), r = get(ref, dt, i), m = mag[(b * L->tokens + t) * L->C + c];
                double tol = 2.0 * (double)(n_fast + 3) * u_acc * m + 2.0 * (double)(n_ref + 3) * 0x1.0p-53 * m;
                if (dt == VITPE_F16 || dt == VITPE_BF16)
                    tol += ulp(dt, fmax(fabs(g), fabs(r)));
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
static int check_prefix(const char *check, const void *got, const layout *Ld, const void *src,
                        const layout *Ls, int64_t P, int dt, int bitwise) {
    size_t es = dtype_size(dt);
    for (int64_t b = 0; b < Ld->batch; b++)
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
static int compare_bits(const char *check, const void *a, unsigned char pad_a, const void *b,
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

/* ------------------------------------------------------------------------
 * One direction (forward or backward) of one case */

/* The fast pass's arithmetic written plainly, one output element at a time:
 * per tap of its W window, the H sum over the input column (accumulator
 * type, taps in order, the first a product), then the W sum over those,
 * rounded once to storage. Register blocks, channel tails, output pairs,
 * rows read in place and gathered rows must all give exactly these bits
 * (the GPU kernels are held to the CPU op bit for bit). */
static double reference_sum(const void *src, const layout *Ls, int dt, int64_t b, int64_t P,
                            int64_t win, const vitpe_taps *th, int64_t oy, const vitpe_taps *tw,
                            int64_t ox, int64_t c) {
    const int64_t sy = th->start[oy], ny = th->count[oy], sx = tw->start[ox], nx = tw->count[ox];
    const double *wy = th->weight + oy * th->width, *wx = tw->weight + ox * tw->width;
    if (dt == VITPE_F64) {
        double acc = 0.0;
        for (int64_t kx = 0; kx < nx; kx++) {
            double h = 0.0;
            for (int64_t ky = 0; ky < ny; ky++) {
                double x = get(src, dt, at(Ls, b, P + (sy + ky) * win + sx + kx, c));
                h = ky == 0 ? wy[0] * x : h + wy[ky] * x;
            }
            acc = kx == 0 ? wx[0] * h : acc + wx[kx] * h;
        }
        return acc;
    }
    float acc = 0.0f;
    for (int64_t kx = 0; kx < nx; kx++) {
        float h = 0.0f;
        for (int64_t ky = 0; ky < ny; ky++) {
            float x = (float)get(src, dt, at(Ls, b, P + (sy + ky) * win + sx + kx, c));
            h = ky == 0 ? (float)wy[0] * x : h + (float)wy[ky] * x;
        }
        acc = kx == 0 ? (float)wx[0] * h : acc + (float)wx[kx] * h;
    }
    return acc;
}

static void check_arithmetic(const char *check, const void *got, const void *src, const tcase *tc,
                             const vitpe_plan *plan, int backward) {
    const int dt = tc->dtype;
    const size_t es = dtype_size(dt);
    const layout Ls = src_layout(tc, backward), Ld = dst_layout(tc, backward);
    const vitpe_taps *th = backward ? &plan->adj_h : &plan->fwd_h, *tw = backward ? &plan->adj_w : &plan->fwd_w;
    const int64_t win = tw->n_in;
    unsigned char want[8];
    for (int64_t b = 0; b < tc->B; b++)
        for (int64_t oy = 0; oy < th->n_out; oy++)
            for (int64_t ox = 0; ox < tw->n_out; ox++)
                for (int64_t c = 0; c < tc->C; c++) {
                    const int64_t i = at(&Ld, b, tc->P + oy * tw->n_out + ox, c);
                    const double v = reference_sum(src, &Ls, dt, b, tc->P, win, th, oy, tw, ox, c);
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
            for (int64_t t = 0; t < Ld.tokens && ok; t++) {
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
            double *mag = magnitudes(tc, plan, backward, src, &Ls, &Ld);
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
            for (int64_t t = tc->P; t < Lax.tokens; t++) {
                double v = get(Ax, VITPE_F64, at(&Lax, b, t, c)) * get(y, VITPE_F64, at(&Ly, b, t, c));
                lhs += v;
                scale += fabs(v);
            }
            for (int64_t t = tc->P; t < Lx.tokens; t++) {
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

static int mode_allows_align(int mode) { return mode == VITPE_MODE_BILINEAR || mode == VITPE_MODE_BICUBIC; }
static int mode_allows_aa(int mode) { return mode_allows_align(mode) || mode == VITPE_MODE_LANCZOS3; }

static void sweep(void) {
    /* C: below, at and above the channel blocks (16 wide, 64 floats / 32
       doubles per 256-byte block), with a scalar tail */
    static const int64_t Bs[] = {1, 3}, Ps[] = {0, 1, 5}, Cs[] = {1, 7, 16, 33, 64, 71, 137};
    int64_t k = 0;
    for (int mode = 0; mode <= VITPE_MODE_LANCZOS3; mode++)
        for (int ac = 0; ac <= mode_allows_align(mode); ac++)
            for (int aa = 0; aa <= mode_allows_aa(mode); aa++)
                for (int sf = 0; sf <= 1; sf++)
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

static void fast_paths(void) {
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
            for (int64_t t = 0; t < Lx.tokens; t++)
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
            for (int64_t t = 0; t < Lx.tokens && ok; t++)
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

static void identity_sweep(void) {
    static const int64_t sizes[][2] = {{1, 1}, {1, 7}, {6, 1}, {7, 5}, {24, 24}, {3, 16}};
    for (int mode = 0; mode <= VITPE_MODE_LANCZOS3; mode++)
        for (int ac = 0; ac <= mode_allows_align(mode); ac++)
            for (int aa = 0; aa <= mode_allows_aa(mode); aa++)
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

static void constant_sweep(void) {
    static const int64_t sizes[][4] = {{1, 1, 1, 9}, {3, 40, 40, 3}, {14, 24, 24, 14}, {9, 4, 2, 3}, {5, 5, 6, 6}};
    for (int mode = 0; mode <= VITPE_MODE_LANCZOS3; mode++)
        for (int ac = 0; ac <= mode_allows_align(mode); ac++)
            for (int aa = 0; aa <= mode_allows_aa(mode); aa++)
                for (int sf = 0; sf <= 1; sf++)
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
                                for (int64_t t = 0; t < Lx.tokens; t++)
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
                                    for (int64_t t = tc.P; t < Ld.tokens && ok; t++)
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

static void rounding_check(int dt) {
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
 * generic sums, forward and backward. (The bfloat16 vector store once put
 * an odd channel's NaN into the even channel next to it and wrote 0 in its
 * place: NaN never reached the grid in the other checks.) */

static void nan_channels(void) {
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
                const int64_t grid = Ls.tokens - tc.P, nan_at[][2] = {{0, 1}, {grid / 2, 6}, {grid - 1, 67}, {0, 126}};
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

/* ------------------------------------------------------------------------
 * Errors */

static void errors(void) {
    const int64_t LIM = (int64_t)1 << 24;
    vitpe_axis good = make_axis(4, 6, VITPE_MODE_BILINEAR, 0, 0, VITPE_F32, 0);
    struct {
        const char *what;
        int64_t in, out;
        int mode, ac, aa;
        double sf;
        int want;
    } axes[] = {
        {"in_size 0", 0, 4, VITPE_MODE_BILINEAR, 0, 0, 0, VITPE_EINVAL},
        {"out_size 0", 4, 0, VITPE_MODE_BICUBIC, 0, 0, 0, VITPE_EINVAL},
        {"in_size -3", -3, 4, VITPE_MODE_AREA, 0, 0, 0, VITPE_EINVAL},
        {"mode -1", 4, 4, -1, 0, 0, 0, VITPE_EINVAL},
        {"mode 6", 4, 4, 6, 0, 0, 0, VITPE_EINVAL},
        {"align_corners with nearest", 4, 8, VITPE_MODE_NEAREST, 1, 0, 0, VITPE_EINVAL},
        {"align_corners with nearest-exact", 4, 8, VITPE_MODE_NEAREST_EXACT, 1, 0, 0, VITPE_EINVAL},
        {"align_corners with area", 4, 8, VITPE_MODE_AREA, 1, 0, 0, VITPE_EINVAL},
        {"align_corners with lanczos3", 4, 8, VITPE_MODE_LANCZOS3, 1, 0, 0, VITPE_EINVAL},
        {"antialias with nearest", 4, 8, VITPE_MODE_NEAREST, 0, 1, 0, VITPE_EINVAL},
        {"antialias with nearest-exact", 4, 8, VITPE_MODE_NEAREST_EXACT, 0, 1, 0, VITPE_EINVAL},
        {"antialias with area", 4, 8, VITPE_MODE_AREA, 0, 1, 0, VITPE_EINVAL},
        {"scale_factor NaN", 4, 8, VITPE_MODE_BILINEAR, 0, 0, NAN, VITPE_EINVAL},
        {"scale_factor -2", 4, 8, VITPE_MODE_BILINEAR, 0, 0, -2.0, VITPE_EINVAL},
        {"scale_factor inf", 4, 8, VITPE_MODE_BILINEAR, 0, 0, INFINITY, VITPE_EINVAL},
        /* a scale_factor must give the sizes, floor(in * sf) == out, as in F.interpolate:
           one that does not once passed, and its taps left int64 (UB) or the input */
        {"scale_factor 1e-30 (floor(4 * sf) = 0, not 8)", 4, 8, VITPE_MODE_NEAREST, 0, 0, 1e-30, VITPE_EINVAL},
        {"scale_factor 1e-300 with lanczos3", 4, 8, VITPE_MODE_LANCZOS3, 0, 0, 1e-300, VITPE_EINVAL},
        {"scale_factor 0.1 with antialias (floor(4 * sf) = 0, not 3)", 4, 3, VITPE_MODE_BICUBIC, 0, 1, 0.1, VITPE_EINVAL},
        {"scale_factor 3 on 4 -> 8 (floor(4 * sf) = 12)", 4, 8, VITPE_MODE_BILINEAR, 0, 0, 3.0, VITPE_EINVAL},
        {"in_size over the limit", LIM + 1, 8, VITPE_MODE_BILINEAR, 0, 0, 0, VITPE_EOVERFLOW},
        {"out_size over the limit", 8, LIM + 1, VITPE_MODE_NEAREST, 0, 0, 0, VITPE_EOVERFLOW},
        {"out_size INT64_MAX", 8, INT64_MAX, VITPE_MODE_AREA, 0, 0, 0, VITPE_EOVERFLOW},
        /* legal: the plan builds */
        {"align_corners with bilinear", 4, 8, VITPE_MODE_BILINEAR, 1, 0, 0, VITPE_OK},
        {"align_corners+antialias with bicubic", 8, 3, VITPE_MODE_BICUBIC, 1, 1, 0, VITPE_OK},
        {"antialias with lanczos3", 8, 3, VITPE_MODE_LANCZOS3, 0, 1, 0, VITPE_OK},
        {"scale_factor 2 with nearest", 4, 8, VITPE_MODE_NEAREST, 0, 0, 2.0, VITPE_OK},
        {"scale_factor 2.2 on 4 -> 8 (floor(8.8) = 8)", 4, 8, VITPE_MODE_BICUBIC, 0, 1, 2.2, VITPE_OK},
    };
    for (size_t i = 0; i < sizeof axes / sizeof axes[0]; i++) {
        vitpe_axis ax;
        memset(&ax, 0, sizeof ax);
        ax.in_size = axes[i].in;
        ax.out_size = axes[i].out;
        ax.mode = axes[i].mode;
        ax.align_corners = axes[i].ac;
        ax.antialias = axes[i].aa;
        ax.scale_factor = axes[i].sf;
        snprintf(case_name, sizeof case_name, "errors: %s", axes[i].what);
        int want = axes[i].want, st;
        vitpe_plan *plan = (vitpe_plan *)&good; /* must be reset to NULL on failure */
        vitpe_plan_layout L;
        st = vitpe_axis_check(&ax);
        record(st == want, "errors", "vitpe_axis_check returned %d, want %d", st, want);
        st = vitpe_plan_measure(&L, &ax, &good, 1);
        record(st == want, "errors", "vitpe_plan_measure (H) returned %d, want %d", st, want);
        st = vitpe_plan_create(&plan, &good, &ax, 1);
        record(st == want && (st == VITPE_OK) == (plan != NULL), "errors",
               "vitpe_plan_create (W) returned %d (plan %p), want %d", st, (void *)plan, want);
        if (st == VITPE_OK) vitpe_plan_destroy(plan);
        if (want != VITPE_OK) {
            vitpe_io io = {VITPE_F32, 1, 0, 1, 0, 1, 0, 1};
            float dummy[1] = {0};
            st = vitpe_forward_naive(dummy, dummy, &ax, &good, &io);
            record(st == want, "errors", "vitpe_forward_naive returned %d, want %d", st, want);
            st = vitpe_backward_naive(dummy, dummy, &good, &ax, &io);
            record(st == want, "errors", "vitpe_backward_naive returned %d, want %d", st, want);
        }
    }

    /* the size limit itself is legal (measured only: the tables would be large) */
    {
        vitpe_axis big = make_axis(LIM, LIM, VITPE_MODE_AREA, 0, 0, VITPE_F32, 0);
        vitpe_plan_layout L;
        snprintf(case_name, sizeof case_name, "errors: size at the limit 2^24");
        int st = vitpe_plan_measure(&L, &big, &good, 0);
        record(st == VITPE_OK && L.bytes > 0, "errors", "vitpe_plan_measure returned %d", st);
    }

    snprintf(case_name, sizeof case_name, "errors: NULL arguments of vitpe_plan_create");
    {
        vitpe_plan *plan = NULL;
        record(vitpe_plan_create(NULL, &good, &good, 1) == VITPE_EINVAL, "errors", "NULL plan out");
        record(vitpe_plan_create(&plan, NULL, &good, 1) == VITPE_EINVAL && !plan, "errors", "NULL h axis");
        record(vitpe_plan_create(&plan, &good, NULL, 1) == VITPE_EINVAL && !plan, "errors", "NULL w axis");
        record(vitpe_plan_measure(NULL, &good, &good, 1) == VITPE_EINVAL, "errors", "NULL layout");
        vitpe_plan_destroy(NULL); /* like free(NULL) */
    }

    /* Run arguments: B=2, H 4 -> 6, W 3 -> 5, C=5: forward rows [0, 12), backward [0, 8). */
    {
        tcase tc;
        memset(&tc, 0, sizeof tc);
        tc.dtype = VITPE_F32;
        tc.h = make_axis(4, 6, VITPE_MODE_BICUBIC, 0, 0, VITPE_F32, 0);
        tc.w = make_axis(3, 5, VITPE_MODE_BICUBIC, 0, 0, VITPE_F32, 0);
        tc.B = 2;
        tc.P = 1;
        tc.C = 5;
        describe(&tc, "errors: run arguments");
        layout Lx = src_layout(&tc, 0), Lo = dst_layout(&tc, 0), Lg = src_layout(&tc, 1), Ldi = dst_layout(&tc, 1);
        vitpe_io fio = make_io(&tc, &Lx, &Lo), bio = make_io(&tc, &Lg, &Ldi), io;
        vitpe_plan *plan = NULL, *fwd_only = NULL;
        float *x = alloc_filled(&Lx, VITPE_F32, 0), *out = alloc_filled(&Lo, VITPE_F32, 0xA5);
        float *g = alloc_filled(&Lg, VITPE_F32, 0), *dinp = alloc_filled(&Ldi, VITPE_F32, 0xA5);
        size_t fbytes = 0, bbytes = 0;
        fill_random(x, &Lx, tc.P, VITPE_F32, 1.0, 0);
        fill_random(g, &Lg, tc.P, VITPE_F32, 1.0, 0);
        if (vitpe_plan_create(&plan, &tc.h, &tc.w, 1) || vitpe_plan_create(&fwd_only, &tc.h, &tc.w, 0) ||
            vitpe_scratch_bytes(&fbytes, plan, &fio, 0) || vitpe_scratch_bytes(&bbytes, plan, &bio, 1)) {
            record(0, "errors", "setting up the plans failed");
        } else {
            void *scratch = xmalloc(fbytes > bbytes ? fbytes : bbytes);
            struct {
                const char *what;
                int backward;
                int64_t r0, r1;
                int want;
            } ranges[] = {
                {"forward rows [-1, 2)", 0, -1, 2, VITPE_EINVAL},
                {"forward rows [3, 2)", 0, 3, 2, VITPE_EINVAL},
                {"forward rows [0, 13) past B*Hout=12", 0, 0, 13, VITPE_EINVAL},
                {"forward rows [12, 12) (empty)", 0, 12, 12, VITPE_OK},
                {"backward rows [0, 9) past B*Hin=8", 1, 0, 9, VITPE_EINVAL},
                {"backward rows [0, 12) (forward's row count)", 1, 0, 12, VITPE_EINVAL},
                {"backward rows [-2, 1)", 1, -2, 1, VITPE_EINVAL},
                {"backward rows [5, 4)", 1, 5, 4, VITPE_EINVAL},
                {"backward rows [8, 8) (empty)", 1, 8, 8, VITPE_OK},
            };
            for (size_t i = 0; i < sizeof ranges / sizeof ranges[0]; i++) {
                int b = ranges[i].backward;
                int st = b ? vitpe_backward_cpu(dinp, g, plan, &bio, ranges[i].r0, ranges[i].r1, scratch)
                           : vitpe_forward_cpu(out, x, plan, &fio, ranges[i].r0, ranges[i].r1, scratch);
                record(st == ranges[i].want, "errors", "%s: returned %d, want %d", ranges[i].what, st, ranges[i].want);
            }
            /* nothing above may have written: every byte still holds the fill */
            {
                int untouched = 1;
                for (int64_t i = 0; i < extent(&Lo) * 4; i++) untouched &= ((unsigned char *)out)[i] == 0xA5;
                for (int64_t i = 0; i < extent(&Ldi) * 4; i++) untouched &= ((unsigned char *)dinp)[i] == 0xA5;
                record(untouched, "errors", "a rejected or empty call wrote to its output");
            }

            int st = vitpe_backward_cpu(dinp, g, fwd_only, &bio, 0, 8, scratch);
            record(st == VITPE_EINVAL, "errors", "backward with a plan built without adjoint returned %d", st);
            st = vitpe_forward_cpu(out, x, fwd_only, &fio, 0, 12, scratch);
            record(st == VITPE_OK, "errors", "forward with a plan built without adjoint returned %d", st);
            st = vitpe_forward_cpu(out, x, NULL, &fio, 0, 12, scratch);
            record(st == VITPE_EINVAL, "errors", "forward with a NULL plan returned %d", st);
            st = vitpe_backward_cpu(dinp, g, NULL, &bio, 0, 8, scratch);
            record(st == VITPE_EINVAL, "errors", "backward with a NULL plan returned %d", st);
            st = vitpe_forward_cpu(NULL, x, plan, &fio, 0, 12, scratch);
            record(st == VITPE_EINVAL, "errors", "forward with a NULL output returned %d", st);
            st = vitpe_forward_cpu(out, NULL, plan, &fio, 0, 12, scratch);
            record(st == VITPE_EINVAL, "errors", "forward with a NULL input returned %d", st);
            st = vitpe_forward_cpu(out, x, plan, &fio, 0, 12, NULL);
            record(st == VITPE_EINVAL, "errors", "forward with a NULL scratch returned %d", st);
            st = vitpe_backward_cpu(dinp, g, plan, &bio, 0, 8, NULL);
            record(st == VITPE_EINVAL, "errors", "backward with a NULL scratch returned %d", st);
            st = vitpe_forward_cpu(out, x, plan, NULL, 0, 12, scratch);
            record(st == VITPE_EINVAL, "errors", "forward with a NULL io returned %d", st);

            io = fio; io.dtype = 4;
            st = vitpe_forward_cpu(out, x, plan, &io, 0, 12, scratch);
            record(st == VITPE_EINVAL, "errors", "dtype 4 returned %d", st);
            io = fio; io.dtype = -1;
            st = vitpe_forward_cpu(out, x, plan, &io, 0, 12, scratch);
            record(st == VITPE_EINVAL, "errors", "dtype -1 returned %d", st);
            io = fio; io.batch = -1;
            st = vitpe_forward_cpu(out, x, plan, &io, 0, 0, scratch);
            record(st == VITPE_EINVAL, "errors", "batch -1 returned %d", st);
            io = fio; io.prefix = -1;
            st = vitpe_forward_cpu(out, x, plan, &io, 0, 12, scratch);
            record(st == VITPE_EINVAL, "errors", "prefix -1 returned %d", st);
            io = fio; io.channels = -1;
            st = vitpe_forward_cpu(out, x, plan, &io, 0, 12, scratch);
            record(st == VITPE_EINVAL, "errors", "channels -1 returned %d", st);
            io = fio; io.channels = 0; /* nothing to do, nothing touched */
            st = vitpe_forward_cpu(NULL, NULL, plan, &io, 0, 12, NULL);
            record(st == VITPE_OK, "errors", "channels 0 returned %d", st);

            size_t bytes = 0;
            st = vitpe_scratch_bytes(NULL, plan, &fio, 0);
            record(st == VITPE_EINVAL, "errors", "vitpe_scratch_bytes(NULL bytes) returned %d", st);
            st = vitpe_scratch_bytes(&bytes, NULL, &fio, 0);
            record(st == VITPE_EINVAL, "errors", "vitpe_scratch_bytes(NULL plan) returned %d", st);
            io = fio; io.channels = INT64_MAX / 2;
            st = vitpe_scratch_bytes(&bytes, plan, &io, 0);
            record(st == VITPE_EOVERFLOW, "errors", "vitpe_scratch_bytes with C=INT64_MAX/2 returned %d", st);
            st = vitpe_scratch_bytes(&bytes, plan, &fio, 0);
            record(st == VITPE_OK && bytes > 0, "errors", "forward scratch: %zu bytes (status %d)", bytes, st);
            st = vitpe_scratch_bytes(&bytes, plan, &bio, 1);
            record(st == VITPE_OK && bytes > 0, "errors", "backward scratch: %zu bytes (status %d)", bytes, st);
            free(scratch);
        }
        vitpe_plan_destroy(plan);
        vitpe_plan_destroy(fwd_only);
        free(x);
        free(out);
        free(g);
        free(dinp);
    }

    /* status and mode strings */
    snprintf(case_name, sizeof case_name, "errors: vitpe_status_str / vitpe_mode_name");
    {
        const char *unknown = vitpe_status_str(6);
        int ok = unknown && *unknown && vitpe_status_str(-1) && !strcmp(vitpe_status_str(-1), unknown) &&
                 vitpe_status_str(1000) && !strcmp(vitpe_status_str(1000), unknown);
        record(ok, "errors", "unknown status codes do not share one message");
        for (int s = VITPE_OK; s <= VITPE_ECUDA; s++) {
            const char *m = vitpe_status_str(s);
            ok = m && *m && strcmp(m, unknown);
            for (int t = VITPE_OK; t < s && ok; t++) ok = strcmp(m, vitpe_status_str(t)) != 0;
            record(ok, "errors", "vitpe_status_str(%d) = \"%s\": empty, unknown or not distinct", s, m ? m : "(null)");
        }
        static const char *names[] = {"nearest", "nearest-exact", "bilinear", "bicubic", "area", "lanczos3"};
        for (int m = 0; m <= VITPE_MODE_LANCZOS3; m++)
            record(!strcmp(vitpe_mode_name(m), names[m]), "errors", "vitpe_mode_name(%d) = \"%s\", want \"%s\"", m,
                   vitpe_mode_name(m), names[m]);
        record(!strcmp(vitpe_mode_name(6), "unknown") && !strcmp(vitpe_mode_name(-1), "unknown"), "errors",
               "vitpe_mode_name of an invalid mode");
    }
}

/* A batch so large that batch * rows overflows int64 must give an error,
 * not undefined behaviour (UBSan aborts the program here if it does: this
 * runs last so that every other check has reported first). */
static void batch_overflow(void) {
    /* H 4 -> 6, W 4 -> 6, C = 1: batch * 6 (forward rows) and batch * 4
       (backward rows) both overflow; the row range [0, 1) itself is fine */
    vitpe_axis h = make_axis(4, 6, VITPE_MODE_BILINEAR, 0, 0, VITPE_F32, 0), w = h;
    vitpe_plan *plan = NULL;
    vitpe_io fio = {VITPE_F32, INT64_MAX / 2, 0, 1, 0, 1, 36, 1}; /* inp broadcast, 16 tokens */
    vitpe_io bio = {VITPE_F32, INT64_MAX / 2, 0, 1, 0, 1, 16, 1}; /* dout broadcast, 36 tokens */
    float inp[16] = {0}, out[36] = {0}, scratch[64];
    snprintf(case_name, sizeof case_name, "errors: batch INT64_MAX/2 (batch * rows overflows int64)");
    printf("c-kernels: %s\n", case_name);
    fflush(stdout);
    if (record(vitpe_plan_create(&plan, &h, &w, 1) == VITPE_OK, "errors", "plan")) {
        int st = vitpe_forward_cpu(out, inp, plan, &fio, 0, 1, scratch);
        record(st == VITPE_EOVERFLOW || st == VITPE_EINVAL, "errors", "forward returned %d", st);
        st = vitpe_backward_cpu(inp, out, plan, &bio, 0, 1, scratch);
        record(st == VITPE_EOVERFLOW || st == VITPE_EINVAL, "errors", "backward returned %d", st);
    }
    vitpe_plan_destroy(plan);
}

int main(int argc, char **argv) {
    if (argc > 1) rng_state = strtoull(argv[1], NULL, 0); /* another seed: ./test_vitpe 42 */
    printf("c-kernels: seed 0x%llx\n", (unsigned long long)rng_state);
    errors();
    rounding_check(VITPE_F16);
    rounding_check(VITPE_BF16);
    identity_sweep();
    constant_sweep();
    sweep();
    fast_paths();
    nan_channels();
    printf("c-kernels: largest |fast - naive| / tolerance: float32 %.3f, float64 %.3f, float16 %.3f, "
           "bfloat16 %.3f\n", worst_ratio[0], worst_ratio[1], worst_ratio[2], worst_ratio[3]);
    printf("c-kernels: fast != naive (bitwise) in %lld/%lld float16 and %lld/%lld bfloat16 elements\n",
           (long long)n_differ[2], (long long)n_compared[2], (long long)n_differ[3], (long long)n_compared[3]);
    printf("c-kernels: %d passed, %d failed before the last check\n", n_passed, n_failed);
    batch_overflow();
    printf("c-kernels: %d passed, %d failed\n", n_passed, n_failed);
    return n_failed ? 1 : 0;
}
