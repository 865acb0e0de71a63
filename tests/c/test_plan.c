/* test_plan.c — the plan's tap tables: windows in range and monotone,
 * unused slots zero, adjoint tables exactly the transpose of the forward
 * tables; lanczos3's antialias flag and area's scale_factor change nothing.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_harness.h"

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

void check_plan(const vitpe_plan *plan, const vitpe_axis *h, const vitpe_axis *w) {
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
void check_equivalent_plans(const vitpe_plan *plan, const tcase *tc) {
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
