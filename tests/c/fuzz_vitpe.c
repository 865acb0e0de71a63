/* fuzz_vitpe.c — a fuzz target for vitpe's C library, and two drivers for it.
 *
 * One input (a byte string) decodes into one resize: both axes (sizes from 1
 * to far past the 2^24 limit, every mode and invalid ones, the flags in legal
 * and illegal combinations, opmath, scale_factor from 0 over tiny and huge to
 * NaN/inf and raw bit patterns, sample positions: sorted ones in and around
 * the grid, and unsorted, non-finite and out-of-range ones), with_adjoint, and the tensors' layout (dtype,
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
 *     in the accumulator type, as the C suite holds it); off the naive
 *     reference beyond the suite's tolerance; prefix tokens not copied bit
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
#include "fuzz_vitpe.h"

/* ------------------------------------------------------------------------
 * Findings */

int g_failed;
long long g_reach[5];
char g_case[512];

void finding(const char *fmt, ...) {
    if (g_failed++ >= 5) return;
    va_list ap;
    va_start(ap, fmt);
    printf("FINDING [%s]: ", g_case);
    vprintf(fmt, ap);
    printf("\n");
    fflush(stdout);
    va_end(ap);
}

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
void track(int fail_in) { g_track = 1, g_fail_in = fail_in, g_net = 0; }
int64_t untrack(void) { g_track = 0, g_fail_in = 0; return g_net; }
#else /* not counted: no allocation checks */
void track(int fail_in) { (void)fail_in; }
int64_t untrack(void) { return 0; }
#endif

/* ------------------------------------------------------------------------
 * Decoding */

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

/* A scale_factor with floor(in * sf) == out (F.interpolate's own rule), as the C suite makes them. */
static double consistent_sf(int64_t in, int64_t out, double frac) {
    if (in < 1 || out < 1 || in > LIM || out > LIM) return 1.0;
    return fit_scale_factor(in, out, ((double)out + frac) / (double)in);
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

/* Sample positions for an axis of `out` outputs (at most MAX_POSITIONS):
 * mostly sorted, in and a little around [0, in-1], now and then with
 * repeats; else a broken rule (one decreasing step, a NaN or infinity, a
 * value past the bound). */
#define MAX_POSITIONS 4096
static void decode_positions(reader *r, double *p, int64_t in, int64_t out) {
    static const double odd[] = {NAN, INFINITY, -INFINITY, (double)LIM * 2.0, -(double)LIM * 2.0, (double)LIM,
                                 -(double)LIM, 1e300};
    const double span = (double)(in > 0 && in <= LIM ? in : 8) + 2.0;
    double cur = -1.0 - (double)u8(r) / 128.0;
    for (int64_t o = 0; o < out; o++) {
        unsigned k = u8(r) % 8;
        cur += k == 0 ? 0.0 : k < 7 ? span * (double)u8(r) / (256.0 * (double)out) * 2.0 : 0.5;
        p[o] = cur;
    }
    if (out > 0 && u8(r) % 8 == 0) {
        int64_t at = pick(r, 0, out - 1);
        unsigned k = u8(r) % 3;
        p[at] = k == 0 && at > 0 ? p[at - 1] - 0.25 : odd[u8(r) % (sizeof odd / sizeof odd[0])];
    }
}

static void decode_axis(reader *r, vitpe_axis *ax, double *positions) {
    memset(ax, 0, sizeof *ax);
    ax->in_size = decode_size(r);
    ax->out_size = u8(r) % 4 == 0 ? ax->in_size : decode_size(r);
    unsigned m = u8(r) % 32;
    ax->mode = m < 30 ? (int32_t)(m % VITPE_MODE_COUNT)
                      : m == 30 ? (u8(r) % 2 ? -1 : VITPE_MODE_COUNT) : (int32_t)bytes_le(r, 4);
    ax->align_corners = decode_flag(r);
    ax->antialias = decode_flag(r);
    ax->opmath_double = (int32_t)(u8(r) % 2);
    ax->scale_factor = decode_sf(r, ax->in_size, ax->out_size);
    if (u8(r) % 4 == 0 && ax->out_size >= 1 && ax->out_size <= MAX_POSITIONS) {
        if (u8(r) % 2) /* mostly with the options positions allow */
            ax->align_corners = ax->antialias = 0, ax->scale_factor = 0.0;
        decode_positions(r, positions, ax->in_size, ax->out_size);
        ax->positions = positions;
    }
}

/* ------------------------------------------------------------------------
 * The axis contract (vitpe.h, after F.interpolate): the status the check
 * must give. */

static int axis_spec(const vitpe_axis *ax) {
    if (ax->in_size < 1 || ax->out_size < 1) return VITPE_EINVAL;
    if (ax->in_size > LIM || ax->out_size > LIM) return VITPE_EOVERFLOW;
    vitpe_mode_info mode;
    if (vitpe_mode_get_info(ax->mode, &mode) != VITPE_OK) return VITPE_EINVAL;
    if (ax->align_corners && !mode.align_corners) return VITPE_EINVAL;
    if (ax->antialias && mode.antialias == VITPE_ANTIALIAS_NEVER) return VITPE_EINVAL;
    if (!(ax->scale_factor >= 0.0) || !isfinite(ax->scale_factor)) return VITPE_EINVAL;
    if (ax->scale_factor > 0.0 && !mode.scale_factor) return VITPE_EINVAL;
    if (ax->scale_factor > 0.0 && floor((double)ax->in_size * ax->scale_factor) != (double)ax->out_size)
        return VITPE_EINVAL; /* F.interpolate would make another size */
    if (ax->positions) { /* vitpe.h: point samplers, no uniform-mapping options, finite, bounded, sorted */
        if (!vitpe_mode_samples_at(ax->mode) || ax->align_corners || ax->antialias || ax->scale_factor != 0.0)
            return VITPE_EINVAL;
        for (int64_t o = 0; o < ax->out_size; o++)
            if (!isfinite(ax->positions[o]) || fabs(ax->positions[o]) > (double)LIM ||
                (o > 0 && ax->positions[o] < ax->positions[o - 1]))
                return VITPE_EINVAL;
    }
    return VITPE_OK;
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
             "scale_factor %.17g/%.17g positions %d/%d with_adjoint %d",
             (long long)h->in_size, (long long)h->out_size, (long long)w->in_size, (long long)w->out_size, h->mode,
             w->mode, h->align_corners, w->align_corners, h->antialias, w->antialias, h->opmath_double,
             w->opmath_double, h->scale_factor, w->scale_factor, h->positions != NULL, w->positions != NULL, adj);
}

static int64_t decode_io_field(reader *r, int64_t small_hi, const int64_t *odd) {
    unsigned k = u8(r) % 16;
    return k < 12 ? pick(r, 0, small_hi) : odd[k - 12];
}

static void execute(const uint8_t *data, size_t size) {
    reader r = {data, size};
    static double h_positions[MAX_POSITIONS], w_positions[MAX_POSITIONS];
    vitpe_axis h, w;
    decode_axis(&r, &h, h_positions);
    decode_axis(&r, &w, w_positions);
    if (u8(&r) % 4) /* as the op: one mode and flags for both axes */
        w.mode = h.mode, w.align_corners = h.align_corners, w.antialias = h.antialias, w.opmath_double = h.opmath_double;
    const int adj = u8(&r) % 4 != 0;
    describe(&h, &w, adj);
    const int sh = vitpe_axis_check(&h), sw = vitpe_axis_check(&w), ph = axis_spec(&h), pw = axis_spec(&w);
    CHECK(sh == ph, "vitpe_axis_check(H) = %d, the contract: %d", sh, ph);
    CHECK(sw == pw, "vitpe_axis_check(W) = %d, the contract: %d", sw, pw);
    const int want = sh ? sh : sw;
    if (want != VITPE_OK) { /* the naive references check the axes too */
        vitpe_io io = {VITPE_F32, 1, 0, 1, 0, 1, 0, 1, 0};
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
        size_t len = (size_t)(splitmix64(&s) % sizeof buf);
        for (size_t i = 0; i < len; i += 8) {
            uint64_t v = splitmix64(&s);
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
