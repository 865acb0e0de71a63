/* vitpe_plan.c — argument checks and the tap tables ("plan") of a resize.
 *
 * A plan holds, per axis (T, H, W; those a grid of rank 1 or 2 lacks are
 * 1 -> 1), the forward table (output -> input taps) and, for
 * the backward pass, the adjoint table (input -> output taps) with the very
 * same weights transposed. All tables live in one allocation whose size is
 * computed, with overflow checks, before the malloc (Pillow's Resample.c).
 * The tap formulas themselves are in vitpe_taps.h, shared with the GPU.
 */
#include <stdlib.h>
#include <string.h>

#include "vitpe.h"
#include "vitpe_taps.h"

const char *vitpe_status_str(int status) {
    switch (status) {
    case VITPE_OK: return "ok";
    case VITPE_EINVAL: return "invalid argument";
    case VITPE_ENOMEM: return "out of memory";
    case VITPE_EOVERFLOW: return "size overflow";
    case VITPE_EINTERNAL: return "internal error (inconsistent tap tables)";
    case VITPE_ECUDA: return "CUDA error";
    default: return "unknown status";
    }
}

#define VITPE__INFO_ROW(id, name, taps, filter, support, ac, aa, sf, same) \
    {name, ac, VITPE_ANTIALIAS_##aa, sf, VITPE_MODE_##id == VITPE_MODE_DEFAULT},
static const vitpe_mode_info vitpe__modes[VITPE_MODE_COUNT] = {VITPE_MODE_TABLE(VITPE__INFO_ROW)};
#undef VITPE__INFO_ROW

int vitpe_mode_get_info(int mode, vitpe_mode_info *info) {
    if (!info || mode < 0 || mode >= VITPE_MODE_COUNT) return VITPE_EINVAL;
    *info = vitpe__modes[mode];
    return VITPE_OK;
}

const char *vitpe_mode_name(int mode) {
    return mode >= 0 && mode < VITPE_MODE_COUNT ? vitpe__modes[mode].name : "unknown";
}

int vitpe_mode_from_name(const char *name) {
    if (!name) return -1;
    for (int m = 0; m < VITPE_MODE_COUNT; m++)
        if (strcmp(name, vitpe__modes[m].name) == 0) return m;
    return -1;
}

static const struct {
    const char *name;
    int rank, mode;
} vitpe__aliases[] = {
#define VITPE__ALIAS_ROW(alias, rank, id) {alias, rank, VITPE_MODE_##id},
    VITPE_MODE_ALIASES(VITPE__ALIAS_ROW)
#undef VITPE__ALIAS_ROW
};
#define VITPE__ALIAS_COUNT (sizeof vitpe__aliases / sizeof vitpe__aliases[0])

int vitpe_mode_lookup(const char *name, int rank) {
    int m = vitpe_mode_from_name(name);
    if (m >= 0 || !name) return m;
    for (size_t i = 0; i < VITPE__ALIAS_COUNT; i++)
        if (vitpe__aliases[i].rank == rank && strcmp(name, vitpe__aliases[i].name) == 0)
            return vitpe__aliases[i].mode;
    return -1;
}

int vitpe_mode_alias(int i, const char **name, int *rank, int *mode) {
    if (i < 0 || (size_t)i >= VITPE__ALIAS_COUNT || !name || !rank || !mode) return VITPE_EINVAL;
    *name = vitpe__aliases[i].name;
    *rank = vitpe__aliases[i].rank;
    *mode = vitpe__aliases[i].mode;
    return VITPE_OK;
}

int vitpe_mode_samples_at(int mode) {
    if (mode < 0 || mode >= VITPE_MODE_COUNT) return 0;
    switch (vitpe__mode_taps(mode)) {
    case VITPE_TAPS_NEAREST:
    case VITPE_TAPS_NEAREST_EXACT:
    case VITPE_TAPS_LINEAR:
    case VITPE_TAPS_CUBIC: return 1;
    default: return 0;
    }
}

/* Given sample positions: a point sampler, no option that presumes the
 * uniform mapping, and positions the tap math can take. Non-decreasing,
 * because the adjoint tables rest on monotone windows; bounded, because the
 * tap math rounds a position to float and floors it to int64. */
static int vitpe__positions_check(const vitpe_axis *ax) {
    double prev = -INFINITY;
    if (!vitpe_mode_samples_at(ax->mode)) return VITPE_EINVAL;
    if (ax->align_corners || ax->antialias || ax->scale_factor != 0.0) return VITPE_EINVAL;
    for (int64_t o = 0; o < ax->out_size; o++) {
        const double p = ax->positions[o];
        if (!(p >= -(double)VITPE_MAX_AXIS && p <= (double)VITPE_MAX_AXIS)) return VITPE_EINVAL; /* NaN too */
        if (p < prev) return VITPE_EINVAL;
        prev = p;
    }
    return VITPE_OK;
}

int vitpe_axis_check(const vitpe_axis *ax) {
    const vitpe_mode_info *mode;
    if (!ax) return VITPE_EINVAL;
    if (ax->in_size < 1 || ax->out_size < 1) return VITPE_EINVAL;
    if (ax->in_size > VITPE_MAX_AXIS || ax->out_size > VITPE_MAX_AXIS) return VITPE_EOVERFLOW;
    if (ax->mode < 0 || ax->mode >= VITPE_MODE_COUNT) return VITPE_EINVAL;
    mode = &vitpe__modes[ax->mode];
    if (ax->align_corners && !mode->align_corners) return VITPE_EINVAL;
    if (ax->antialias && mode->antialias == VITPE_ANTIALIAS_NEVER) return VITPE_EINVAL;
    if (!(ax->scale_factor >= 0.0) || ax->scale_factor > 1e300) return VITPE_EINVAL; /* NaN too */
    if (ax->scale_factor > 0.0 && !mode->scale_factor) return VITPE_EINVAL;
    /* F.interpolate makes floor(in * scale_factor) outputs; a scale_factor
     * that disagrees maps outputs past the input (or, tiny, to an infinite
     * scale in float), where the tap math leaves int64 and the tables break */
    if (ax->scale_factor > 0.0 && floor((double)ax->in_size * ax->scale_factor) != (double)ax->out_size)
        return VITPE_EINVAL;
    return ax->positions ? vitpe__positions_check(ax) : VITPE_OK;
}

/* a*b and a+b on size_t, failing instead of wrapping */
static int vitpe__mul(size_t *r, size_t a, size_t b) {
    if (a != 0 && b > SIZE_MAX / a) return VITPE_EOVERFLOW;
    *r = a * b;
    return VITPE_OK;
}
static int vitpe__add(size_t *r, size_t a, size_t b) {
    if (b > SIZE_MAX - a) return VITPE_EOVERFLOW;
    *r = a + b;
    return VITPE_OK;
}

/* Appends a table of n rows x width weights to the layout. */
static int vitpe__layout_table(vitpe_plan_layout *L, int t, int64_t n_out, int64_t n_in,
                               int64_t width) {
    size_t idx_bytes, w_bytes;
    int st;
    L->n_out[t] = n_out;
    L->n_in[t] = n_in;
    L->width[t] = width;
    if ((st = vitpe__mul(&idx_bytes, (size_t)n_out, sizeof(int64_t)))) return st;
    if ((st = vitpe__mul(&w_bytes, (size_t)n_out, (size_t)width))) return st;
    if ((st = vitpe__mul(&w_bytes, w_bytes, sizeof(double)))) return st;
    L->start_offset[t] = L->bytes;
    if ((st = vitpe__add(&L->bytes, L->bytes, idx_bytes))) return st;
    L->count_offset[t] = L->bytes;
    if ((st = vitpe__add(&L->bytes, L->bytes, idx_bytes))) return st;
    L->weight_offset[t] = L->bytes;
    return vitpe__add(&L->bytes, L->bytes, w_bytes);
}

/* The widest adjoint window of an axis: the most outputs whose windows hold
 * one input. Windows are monotone (start and end never decrease with o), so
 * one sweep over the inputs with two output pointers finds every range:
 *   outputs o < a have start(o) <= i, outputs o < b have end(o) <= i,
 * and input i is read by outputs [b, a) -- the range the binary search in
 * vitpe__axis_adjoint_range returns, at O(in + out) window evaluations
 * instead of O(in log out) (with it, a DINOv2 plan with adjoint tables
 * takes 8 us instead of 19 on the 2-core dev machine). */
static int64_t vitpe__adjoint_width(const vitpe_axis *ax) {
    int64_t width = 0, a = 0, b = 0, s, c;
    for (int64_t i = 0; i < ax->in_size; i++) {
        while (a < ax->out_size) {
            vitpe__axis_taps(ax, a, &s, 0);
            if (s > i) break;
            a++;
        }
        while (b < a) {
            c = vitpe__axis_taps(ax, b, &s, 0);
            if (s + c > i) break;
            b++;
        }
        if (a - b > width) width = a - b;
    }
    return width;
}

/* The three axes (T, H, W) of a grid of rank 1, 2 or 3; the axes it lacks
 * are 1 -> 1 nearest, whose one tap of weight 1 is a copy in any mode. */
static int vitpe__grid_axes(vitpe_axis ax[3], int rank, const vitpe_axis *axes) {
    if (!axes || rank < 1 || rank > VITPE_MAX_RANK) return VITPE_EINVAL;
    for (int i = 0; i < 3 - rank; i++) {
        memset(&ax[i], 0, sizeof(ax[i]));
        ax[i].in_size = ax[i].out_size = 1;
        ax[i].mode = VITPE_MODE_NEAREST;
        ax[i].opmath_double = axes[rank - 1].opmath_double;
    }
    for (int i = 0; i < rank; i++) ax[3 - rank + i] = axes[i];
    return VITPE_OK;
}

int vitpe_plan_measure_nd(vitpe_plan_layout *L, int rank, const vitpe_axis *axes, int with_adjoint) {
    vitpe_axis ax[3]; /* T, H, W */
    int st;
    if (!L) return VITPE_EINVAL;
    memset(L, 0, sizeof(*L));
    if ((st = vitpe__grid_axes(ax, rank, axes))) return st;
    for (int i = 0; i < 3; i++)
        if ((st = vitpe_axis_check(&ax[i]))) return st;
    L->with_adjoint = with_adjoint ? 1 : 0;
    /* tables 0-3 where a plan of rank 2 always had them; T's after */
    if ((st = vitpe__layout_table(L, 0, ax[1].out_size, ax[1].in_size, vitpe__axis_width(&ax[1]))))
        return st;
    if ((st = vitpe__layout_table(L, 1, ax[2].out_size, ax[2].in_size, vitpe__axis_width(&ax[2]))))
        return st;
    if (with_adjoint) {
        if ((st = vitpe__layout_table(L, 2, ax[1].in_size, ax[1].out_size, vitpe__adjoint_width(&ax[1]))))
            return st;
        if ((st = vitpe__layout_table(L, 3, ax[2].in_size, ax[2].out_size, vitpe__adjoint_width(&ax[2]))))
            return st;
    }
    if ((st = vitpe__layout_table(L, 4, ax[0].out_size, ax[0].in_size, vitpe__axis_width(&ax[0]))))
        return st;
    if (with_adjoint &&
        (st = vitpe__layout_table(L, 5, ax[0].in_size, ax[0].out_size, vitpe__adjoint_width(&ax[0]))))
        return st;
    return VITPE_OK;
}

int vitpe_plan_measure(vitpe_plan_layout *L, const vitpe_axis *h, const vitpe_axis *w,
                       int with_adjoint) {
    vitpe_axis axes[2];
    if (!L) return VITPE_EINVAL;
    if (!h || !w) {
        memset(L, 0, sizeof(*L));
        return VITPE_EINVAL;
    }
    axes[0] = *h;
    axes[1] = *w;
    return vitpe_plan_measure_nd(L, 2, axes, with_adjoint);
}

static vitpe_taps vitpe__view(void *buffer, const vitpe_plan_layout *L, int t) {
    vitpe_taps v;
    char *base = (char *)buffer;
    v.n_out = L->n_out[t];
    v.n_in = L->n_in[t];
    v.width = L->width[t];
    v.start = (const int64_t *)(base + L->start_offset[t]);
    v.count = (const int64_t *)(base + L->count_offset[t]);
    v.weight = (const double *)(base + L->weight_offset[t]);
    return v;
}

static int vitpe__fill_forward(void *buffer, const vitpe_plan_layout *L, int t,
                               const vitpe_axis *ax) {
    char *base = (char *)buffer;
    int64_t *start = (int64_t *)(base + L->start_offset[t]);
    int64_t *count = (int64_t *)(base + L->count_offset[t]);
    double *weight = (double *)(base + L->weight_offset[t]);
    const int64_t width = L->width[t];
    memset(weight, 0, (size_t)L->n_out[t] * (size_t)width * sizeof(double));
    for (int64_t o = 0; o < L->n_out[t]; o++) {
        count[o] = vitpe__axis_taps(ax, o, &start[o], weight + o * width);
        if (count[o] < 0 || count[o] > width || start[o] < 0 || start[o] + count[o] > ax->in_size)
            return VITPE_EINTERNAL;
    }
    return VITPE_OK;
}

/* Transposes the forward table fwd into slot t: the same two-pointer sweep
 * as vitpe__adjoint_width, over the stored windows. Checks that every
 * forward tap lands in exactly one adjoint slot. */
static int vitpe__fill_adjoint(void *buffer, const vitpe_plan_layout *L, int t, vitpe_taps fwd) {
    char *base = (char *)buffer;
    int64_t *start = (int64_t *)(base + L->start_offset[t]);
    int64_t *count = (int64_t *)(base + L->count_offset[t]);
    double *weight = (double *)(base + L->weight_offset[t]);
    const int64_t width = L->width[t];
    int64_t placed = 0, total = 0, a = 0, b = 0;
    memset(weight, 0, (size_t)L->n_out[t] * (size_t)width * sizeof(double));
    for (int64_t i = 0; i < fwd.n_in; i++) {
        while (a < fwd.n_out && fwd.start[a] <= i) a++;
        while (b < a && fwd.start[b] + fwd.count[b] <= i) b++;
        start[i] = b;
        count[i] = a - b;
        if (count[i] > width) return VITPE_EINTERNAL;
        for (int64_t k = 0; k < count[i]; k++) {
            int64_t o = b + k, j = i - fwd.start[o];
            if (j >= 0 && j < fwd.count[o]) {
                weight[i * width + k] = fwd.weight[o * fwd.width + j];
                placed++;
            }
        }
    }
    for (int64_t o = 0; o < fwd.n_out; o++) total += fwd.count[o];
    return placed == total ? VITPE_OK : VITPE_EINTERNAL;
}

int vitpe_plan_create_nd(vitpe_plan **out, int rank, const vitpe_axis *axes, int with_adjoint) {
    vitpe_plan *plan;
    vitpe_plan_layout L;
    vitpe_axis ax[3];
    size_t header, bytes;
    int st;
    if (!out) return VITPE_EINVAL;
    *out = NULL;
    if ((st = vitpe_plan_measure_nd(&L, rank, axes, with_adjoint))) return st;
    vitpe__grid_axes(ax, rank, axes); /* checked by the measure */
    /* one allocation: the struct, then the tables (8-byte aligned after it),
     * then the plan's own copy of any sample positions, which its axes point
     * to: a cached plan outlives the caller's arrays */
    header = (sizeof(vitpe_plan) + 15) & ~(size_t)15;
    if ((st = vitpe__add(&bytes, header, L.bytes))) return st;
    for (int i = 0; i < 3; i++) {
        size_t n;
        if (!ax[i].positions) continue;
        if ((st = vitpe__mul(&n, (size_t)ax[i].out_size, sizeof(double))) || (st = vitpe__add(&bytes, bytes, n)))
            return st;
    }
    plan = (vitpe_plan *)malloc(bytes); /* malloc check ok, overflow checked above */
    if (!plan) return VITPE_ENOMEM;
    memset(plan, 0, sizeof(*plan));
    plan->rank = rank;
    {
        double *copy = (double *)((char *)plan + header + L.bytes);
        for (int i = 0; i < 3; i++) {
            if (!ax[i].positions) continue;
            memcpy(copy, ax[i].positions, (size_t)ax[i].out_size * sizeof(double));
            ax[i].positions = copy;
            copy += ax[i].out_size;
        }
    }
    plan->t = ax[0];
    plan->h = ax[1];
    plan->w = ax[2];
    plan->layout = L;
    plan->buffer = (char *)plan + header;
    if ((st = vitpe__fill_forward(plan->buffer, &L, 0, &plan->h)) ||
        (st = vitpe__fill_forward(plan->buffer, &L, 1, &plan->w)) ||
        (st = vitpe__fill_forward(plan->buffer, &L, 4, &plan->t)))
        goto fail;
    plan->fwd_h = vitpe__view(plan->buffer, &L, 0);
    plan->fwd_w = vitpe__view(plan->buffer, &L, 1);
    plan->fwd_t = vitpe__view(plan->buffer, &L, 4);
    if (with_adjoint) {
        if ((st = vitpe__fill_adjoint(plan->buffer, &L, 2, plan->fwd_h)) ||
            (st = vitpe__fill_adjoint(plan->buffer, &L, 3, plan->fwd_w)) ||
            (st = vitpe__fill_adjoint(plan->buffer, &L, 5, plan->fwd_t)))
            goto fail;
        plan->adj_h = vitpe__view(plan->buffer, &L, 2);
        plan->adj_w = vitpe__view(plan->buffer, &L, 3);
        plan->adj_t = vitpe__view(plan->buffer, &L, 5);
    }
    *out = plan;
    return VITPE_OK;
fail:
    free(plan);
    return st;
}

int vitpe_plan_create(vitpe_plan **out, const vitpe_axis *h, const vitpe_axis *w,
                      int with_adjoint) {
    vitpe_axis axes[2];
    if (!out) return VITPE_EINVAL;
    *out = NULL;
    if (!h || !w) return VITPE_EINVAL;
    axes[0] = *h;
    axes[1] = *w;
    return vitpe_plan_create_nd(out, 2, axes, with_adjoint);
}

void vitpe_plan_destroy(vitpe_plan *plan) { free(plan); }
