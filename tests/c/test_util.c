/* test_util.c — see test_util.h. */
#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void *xmalloc(size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        printf("FAIL: test harness out of memory (%zu bytes)\n", bytes);
        fflush(stdout);
        abort();
    }
    return p;
}

uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* ------------------------------------------------------------------------
 * Values (NaN results are never compared bitwise) */

uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

float h2f(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0) { /* zero or subnormal: m * 2^-24, exact in float */
        float v = ldexpf((float)m, -24);
        return sign ? -v : v;
    }
    if (e == 31) return u2f(sign | 0x7f800000u | (m << 13));
    return u2f(sign | ((e + 112u) << 23) | (m << 13));
}

uint16_t f2h(float f) {
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

float b2f(uint16_t b) { return u2f((uint32_t)b << 16); }
uint16_t f2b(float f) {
    uint32_t u = f2u(f);
    if (isnan(f)) return 0x7fc0u;
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

const char *dtype_name(int dt) {
    static const char *names[] = {"float32", "float64", "float16", "bfloat16"};
    return dt >= 0 && dt < 4 ? names[dt] : "?";
}
size_t dtype_size(int dt) { return dt == VITPE_F64 ? 8 : dt == VITPE_F32 ? 4 : 2; }

double get(const void *p, int dt, int64_t i) {
    switch (dt) {
    case VITPE_F32: return ((const float *)p)[i];
    case VITPE_F64: return ((const double *)p)[i];
    case VITPE_F16: return h2f(((const uint16_t *)p)[i]);
    default: return b2f(((const uint16_t *)p)[i]);
    }
}
void set(void *p, int dt, int64_t i, double v) {
    switch (dt) {
    case VITPE_F32: ((float *)p)[i] = (float)v; break;
    case VITPE_F64: ((double *)p)[i] = v; break;
    case VITPE_F16: ((uint16_t *)p)[i] = f2h((float)v); break;
    default: ((uint16_t *)p)[i] = f2b((float)v); break;
    }
}

double ulp(int dt, double v) {
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

void set_special(void *p, int dt, int64_t i, int which) {
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

/* ------------------------------------------------------------------------
 * Axes and modes */

double fit_scale_factor(int64_t in, int64_t out, double sf) {
    while (floor((double)in * sf) < (double)out) sf = nextafter(sf, INFINITY);
    while (floor((double)in * sf) > (double)out) sf = nextafter(sf, 0.0);
    return sf;
}

vitpe_mode_info mode_info(int mode) {
    vitpe_mode_info info;
    if (vitpe_mode_get_info(mode, &info) != VITPE_OK) {
        memset(&info, 0, sizeof info);
        info.name = "unknown";
        info.antialias = VITPE_ANTIALIAS_NEVER;
    }
    return info;
}
int mode_max_align_corners(int mode) { return mode_info(mode).align_corners ? 1 : 0; }
int mode_max_antialias(int mode) { return mode_info(mode).antialias != VITPE_ANTIALIAS_NEVER; }

/* ------------------------------------------------------------------------
 * The fast passes' arithmetic and their tolerance */

double reference_sum(const void *src, const layout *Ls, int dt, int64_t b, int64_t P, const vitpe_taps *th,
                     int64_t oy, const vitpe_taps *tw, int64_t ox, int64_t c) {
    const int64_t sy = th->start[oy], ny = th->count[oy], sx = tw->start[ox], nx = tw->count[ox];
    const int64_t win = tw->n_in;
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

double *term_magnitudes(const vitpe_plan *plan, int backward, const void *src, const layout *Ls, int dt,
                        int64_t P, int64_t B, int64_t T) {
    const vitpe_taps *th = &plan->fwd_h, *tw = &plan->fwd_w;
    const int64_t C = Ls->C, Win = tw->n_in, Wout = tw->n_out;
    size_t n = (size_t)(B * T * C);
    double *mag = xmalloc(n * sizeof(double));
    memset(mag, 0, n * sizeof(double));
    for (int64_t b = 0; b < B; b++) {
        double *mb = mag + b * T * C;
        for (int64_t p = 0; p < P; p++)
            for (int64_t c = 0; c < C; c++) mb[p * C + c] = fabs(get(src, dt, at(Ls, b, p, c)));
        for (int64_t oy = 0; oy < th->n_out; oy++)
            for (int64_t ox = 0; ox < tw->n_out; ox++)
                for (int64_t ky = 0; ky < th->count[oy]; ky++)
                    for (int64_t kx = 0; kx < tw->count[ox]; kx++) {
                        double wgt = fabs(th->weight[oy * th->width + ky] * tw->weight[ox * tw->width + kx]);
                        int64_t ti = P + (th->start[oy] + ky) * Win + tw->start[ox] + kx, to = P + oy * Wout + ox;
                        int64_t ts = backward ? to : ti, td = backward ? ti : to;
                        for (int64_t c = 0; c < C; c++)
                            mb[td * C + c] += wgt * fabs(get(src, dt, at(Ls, b, ts, c)));
                    }
    }
    return mag;
}

double naive_tolerance(int dt, double m, int64_t n_fast, int64_t n_ref, double extra, double g, double r) {
    const double u_acc = dt == VITPE_F64 ? 0x1.0p-53 : 0x1.0p-24;
    double tol = 2.0 * (double)(n_fast + 3) * u_acc * m + 2.0 * (double)(n_ref + 3) * 0x1.0p-53 * m + extra;
    if (dt == VITPE_F16 || dt == VITPE_BF16) tol += ulp(dt, fmax(fabs(g), fabs(r)));
    return tol;
}
