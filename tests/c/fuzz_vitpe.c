/* fuzz_vitpe.c — a fuzz target for vitpe's C library, and two drivers for it.
 *
 * One input (a byte string) decodes into one resize: both axes (sizes from 1
 * to far past the 2^24 limit, every mode and invalid ones, the flags in legal
 * and illegal combinations, opmath, scale_factor from 0 over tiny and huge to
 * NaN/inf and raw bit patterns), with_adjoint, and the tensors' layout (dtype,
 * batch, prefix, channels, padded, broadcast, negative, overlapping and
 * invalid strides), then row splits and bad row ranges. Exhausted input reads
 * as zero bytes: the simplest choices.
 *
 * What is a finding (each printed as "FINDING [case]: ..."):
 *   - a crash or sanitizer report (ASan, UBSan; the drivers build with both);
 *   - vitpe_axis_check disagreeing with the contract written out here
 *     (F.interpolate's: sizes, modes, flags, scale_factor), or
 *     measure/create/naive returning other than the first failing check;
 *   - for axes the check accepts: a plan whose tables are out of range, not
 *     monotone, not finite, read no input, or whose adjoint tables are not
 *     exactly the transpose; VITPE_EINTERNAL from anything;
 *   - a call that fails and still allocated (malloc is wrapped at link time:
 *     the library's own allocations are counted, and made to fail on purpose
 *     to reach every VITPE_ENOMEM path) or wrote to its output;
 *   - forward/backward over any split of the rows, in any order, not bitwise
 *     equal to one call; writing padding or rows outside its range; not
 *     bitwise equal to the arithmetic it promises (the H sums then the W sums
 *     in the accumulator type, as test_vitpe.c holds it); off the naive
 *     reference beyond test_vitpe.c's tolerance; prefix tokens not copied bit
 *     for bit; <A x, y> != <x, A^T y> (float64 data).
 * Sizes huge enough to need gigabytes go through measure and through create
 * with a failing malloc only; tensors are capped so an execution stays fast.
 *
 * Drivers (tests/c/Makefile):
 *   make -C tests/c libfuzzer      clang -fsanitize=fuzzer,address,undefined
 *   make -C tests/c fuzz           cc + ASan/UBSan, a seeded random stream:
 *     fuzz_vitpe [-seconds=N] [-runs=N] [-seed=N] [-first=N] [-dir=PATH] [FILE...]
 *   Given FILEs, either binary replays them. The standalone driver's input n
 *   depends on (seed, n) only (-seed=S -first=n -runs=1 repeats it); it
 *   writes each finding's input to PATH (also on a crash: from the
 *   sanitizers' death callback, or SIGABRT) and prints it in hex, and ends
 *   with "fuzz: N executions in S s (seed S), F findings", after how far
 *   executions got and the slowest one.
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime, getpid under -std=c11 */
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "vitpe.h"

#define LIM ((int64_t)1 << 24)        /* vitpe's largest axis */
#define MAX_ELEMS ((int64_t)1 << 17)  /* per tensor buffer */
#define MAX_WORK ((int64_t)1 << 21)   /* multiply-adds of one naive/reference pass */
#define MAX_PLAN_BYTES ((size_t)4 << 20)
#define MAX_SCRATCH_BYTES ((size_t)4 << 20)
#define MAX_ADJ_SWEEP ((int64_t)1 << 18) /* in + out of an axis whose adjoint is measured */

/* ------------------------------------------------------------------------
 * Findings */

static int g_failed;         /* findings in this execution */
/* how far executions got: plans built, directions run over all rows and
 * compared (to their arithmetic, to naive), adjoint identities checked */
static long long g_reach[5];
static char g_case[512];     /* what this execution decoded, printed with each finding */

static void finding(const char *fmt, ...) {
    if (g_failed++ >= 5) return;
    va_list ap;
    va_start(ap, fmt);
    printf("FINDING [%s]: ", g_case);
    vprintf(fmt, ap);
    printf("\n");
    fflush(stdout);
    va_end(ap);
}
#define CHECK(cond, ...) ((cond) ? 1 : (finding(__VA_ARGS__), 0))

/* ------------------------------------------------------------------------
 * The library's allocations. The Makefile links with -Wl,--wrap=malloc,
 * --wrap=free, so every malloc/free in this program goes through here; while
 * `g_track` is set (around one library call) they are counted, and the
 * g_fail_in-th malloc (1-based) returns NULL. */

#ifdef VITPE_FUZZ_WRAP_MALLOC
void *__real_malloc(size_t n);
void __real_free(void *p);
static int g_track, g_fail_in;
static int64_t g_net; /* mallocs minus frees during the call */
void *__wrap_malloc(size_t n) {
    if (g_track && g_fail_in > 0 && --g_fail_in == 0) return NULL;
    void *p = __real_malloc(n);
    if (g_track && p) g_net++;
    return p;
}
void __wrap_free(void *p) {
    if (g_track && p) g_net--;
    __real_free(p);
}
static void track(int fail_in) { g_track = 1, g_fail_in = fail_in, g_net = 0; }
static int64_t untrack(void) { g_track = 0, g_fail_in = 0; return g_net; }
#define CAN_FAIL_MALLOC 1
#else /* not counted: no allocation checks */
static void track(int fail_in) { (void)fail_in; }
static int64_t untrack(void) { return 0; }
#define CAN_FAIL_MALLOC 0
#endif

static void *xmalloc(size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "fuzz: harness out of memory (%zu bytes)\n", bytes);
        abort();
    }
    return p;
}

/* ------------------------------------------------------------------------
 * Decoding */

typedef struct reader { const uint8_t *p; size_t n; } reader;
static unsigned u8(reader *r) { return r->n ? (r->n--, *r->p++) : 0u; }
static uint64_t bytes_le(reader *r, int k) {
    uint64_t v = 0;
    for (int i = 0; i < k; i++) v |= (uint64_t)u8(r) << (8 * i);
    return v;
}
static int64_t pick(reader *r, int64_t lo, int64_t hi) { /* [lo, hi] */
    const uint64_t span = (uint64_t)hi - (uint64_t)lo + 1; /* 0: all of int64 */
    const int k = span == 0 || span > 0xffffffffu ? 8 : span > 65536 ? 4 : span > 256 ? 2 : 1;
    const uint64_t v = bytes_le(r, k);
    return (int64_t)((uint64_t)lo + (span ? v % span : v));
}

static int64_t decode_size(reader *r) {
    static const int64_t edge[] = {0, -1, INT64_MIN, INT64_MAX, LIM - 1, LIM, LIM + 1, 1 << 20, 3 << 21,
                                   1000003, (int64_t)1 << 40, -LIM};
    unsigned k = u8(r) % 32;
    if (k < 24) return pick(r, 1, k < 6 ? 3 : 24);
    if (k < 29) return pick(r, 25, k < 27 ? 100 : 700);
    if (k < 31) return edge[u8(r) % (sizeof edge / sizeof edge[0])];
    return (int64_t)bytes_le(r, 8);
}

static int32_t decode_flag(reader *r) {
    unsigned k = u8(r) % 16;
    return k < 10 ? 0 : k < 15 ? 1 : (int32_t)bytes_le(r, 4); /* any int: the check reads truth */
}

/* A scale_factor with floor(in * sf) == out (F.interpolate's own rule), as test_vitpe.c makes them. */
static double consistent_sf(int64_t in, int64_t out, double frac) {
    if (in < 1 || out < 1 || in > LIM || out > LIM) return 1.0;
    double sf = ((double)out + frac) / (double)in;
    while (floor((double)in * sf) < (double)out) sf = nextafter(sf, INFINITY);
    while (floor((double)in * sf) > (double)out) sf = nextafter(sf, 0.0);
    return sf;
}

static double decode_sf(reader *r, int64_t in, int64_t out) {
    static const double odd[] = {5e-324, 1e-300, 1e-30, 0x1p-25, 1e300, 1e308, 1.7976931348623157e308, 1e30,
                                 -0.0, -1.0, NAN, -NAN, INFINITY, -INFINITY, 0.5, 3.0};
    unsigned k = u8(r) % 16;
    if (k < 7) return 0.0;
    if (k < 12) return consistent_sf(in, out, (double)u8(r) / 256.0);
    if (k == 12) return in >= 1 && out >= 1 ? (double)out / (double)in : 1.0;
    if (k == 13) return odd[u8(r) % 16];
    if (k == 14) return exp((double)pick(r, -4000, 4000) / 400.0); /* e^-10 .. e^10 */
    uint64_t bits = bytes_le(r, 8);
    double d;
    memcpy(&d, &bits, 8);
    return d;
}

static void decode_axis(reader *r, vitpe_axis *ax) {
    memset(ax, 0, sizeof *ax);
    ax->in_size = decode_size(r);
    ax->out_size = u8(r) % 4 == 0 ? ax->in_size : decode_size(r);
    unsigned m = u8(r) % 32;
    ax->mode = m < 30 ? (int32_t)(m % 6) : m == 30 ? (u8(r) % 2 ? -1 : 6) : (int32_t)bytes_le(r, 4);
    ax->align_corners = decode_flag(r);
    ax->antialias = decode_flag(r);
    ax->opmath_double = (int32_t)(u8(r) % 2);
    ax->scale_factor = decode_sf(r, ax->in_size, ax->out_size);
}

/* ------------------------------------------------------------------------
 * The axis contract (vitpe.h, after F.interpolate): the status the check
 * must give. */

static int axis_spec(const vitpe_axis *ax) {
    if (ax->in_size < 1 || ax->out_size < 1) return VITPE_EINVAL;
    if (ax->in_size > LIM || ax->out_size > LIM) return VITPE_EOVERFLOW;
    if (ax->mode < VITPE_MODE_NEAREST || ax->mode > VITPE_MODE_LANCZOS3) return VITPE_EINVAL;
    int interp = ax->mode == VITPE_MODE_BILINEAR || ax->mode == VITPE_MODE_BICUBIC;
    if (ax->align_corners && !interp) return VITPE_EINVAL;
    if (ax->antialias && !interp && ax->mode != VITPE_MODE_LANCZOS3) return VITPE_EINVAL;
    if (!(ax->scale_factor >= 0.0) || !isfinite(ax->scale_factor)) return VITPE_EINVAL;
    if (ax->scale_factor > 0.0 && floor((double)ax->in_size * ax->scale_factor) != (double)ax->out_size)
        return VITPE_EINVAL; /* F.interpolate would make another size */
    return VITPE_OK;
}

/* ------------------------------------------------------------------------
 * Values: float16/bfloat16 written independently of the kernels (c10's
 * rounding), and test_vitpe.c's tolerance units. */

static uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static float h2f(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0) { float v = ldexpf((float)m, -24); return sign ? -v : v; }
    if (e == 31) return u2f(sign | 0x7f800000u | (m << 13));
    return u2f(sign | ((e + 112u) << 23) | (m << 13));
}
static uint16_t f2h(float f) {
    uint32_t u = f2u(f), sign = (u >> 16) & 0x8000u;
    u &= 0x7fffffffu;
    if (u > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);
    if (u >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);
    if (u < 0x38800000u) {
        if (u < 0x33000000u) return (uint16_t)sign;
        uint32_t e = u >> 23, m = (u & 0x7fffffu) | 0x800000u, shift = 126 - e;
        uint32_t q = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1u))) q++;
        return (uint16_t)(sign | q);
    }
    uint32_t v = u - 0x38000000u, q = v >> 13, rem = v & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (q & 1u))) q++;
    return (uint16_t)(sign | q);
}
static float b2f(uint16_t b) { return u2f((uint32_t)b << 16); }
static uint16_t f2b(float f) {
    uint32_t u = f2u(f);
    return isnan(f) ? 0x7fc0u : (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
static size_t dsize(int dt) { return dt == VITPE_F64 ? 8 : dt == VITPE_F32 ? 4 : 2; }
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
static double ulp(int dt, double v) {
    int e;
    v = fabs(v);
    if (v == 0.0 || !isfinite(v)) v = 0x1.0p-1000;
    frexp(v, &e);
    switch (dt) {
    case VITPE_F16: return ldexp(1.0, (e - 1 < -14 ? -14 : e - 1) - 10);
    case VITPE_BF16: return ldexp(1.0, (e - 1 < -126 ? -126 : e - 1) - 7);
    case VITPE_F32: return ldexp(1.0, (e - 1 < -126 ? -126 : e - 1) - 23);
    default: return ldexp(1.0, (e - 1 < -1022 ? -1022 : e - 1) - 52);
    }
}

/* ------------------------------------------------------------------------
 * Tensors: (B, T, C) with element (b, t, c) at b*bs + t*ts + c, for any
 * strides (negative, zero, overlapping), in a buffer of exactly the extent
 * they span, so that ASan sees any access past either end. cover[i] counts
 * the elements at buffer element i: 0 is padding, 2 an overlap (such an
 * output is checked for memory safety only). */

typedef struct layout { int64_t B, T, C, bs, ts; } layout;
typedef struct tensor {
    layout L;
    int dt;
    int64_t lo, n;          /* buffer element 0 is offset lo (<= 0) */
    unsigned char *mem, *cover;
    int disjoint;           /* no two elements share memory */
} tensor;

static int64_t at(const layout *L, int64_t b, int64_t t, int64_t c) { return b * L->bs + t * L->ts + c; }
static void *origin(const tensor *x) { return x->mem + (size_t)(-x->lo) * dsize(x->dt); }

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
    x->mem = xmalloc((size_t)x->n * dsize(dt));
    memset(x->mem, fill, (size_t)x->n * dsize(dt));
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
static void tensor_free(tensor *x) { free(x->mem); free(x->cover); x->mem = x->cover = NULL; }

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
    static const uint64_t d[] = {0x7ff8000000000001ull, 0x7ff0000000000001ull, 0x8000000000000000ull,
                                 0xfff0000000000000ull, 0x0000000000000001ull};
    static const uint32_t f[] = {0x7fc00001u, 0x7f800001u, 0x80000000u, 0xff800000u, 0x00000001u};
    static const uint16_t h[] = {0x7e01, 0x7c01, 0x8000, 0xfc00, 0x0001}, bf[] = {0x7fc1, 0x7f81, 0x8000, 0xff80, 0x0001};
    uint64_t s = bytes_le(r, 4) * 0x9e3779b97f4a7c15ull + 1; /* data from the input's seed, not its bytes */
    void *o = origin(x);
    for (int64_t b = 0; b < x->L.B; b++)
        for (int64_t t = 0; t < x->L.T; t++)
            for (int64_t c = 0; c < x->L.C; c++) {
                s ^= s << 13, s ^= s >> 7, s ^= s << 17;
                const int64_t i = at(&x->L, b, t, c);
                const int special = (int)(s >> 61);
                if (t < P && special < 5 && x->disjoint) { /* aliased, it could land on the grid */
                    switch (x->dt) {
                    case VITPE_F32: memcpy((float *)o + i, &f[special], 4); break;
                    case VITPE_F64: memcpy((double *)o + i, &d[special], 8); break;
                    case VITPE_F16: ((uint16_t *)o)[i] = h[special]; break;
                    default: ((uint16_t *)o)[i] = bf[special]; break;
                    }
                } else if (nonfinite && (s & 63) == 0)
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

static void check_plan(const vitpe_plan *p, const vitpe_axis *h, const vitpe_axis *w, const vitpe_plan_layout *L) {
    CHECK(memcmp(&p->layout, L, sizeof *L) == 0, "plan layout differs from vitpe_plan_measure");
    CHECK(memcmp(&p->h, h, sizeof *h) == 0 && memcmp(&p->w, w, sizeof *w) == 0, "plan axes differ");
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

typedef struct direction {
    int backward;
    const vitpe_plan *plan;
    const vitpe_taps *th, *tw; /* the tables it runs over */
    vitpe_io io;
    int64_t rows;              /* io.batch * th->n_out, -1 where that overflows */
} direction;

static int runs_ok(const direction *d, int64_t r0, int64_t r1) { /* the contract's valid ranges */
    return d->rows >= 0 && r0 >= 0 && r0 <= r1 && r1 <= d->rows;
}

/* One library call over rows [r0, r1). `null`: 0 passes a scratch of
 * exactly the size vitpe_scratch_bytes gives; 1, 2, 3 pass NULL for dst,
 * src, scratch; 4 a 64-byte dummy scratch (for calls that must not run). */
static int run(const direction *d, void *dst, const void *src, int64_t r0, int64_t r1, int null) {
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
    for (int64_t i = 0; i < x->n * (int64_t)dsize(x->dt); i++)
        if (x->mem[i] != fill) return 0;
    return 1;
}

/* The grid row (work item) that writes token t of batch b. */
static int64_t row_of(const direction *d, int64_t b, int64_t t) {
    return b * d->th->n_out + (t < d->io.prefix ? 0 : (t - d->io.prefix) / d->tw->n_out);
}

/* The fast pass's arithmetic written plainly (test_vitpe.c's reference_sum):
 * per W tap, the H sum over the input column in the accumulator type, taps
 * in order from a product, then the W sum; one rounding to storage. */
static double reference_sum(const direction *d, const tensor *src, int64_t b, int64_t oy, int64_t ox, int64_t c) {
    const vitpe_taps *th = d->th, *tw = d->tw;
    const int64_t sy = th->start[oy], ny = th->count[oy], sx = tw->start[ox], nx = tw->count[ox];
    const int64_t P = d->io.prefix, win = tw->n_in;
    const double *wy = th->weight + oy * th->width, *wx = tw->weight + ox * tw->width;
    const void *o = origin(src);
    if (src->dt == VITPE_F64) {
        double acc = 0.0;
        for (int64_t kx = 0; kx < nx; kx++) {
            double h = 0.0;
            for (int64_t ky = 0; ky < ny; ky++) {
                double x = get(o, src->dt, at(&src->L, b, P + (sy + ky) * win + sx + kx, c));
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
            float x = (float)get(o, src->dt, at(&src->L, b, P + (sy + ky) * win + sx + kx, c));
            h = ky == 0 ? (float)wy[0] * x : h + (float)wy[ky] * x;
        }
        acc = kx == 0 ? (float)wx[0] * h : acc + (float)wx[kx] * h;
    }
    return acc;
}

/* Bitwise: the fast pass vs its own arithmetic, prefix tokens vs the input. */
static void check_bits(const direction *d, const tensor *got, const tensor *src) {
    const int dt = got->dt;
    const size_t es = dsize(dt);
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
                    const double v = reference_sum(d, src, b, oy, ox, c), g = get(origin(got), dt, i);
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

/* Fast vs naive, with test_vitpe.c's tolerance (error bounds of the two sums
 * from the magnitudes of their terms, plus one storage unit for the half
 * types) and an absolute term for subnormal results. */
static void check_naive(const direction *d, const vitpe_axis *h, const vitpe_axis *w, const tensor *got,
                        const tensor *src, reader *r) {
    const int dt = got->dt;
    const layout *Ld = &got->L, *Ls = &src->L;
    const vitpe_taps *fh = &d->plan->fwd_h, *fw = &d->plan->fwd_w;
    const int64_t C = Ld->C, P = d->io.prefix, Win = w->in_size, Wout = w->out_size, T = Ld->T;
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
    double *mag = xmalloc((size_t)(Ld->B * T * C) * sizeof(double));
    memset(mag, 0, (size_t)(Ld->B * T * C) * sizeof(double));
    for (int64_t b = 0; b < Ld->B; b++) { /* sum |w * x| over the terms of each result */
        double *mb = mag + b * T * C;
        for (int64_t oy = 0; oy < fh->n_out; oy++)
            for (int64_t ox = 0; ox < fw->n_out; ox++)
                for (int64_t ky = 0; ky < fh->count[oy]; ky++)
                    for (int64_t kx = 0; kx < fw->count[ox]; kx++) {
                        double wgt = fabs(fh->weight[oy * fh->width + ky] * fw->weight[ox * fw->width + kx]);
                        int64_t ti = P + (fh->start[oy] + ky) * Win + fw->start[ox] + kx, to = P + oy * Wout + ox;
                        int64_t ts = d->backward ? to : ti, td = d->backward ? ti : to;
                        for (int64_t c = 0; c < C; c++)
                            mb[td * C + c] += wgt * fabs(get(origin(src), dt, at(Ls, b, ts, c)));
                    }
    }
    const double u_acc = dt == VITPE_F64 ? 0x1.0p-53 : 0x1.0p-24, tiny = dt == VITPE_F64 ? 0x1.0p-1074 : 0x1.0p-149;
    const int64_t n_fast = d->th->width + d->tw->width, n_ref = d->th->width * d->tw->width;
    for (int64_t b = 0; b < Ld->B; b++)
        for (int64_t t = P; t < T; t++)
            for (int64_t c = 0; c < C; c++) {
                int64_t i = at(Ld, b, t, c);
                double g = get(origin(got), dt, i), v = get(origin(&ref), dt, i), m = mag[(b * T + t) * C + c];
                if (g == v) continue; /* infinities too: a float16 sum past 65504 overflows in both */
                g = past_largest(dt, g), v = past_largest(dt, v);
                double tol = 2.0 * (double)(n_fast + 3) * u_acc * m + 2.0 * (double)(n_ref + 3) * 0x1.0p-53 * m +
                             (double)(n_fast + n_ref + 6) * tiny;
                if (dt == VITPE_F16 || dt == VITPE_BF16) tol += ulp(dt, fmax(fabs(g), fabs(v)));
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

/* One direction: forward (src inp, dst out) or backward (src dout, dst dinp)
 * over the tensors decoded here. Leaves src and dst in *x, *y for the
 * adjoint identity when both are float64, finite and disjoint. */
static void run_direction(reader *r, const vitpe_plan *plan, const vitpe_axis *h, const vitpe_axis *w,
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
                            const unsigned char *p = two.mem + (at(&Ld, b, t, c) - two.lo) * (int64_t)dsize(io->dtype);
                            for (size_t k = 0; k < dsize(io->dtype); k++)
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
            const size_t es = dsize(io->dtype);
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
static void check_adjoint(const vitpe_io *io, const tensor *x, const tensor *Ax, const tensor *y, const tensor *ATy) {
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

/* ------------------------------------------------------------------------
 * One execution */

/* measure, then create (with a failing malloc where the tables would be too
 * large to build here, and now and then anyway); the plan where it built. */
static vitpe_plan *plan_stage(reader *r, const vitpe_axis *h, const vitpe_axis *w, int adj, int want) {
    vitpe_plan_layout L;
    /* the adjoint's width is a sweep over the axis: only for axes of a few 10^5 */
    if (want == VITPE_OK && (h->in_size + h->out_size > MAX_ADJ_SWEEP || w->in_size + w->out_size > MAX_ADJ_SWEEP))
        adj = 0;
    track(0);
    int st = vitpe_plan_measure(&L, h, w, adj);
    CHECK(untrack() == 0, "vitpe_plan_measure allocated");
    CHECK(st == want, "vitpe_plan_measure returned %d, the axis checks %d", st, want);
    if (u8(r) % 16 == 0) {
        CHECK(vitpe_plan_measure(NULL, h, w, adj) == VITPE_EINVAL, "vitpe_plan_measure(NULL) is not EINVAL");
        CHECK(vitpe_plan_create(NULL, h, w, adj) == VITPE_EINVAL, "vitpe_plan_create(NULL) is not EINVAL");
    }
    int fail = st == VITPE_OK && (L.bytes > MAX_PLAN_BYTES || u8(r) % 8 == 0);
    if (fail && !CAN_FAIL_MALLOC) return NULL;
    vitpe_plan *plan = (vitpe_plan *)&L; /* must come back NULL on failure */
    track(fail);
    int cs = vitpe_plan_create(&plan, h, w, adj);
    int64_t net = untrack();
    int expect = st != VITPE_OK ? st : fail ? VITPE_ENOMEM : VITPE_OK;
    if (!CHECK(cs == expect && (cs == VITPE_OK) == (plan != NULL) && (!CAN_FAIL_MALLOC || net == (cs == VITPE_OK)),
               "vitpe_plan_create returned %d (plan %p, %lld allocations kept), want %d", cs, (void *)plan,
               (long long)net, expect) ||
        cs != VITPE_OK)
        return cs == VITPE_OK ? plan : NULL;
    check_plan(plan, h, w, &L);
    g_reach[0]++;
    return plan;
}

static void describe(const vitpe_axis *h, const vitpe_axis *w, int adj) {
    snprintf(g_case, sizeof g_case,
             "H %lld->%lld W %lld->%lld mode %d/%d align_corners %d/%d antialias %d/%d opmath_double %d/%d "
             "scale_factor %.17g/%.17g with_adjoint %d",
             (long long)h->in_size, (long long)h->out_size, (long long)w->in_size, (long long)w->out_size, h->mode,
             w->mode, h->align_corners, w->align_corners, h->antialias, w->antialias, h->opmath_double,
             w->opmath_double, h->scale_factor, w->scale_factor, adj);
}

static int64_t decode_io_field(reader *r, int64_t small_hi, const int64_t *odd) {
    unsigned k = u8(r) % 16;
    return k < 12 ? pick(r, 0, small_hi) : odd[k - 12];
}

static void execute(const uint8_t *data, size_t size) {
    reader r = {data, size};
    vitpe_axis h, w;
    decode_axis(&r, &h);
    decode_axis(&r, &w);
    if (u8(&r) % 4) /* as the op: one mode and flags for both axes */
        w.mode = h.mode, w.align_corners = h.align_corners, w.antialias = h.antialias, w.opmath_double = h.opmath_double;
    const int adj = u8(&r) % 4 != 0;
    describe(&h, &w, adj);
    const int sh = vitpe_axis_check(&h), sw = vitpe_axis_check(&w), ph = axis_spec(&h), pw = axis_spec(&w);
    CHECK(sh == ph, "vitpe_axis_check(H) = %d, the contract: %d", sh, ph);
    CHECK(sw == pw, "vitpe_axis_check(W) = %d, the contract: %d", sw, pw);
    const int want = sh ? sh : sw;
    if (want != VITPE_OK) { /* the naive references check the axes too */
        vitpe_io io = {VITPE_F32, 1, 0, 1, 0, 1, 0, 1};
        float dummy[1] = {0};
        track(0);
        int sf = vitpe_forward_naive(dummy, dummy, &h, &w, &io), sb = vitpe_backward_naive(dummy, dummy, &h, &w, &io);
        CHECK(untrack() == 0 && sf == want && sb == want, "naive returned %d/%d, the axis checks %d", sf, sb, want);
    }
    vitpe_plan *plan = plan_stage(&r, &h, &w, adj, want);
    if (!plan) return;
    if (!g_failed) {
        static const int64_t dts[] = {-1, 4, VITPE_F64, VITPE_F32}, batches[] = {-1, INT64_MAX / 2, INT64_MAX, (int64_t)1 << 40};
        static const int64_t prefixes[] = {-1, 65, (int64_t)1 << 40, INT64_MAX}, chans[] = {-1, 4096, INT64_MAX / 2, (int64_t)1 << 40};
        vitpe_io shape;
        memset(&shape, 0, sizeof shape);
        shape.dtype = (int32_t)decode_io_field(&r, 3, dts);
        shape.batch = decode_io_field(&r, 3, batches);
        shape.prefix = decode_io_field(&r, 5, prefixes);
        shape.channels = u8(&r) % 4 == 0 ? (int64_t)(64 * (1 + u8(&r) % 3)) : decode_io_field(&r, u8(&r) % 4 ? 40 : 1100, chans);
        snprintf(g_case + strlen(g_case), sizeof g_case - strlen(g_case), " dtype %d B %lld P %lld C %lld",
                 shape.dtype, (long long)shape.batch, (long long)shape.prefix, (long long)shape.channels);
        tensor x, Ax, y, ATy;
        memset(&x, 0, sizeof x), memset(&Ax, 0, sizeof Ax), memset(&y, 0, sizeof y), memset(&ATy, 0, sizeof ATy);
        run_direction(&r, plan, &h, &w, &shape, 0, &x, &Ax);
        if (plan->layout.with_adjoint)
            run_direction(&r, plan, &h, &w, &shape, 1, &y, &ATy);
        else {
            float dummy[1] = {0};
            direction d = {1, plan, &plan->fwd_h, &plan->fwd_w, {VITPE_F32, 1, 0, 1, 0, 1, 0, 1}, -1};
            CHECK(run(&d, dummy, dummy, 0, 1, 4) == VITPE_EINVAL, "backward without adjoint tables is not EINVAL");
        }
        if (x.mem && y.mem) check_adjoint(&shape, &x, &Ax, &y, &ATy), g_reach[4]++;
        tensor_free(&x), tensor_free(&Ax), tensor_free(&y), tensor_free(&ATy);
    }
    track(0);
    vitpe_plan_destroy(plan);
    CHECK(untrack() == -CAN_FAIL_MALLOC, "vitpe_plan_destroy did not free the plan's one allocation");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    g_failed = 0;
    execute(data, size);
#ifdef VITPE_LIBFUZZER
    if (g_failed) abort(); /* libFuzzer saves the input as crash-<sha1> */
#endif
    return 0;
}

/* ------------------------------------------------------------------------
 * The standalone driver: a seeded random stream of inputs (the decoder makes
 * structure of any bytes), or the given files. */
#ifndef VITPE_LIBFUZZER

static const uint8_t *g_input; /* the input being executed, for the crash handlers */
static size_t g_input_size;
static char g_crash_path[4096], g_self[4096];

static void print_hex(FILE *f, const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++) fprintf(f, "%02x", p[i]);
    fprintf(f, "\n");
}

static int save(const char *path, const uint8_t *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    size_t wrote = fwrite(p, 1, n, f);
    return fclose(f) == 0 && wrote == n;
}

/* A crash (sanitizer report, signal): write the input before the process goes. */
static void on_death(void) {
    if (!g_input) return;
    const uint8_t *p = g_input;
    g_input = NULL;
    if (g_crash_path[0] && save(g_crash_path, p, g_input_size)) /* (a replayed file is saved already) */
        fprintf(stderr, "fuzz: crash; input written to %s; replay: %s %s\n", g_crash_path, g_self, g_crash_path);
    fprintf(stderr, "fuzz: crashing input (hex): ");
    print_hex(stderr, p, g_input_size);
}
static void on_signal(int sig) {
    on_death();
    signal(sig, SIG_DFL);
    raise(sig);
}
/* The sanitizers' hook, where they are linked in (weak: absent otherwise).
 * GCC links UBSan as a runtime of its own, whose exits the hook does not
 * see: it is told to abort instead, which the SIGABRT handler catches. */
extern void __sanitizer_set_death_callback(void (*)(void)) __attribute__((weak));
const char *__ubsan_default_options(void);
const char *__ubsan_default_options(void) { return "print_stacktrace=1:abort_on_error=1"; }

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int replay(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return fprintf(stderr, "fuzz: cannot open %s\n", path), 1;
    static uint8_t buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    g_input = buf, g_input_size = n;
    LLVMFuzzerTestOneInput(buf, n);
    g_input = NULL;
    printf("fuzz: %s (%zu bytes): %s\n", path, n, g_failed ? "FINDING" : "ok");
    return g_failed != 0;
}

int main(int argc, char **argv) {
    double seconds = 30;
    long long runs = -1, first = 0; /* input numbers first, first + 1, ... */
    uint64_t seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    const char *dir = ".";
    int n_files = 0, bad = 0;
    snprintf(g_self, sizeof g_self, "%s", argv[0]);
    for (int i = 1; i < argc; i++) {
        if (!strncmp(argv[i], "-seconds=", 9)) seconds = atof(argv[i] + 9);
        else if (!strncmp(argv[i], "-runs=", 6)) runs = atoll(argv[i] + 6);
        else if (!strncmp(argv[i], "-seed=", 6)) seed = strtoull(argv[i] + 6, NULL, 0);
        else if (!strncmp(argv[i], "-dir=", 5)) dir = argv[i] + 5;
        else if (!strncmp(argv[i], "-first=", 7)) first = atoll(argv[i] + 7);
        else if (argv[i][0] == '-') return fprintf(stderr, "fuzz: unknown option %s\n", argv[i]), 2;
    }
    signal(SIGABRT, on_signal); /* ASan leaves SIGABRT alone; the others are its own */
    if (__sanitizer_set_death_callback) __sanitizer_set_death_callback(on_death);
    else {
        static const int sigs[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL};
        for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) signal(sigs[i], on_signal);
    }
    for (int i = 1; i < argc; i++)
        if (argv[i][0] != '-') n_files++, bad += replay(argv[i]);
    if (n_files) return bad != 0;
    snprintf(g_crash_path, sizeof g_crash_path, "%s/crash-seed-%llx.bin", dir, (unsigned long long)seed);

    printf("fuzz: seed 0x%llx, %s %g\n", (unsigned long long)seed, runs >= 0 ? "runs" : "seconds",
           runs >= 0 ? (double)runs : seconds);
    fflush(stdout);
    const double t0 = now();
    double last_report = t0;
    long long n = 0, findings = 0, slowest_n = 0;
    double slowest = 0;
    static uint8_t buf[512];
    for (n = first; runs >= 0 ? n - first < runs : now() - t0 < seconds; n++) {
        uint64_t s = seed ^ ((uint64_t)n * 0xd1b54a32d192ed03ull); /* input n depends on (seed, n) only */
        size_t len = (size_t)(splitmix(&s) % sizeof buf);
        for (size_t i = 0; i < len; i += 8) {
            uint64_t v = splitmix(&s);
            memcpy(buf + i, &v, len - i < 8 ? len - i : 8);
        }
        const double t1 = now();
        g_input = buf, g_input_size = len;
        LLVMFuzzerTestOneInput(buf, len);
        g_input = NULL;
        if (now() - t1 > slowest) slowest = now() - t1, slowest_n = n;
        if (g_failed) {
            char path[4200];
            snprintf(path, sizeof path, "%s/finding-seed-%llx-%lld.bin", dir, (unsigned long long)seed, n);
            findings++;
            printf("fuzz: finding in execution %lld; input %s; replay: %s %s\nfuzz: input (hex): ", n,
                   save(path, buf, len) ? path : "(not written)", argv[0], path);
            print_hex(stdout, buf, len);
            fflush(stdout);
            if (findings >= 20) { n++; break; }
        }
        if (now() - last_report >= 60) {
            last_report = now();
            fprintf(stderr, "fuzz: %lld executions in %.0f s\n", n + 1, last_report - t0);
        }
    }
    printf("fuzz: reached: %lld plans, %lld full runs, %lld bitwise checks, %lld naive checks, %lld adjoint "
           "identities\n", g_reach[0], g_reach[1], g_reach[2], g_reach[3], g_reach[4]);
    printf("fuzz: slowest execution %lld (%.3f s); replay it: %s -seed=0x%llx -first=%lld -runs=1\n", slowest_n,
           slowest, argv[0], (unsigned long long)seed, slowest_n);
    printf("fuzz: %lld executions in %.1f s (seed 0x%llx), %lld findings\n", n - first, now() - t0,
           (unsigned long long)seed, findings);
    return findings != 0;
}
#endif /* !VITPE_LIBFUZZER */
