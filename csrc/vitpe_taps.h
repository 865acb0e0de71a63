/* vitpe_taps.h — the per-axis tap formulas, shared by the host plan (C) and
 * the device plan (CUDA). Internal: include after vitpe.h.
 *
 * For one axis and one output index o, vitpe__axis_taps() gives the inputs
 * start .. start+count-1 that o reads and their weights. These are ATen's
 * formulas (aten/src/ATen/native/UpSample.h, cpu/UpSampleKernel.cpp),
 * including their float arithmetic: when opmath_double is 0 every step is
 * rounded to float, as ATen's opmath_t=float does for float32/16/bf16 data.
 * We emulate a float operation by the double operation followed by a
 * rounding to float; for + - * / that is exact (double carries more than
 * 2*24+2 bits, so the double rounding is innocuous). Build this file with
 * -ffp-contract=off (host) / -fmad=false (device) so no FMA sneaks in.
 *
 * Which formula an axis uses comes from its mode's row in vitpe_modes.h;
 * the switches below are generated from that table.
 *
 * Tap windows are monotone: start(o) and start(o)+count(o) never decrease
 * with o. The adjoint (which outputs read input i) is therefore a contiguous
 * range of outputs: the host plan finds all ranges in one sweep, a device
 * thread finds its input's range by binary search.
 */
#ifndef VITPE_TAPS_H
#define VITPE_TAPS_H

#include <math.h>
#include <stdint.h>

#ifdef __CUDACC__
#define VITPE_HD static __host__ __device__ __forceinline__
#else
#define VITPE_HD static inline
#endif

/* Round to the opmath type: float unless the axis computes in double. */
VITPE_HD double vitpe__r(double x, int opmath_double) {
    return opmath_double ? x : (double)(float)x;
}

VITPE_HD int64_t vitpe__min64(int64_t a, int64_t b) { return a < b ? a : b; }
VITPE_HD int64_t vitpe__max64(int64_t a, int64_t b) { return a > b ? a : b; }
VITPE_HD int64_t vitpe__clamp64(int64_t x, int64_t lo, int64_t hi) {
    return x < lo ? lo : (x > hi ? hi : x);
}

/* The row of ax->mode, as switches generated from VITPE_MODE_TABLE (constant
 * folded where the mode is known; usable on the host and the device). */
#define VITPE__ROW_CASE(column)                                                           \
    switch (mode) {                                                                      \
        VITPE_MODE_TABLE(column)                                                         \
    default: break;                                                                      \
    }
#define VITPE__TAPS_OF(id, name, taps, ...) case VITPE_MODE_##id: return VITPE_TAPS_##taps;
#define VITPE__AA_OF(id, name, taps, filter, support, ac, aa, ...) \
    case VITPE_MODE_##id: return VITPE_ANTIALIAS_##aa;
#define VITPE__SUPPORT_OF(id, name, taps, filter, support, ...) case VITPE_MODE_##id: return support;
#define VITPE__SAME_OF(id, name, taps, filter, support, ac, aa, sf, same) \
    case VITPE_MODE_##id: return VITPE_SAME_SIZE_##same;

VITPE_HD int vitpe__mode_taps(int mode) { VITPE__ROW_CASE(VITPE__TAPS_OF) return -1; }
VITPE_HD int vitpe__mode_antialias(int mode) { VITPE__ROW_CASE(VITPE__AA_OF) return -1; }
VITPE_HD double vitpe__mode_support(int mode) { VITPE__ROW_CASE(VITPE__SUPPORT_OF) return 0.0; }
VITPE_HD int vitpe__mode_same_size(int mode) { VITPE__ROW_CASE(VITPE__SAME_OF) return -1; }

/* How this axis picks taps: its mode's own way, or its filter's window where
 * the user asked an OPTIONAL mode to antialias. */
VITPE_HD int vitpe__axis_taps_kind(const vitpe_axis *ax) {
    if (ax->antialias && vitpe__mode_antialias(ax->mode) == VITPE_ANTIALIAS_OPTIONAL)
        return VITPE_TAPS_FILTER;
    return vitpe__mode_taps(ax->mode);
}

/* True where ATen leaves the axis untouched: same size and a mode whose
 * kernel special-cases it (linear: "scale_factor = 1, simply copy"; the
 * antialiased separable kernel skips a dimension whose size is unchanged).
 * Bicubic, nearest-exact and area have no such shortcut. */
VITPE_HD int vitpe__axis_is_copy(const vitpe_axis *ax) {
    if (ax->in_size != ax->out_size) return 0;
    switch (vitpe__mode_same_size(ax->mode)) {
    case VITPE_SAME_SIZE_ALWAYS: return 1;
    case VITPE_SAME_SIZE_WITH_ANTIALIAS: return ax->antialias;
    default: return 0;
    }
}

/* compute_scales_value: 1/scale_factor when given, else in/out. */
VITPE_HD double vitpe__scales_value(const vitpe_axis *ax, int dbl) {
    return ax->scale_factor > 0.0 ? vitpe__r(1.0 / ax->scale_factor, dbl)
                                  : vitpe__r((double)ax->in_size / (double)ax->out_size, dbl);
}

/* area_pixel_compute_scale: align_corners ignores scale_factor. */
VITPE_HD double vitpe__area_scale(const vitpe_axis *ax, int dbl) {
    if (ax->align_corners)
        return ax->out_size > 1
                   ? vitpe__r((double)(ax->in_size - 1) / (double)(ax->out_size - 1), dbl)
                   : 0.0;
    return vitpe__scales_value(ax, dbl);
}

/* area_pixel_compute_source_index */
VITPE_HD double vitpe__source_index(double scale, int64_t o, int align_corners, int cubic,
                                    int dbl) {
    if (align_corners) return vitpe__r(scale * (double)o, dbl);
    double r = vitpe__r(vitpe__r(scale * ((double)o + 0.5), dbl) - 0.5, dbl);
    return (!cubic && r < 0.0) ? 0.0 : r;
}

/* guard_index_and_lambda: note ATen's floorf, which rounds a double index to
 * float first; we keep that so the chosen taps agree. */
VITPE_HD int64_t vitpe__guard_index(double r, int64_t in_size, double *lambda, int dbl) {
    int64_t i0 = vitpe__min64((int64_t)floorf((float)r), in_size - 1);
    double t = vitpe__r(r - (double)i0, dbl);
    *lambda = t < 0.0 ? 0.0 : (t > 1.0 ? 1.0 : t);
    return i0;
}

/* Keys cubic convolution (UpSample.h cubic_convolution1/2), in opmath. */
VITPE_HD double vitpe__cubic1(double x, double A, int dbl) { /* |x| <= 1 */
    double v = vitpe__r(vitpe__r((A + 2.0) * x, dbl) - (A + 3.0), dbl);
    v = vitpe__r(vitpe__r(v * x, dbl) * x, dbl);
    return vitpe__r(v + 1.0, dbl);
}
VITPE_HD double vitpe__cubic2(double x, double A, int dbl) { /* 1 < |x| < 2 */
    double v = vitpe__r(vitpe__r(A * x, dbl) - 5.0 * A, dbl);
    v = vitpe__r(vitpe__r(v * x, dbl) + 8.0 * A, dbl);
    return vitpe__r(vitpe__r(v * x, dbl) - 4.0 * A, dbl);
}

/* -- Filters ------------------------------------------------------------------
 * The antialiasing filters of the mode table: the weight of a tap at distance
 * x >= 0 (already scaled by invscale), in opmath (dbl). Zero outside the
 * support the table gives the filter. */
VITPE_HD double vitpe__filter_none(double x, int dbl) { (void)x; (void)dbl; return 0.0; }

VITPE_HD double vitpe__filter_triangle(double x, int dbl) { return x < 1.0 ? vitpe__r(1.0 - x, dbl) : 0.0; }

/* Keys cubic with a = -0.5 (Pillow's bicubic), as ATen's antialiased path. */
VITPE_HD double vitpe__filter_keys_aa(double x, int dbl) {
    if (x < 1.0) return vitpe__cubic1(x, -0.5, dbl);
    if (x < 2.0) return vitpe__cubic2(x, -0.5, dbl);
    return 0.0;
}

/* Pillow's lanczos_filter: sinc(x) * sinc(x/3) on [-3, 3). */
VITPE_HD double vitpe__filter_lanczos3(double x, int dbl) {
    if (x >= 3.0) return 0.0;
    if (x == 0.0) return 1.0;
    {
        const double pi = 3.14159265358979323846;
        double a = x * pi, b = x * (pi / 3.0);
        return vitpe__r((sin(a) / a) * (sin(b) / b), dbl);
    }
}

#define VITPE__FILTER_OF(id, name, taps, filter, ...) case VITPE_MODE_##id: return filter(x, dbl);

/* The mode's filter at distance x (either sign). */
VITPE_HD double vitpe__mode_filter(int mode, double x, int dbl) {
    if (x < 0.0) x = -x;
    VITPE__ROW_CASE(VITPE__FILTER_OF)
    return 0.0;
}

/* Half-width of the filter window in input samples (Pillow's "support"). */
VITPE_HD double vitpe__aa_support(const vitpe_axis *ax, double scale, int dbl) {
    double half = vitpe__mode_support(ax->mode);
    return scale >= 1.0 ? vitpe__r(half * scale, dbl) : half;
}

/* -- Point samplers -------------------------------------------------------
 * The taps of an interpolation at source index r (input i at i, r already in
 * opmath), shared by the uniform mapping and by given sample positions. */

/* Linear, as ATen's: r < 0 is clamped to 0 by the caller's source index (or
 * by vitpe__taps_at); r past the last sample reads the last sample alone. */
VITPE_HD int64_t vitpe__linear_taps(double r, int64_t in, int64_t *start, double *w, int dbl) {
    double l1;
    int64_t i0 = vitpe__guard_index(r, in, &l1, dbl);
    *start = i0;
    if (i0 < in - 1) {
        if (w) { w[0] = vitpe__r(1.0 - l1, dbl); w[1] = l1; }
        return 2;
    }
    /* the last sample: both taps are i0, the weights add up */
    if (w) w[0] = vitpe__r(1.0 - l1, dbl) + l1;
    return 1;
}

/* HelperInterpCubic: taps i0-1 .. i0+2 clamped to the edge. */
VITPE_HD int64_t vitpe__cubic_taps(double r, int64_t in, int64_t *start, double *w, int dbl) {
    double t;
    int64_t i0 = vitpe__guard_index(r, in, &t, dbl);
    int64_t lo = vitpe__clamp64(i0 - 1, 0, in - 1), hi = vitpe__clamp64(i0 + 2, 0, in - 1);
    *start = lo;
    if (w) {
        const double A = -0.75;
        double c[4], x2 = vitpe__r(1.0 - t, dbl);
        c[0] = vitpe__cubic2(vitpe__r(t + 1.0, dbl), A, dbl);
        c[1] = vitpe__cubic1(t, A, dbl);
        c[2] = vitpe__cubic1(x2, A, dbl);
        c[3] = vitpe__cubic2(vitpe__r(x2 + 1.0, dbl), A, dbl);
        for (int64_t k = 0; k <= hi - lo; k++) w[k] = 0.0;
        /* clamped taps read the same sample: merge their weights */
        for (int j = 0; j < 4; j++) w[vitpe__clamp64(i0 - 1 + j, 0, in - 1) - lo] += c[j];
    }
    return hi - lo + 1;
}

/* The taps of ax's mode at a given sample position p (vitpe_axis.positions):
 * the uniform mapping's formulas with p in place of the source index, which
 * is what F.grid_sample(padding_mode="border", align_corners=True) computes
 * at p. The nearest modes take the sample nearest p, halves to even as
 * grid_sample's nearbyint: a position is a sample's coordinate, not the left
 * edge of a cell. The math runs in double whatever the data: there is no
 * ATen arithmetic to reproduce here, and float would round a position near
 * 40 to 4e-6, a weight error of that times the neighbours' difference. */
VITPE_HD int64_t vitpe__taps_at(const vitpe_axis *ax, double p, int64_t *start, double *w) {
    const int dbl = 1;
    const double r = p;
    switch (vitpe__mode_taps(ax->mode)) {
    case VITPE_TAPS_LINEAR: return vitpe__linear_taps(r < 0.0 ? 0.0 : r, ax->in_size, start, w, dbl);
    case VITPE_TAPS_CUBIC: return vitpe__cubic_taps(r, ax->in_size, start, w, dbl);
    default: /* NEAREST, NEAREST_EXACT: vitpe_axis_check refuses the others */
        *start = vitpe__clamp64((int64_t)rint(r), 0, ax->in_size - 1);
        if (w) w[0] = 1.0;
        return 1;
    }
}

/* An upper bound of count over all outputs of the axis. */
VITPE_HD int64_t vitpe__axis_width(const vitpe_axis *ax) {
    if (!ax->positions && vitpe__axis_is_copy(ax)) return 1;
    switch (vitpe__axis_taps_kind(ax)) {
    case VITPE_TAPS_NEAREST:
    case VITPE_TAPS_NEAREST_EXACT: return 1;
    case VITPE_TAPS_AREA: return ax->in_size / ax->out_size + 2;
    case VITPE_TAPS_LINEAR: return 2;
    case VITPE_TAPS_CUBIC: return 4;
    default: {
        int dbl = ax->opmath_double;
        double scale = vitpe__area_scale(ax, dbl);
        return (int64_t)ceil(vitpe__aa_support(ax, scale, dbl)) * 2 + 1;
    }
    }
}

/* Taps of output o: returns count, sets *start, and writes count weights to
 * w unless w is NULL (then only the window is computed). */
VITPE_HD int64_t vitpe__axis_taps(const vitpe_axis *ax, int64_t o, int64_t *start, double *w) {
    const int64_t in = ax->in_size, out = ax->out_size;
    const int dbl = ax->opmath_double;
    if (ax->positions) return vitpe__taps_at(ax, ax->positions[o], start, w);
    if (vitpe__axis_is_copy(ax)) {
        *start = o;
        if (w) w[0] = 1.0;
        return 1;
    }
    switch (vitpe__axis_taps_kind(ax)) {
    case VITPE_TAPS_NEAREST: { /* nearest_idx */
        int64_t i;
        if (out == 2 * in) i = o >> 1;
        else {
            float s = (float)vitpe__scales_value(ax, 0);
            i = vitpe__min64((int64_t)floorf((float)o * s), in - 1);
        }
        *start = i;
        if (w) w[0] = 1.0;
        return 1;
    }
    case VITPE_TAPS_NEAREST_EXACT: { /* nearest_exact_idx: (o + 0.5) * scale in double */
        float s = (float)vitpe__scales_value(ax, 0);
        *start = vitpe__min64((int64_t)floorf((float)(((double)o + 0.5) * (double)s)), in - 1);
        if (w) w[0] = 1.0;
        return 1;
    }
    case VITPE_TAPS_AREA: { /* adaptive_avg_pool: [floor(o*in/out), ceil((o+1)*in/out)) */
        int64_t s = (o * in) / out, e = ((o + 1) * in + out - 1) / out;
        *start = s;
        if (w)
            for (int64_t k = 0; k < e - s; k++) w[k] = 1.0 / (double)(e - s);
        return e - s;
    }
    case VITPE_TAPS_LINEAR: { /* compute_source_index_and_lambda */
        double scale = vitpe__area_scale(ax, dbl);
        return vitpe__linear_taps(vitpe__source_index(scale, o, ax->align_corners, 0, dbl), in, start, w, dbl);
    }
    case VITPE_TAPS_CUBIC: {
        double scale = vitpe__area_scale(ax, dbl);
        return vitpe__cubic_taps(vitpe__source_index(scale, o, ax->align_corners, 1, dbl), in, start, w, dbl);
    }
    default: break; /* VITPE_TAPS_FILTER */
    }
    { /* VITPE_TAPS_FILTER: Pillow's precompute_coeffs, as ATen's
         _compute_indices_min_size_weights_aa (align_corners only changes the
         scale); lanczos3 on torch >= 2.14 matches
         F.interpolate(mode="lanczos", antialias=True). */
        const int d = dbl;
        double scale = vitpe__area_scale(ax, d);
        double support = vitpe__aa_support(ax, scale, d);
        int64_t max_taps = (int64_t)ceil(support) * 2 + 1;
        double center = vitpe__r(scale * ((double)o + 0.5), d);
        double invscale = scale >= 1.0 ? vitpe__r(1.0 / scale, d) : 1.0;
        int64_t xmin = vitpe__max64((int64_t)(vitpe__r(center - support, d) + 0.5), 0);
        int64_t xsize = vitpe__min64((int64_t)(vitpe__r(center + support, d) + 0.5), in) - xmin;
        xsize = vitpe__clamp64(xsize, 0, max_taps);
        *start = xmin;
        if (w) {
            double total = 0.0;
            for (int64_t j = 0; j < xsize; j++) {
                double x = vitpe__r((double)(j + xmin) - center, d) + 0.5;
                w[j] = vitpe__mode_filter(ax->mode, vitpe__r(x * invscale, d), d);
                total = vitpe__r(total + w[j], d);
            }
            if (total != 0.0)
                for (int64_t j = 0; j < xsize; j++) w[j] = vitpe__r(w[j] / total, d);
        }
        return xsize;
    }
}

/* The adjoint of output->input taps: the outputs o in [*first, *first+count)
 * whose windows contain input i. Binary search over the monotone windows. */
VITPE_HD int64_t vitpe__axis_adjoint_range(const vitpe_axis *ax, int64_t i, int64_t *first) {
    int64_t lo = 0, hi = ax->out_size, s;
    while (lo < hi) { /* first o with window end > i */
        int64_t mid = lo + (hi - lo) / 2, c = vitpe__axis_taps(ax, mid, &s, 0);
        if (s + c > i) hi = mid;
        else lo = mid + 1;
    }
    *first = lo;
    hi = ax->out_size;
    while (lo < hi) { /* first o with window start > i */
        int64_t mid = lo + (hi - lo) / 2;
        vitpe__axis_taps(ax, mid, &s, 0);
        if (s > i) hi = mid;
        else lo = mid + 1;
    }
    return lo - *first;
}

#endif /* VITPE_TAPS_H */
