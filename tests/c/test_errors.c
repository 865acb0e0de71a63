/* test_errors.c — the API's contract on bad input: invalid axes, sizes over
 * the limit, bad io, bad row ranges, backward without adjoint tables,
 * status/mode strings, and (last, as UBSan aborts on it) a batch whose row
 * count overflows int64. A refused call writes nothing.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_harness.h"

/* ------------------------------------------------------------------------
 * Errors */

void errors(void) {
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
        {"mode VITPE_MODE_COUNT", 4, 4, VITPE_MODE_COUNT, 0, 0, 0, VITPE_EINVAL},
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
           one that does not maps outputs past the input, where the taps leave int64 (UB) */
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
            vitpe_io io = {VITPE_F32, 1, 0, 1, 0, 1, 0, 1, 0};
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
        for (int m = 0; m < (int)(sizeof names / sizeof names[0]); m++)
            record(!strcmp(vitpe_mode_name(m), names[m]), "errors", "vitpe_mode_name(%d) = \"%s\", want \"%s\"", m,
                   vitpe_mode_name(m), names[m]);
        record(!strcmp(vitpe_mode_name(VITPE_MODE_COUNT), "unknown") && !strcmp(vitpe_mode_name(-1), "unknown"), "errors",
               "vitpe_mode_name of an invalid mode");
    }
}

/* A batch so large that batch * rows overflows int64 must give an error,
 * not undefined behaviour (UBSan aborts the program here if it does: this
 * runs last so that every other check has reported first). */
void batch_overflow(void) {
    /* H 4 -> 6, W 4 -> 6, C = 1: batch * 6 (forward rows) and batch * 4
       (backward rows) both overflow; the row range [0, 1) itself is fine */
    vitpe_axis h = make_axis(4, 6, VITPE_MODE_BILINEAR, 0, 0, VITPE_F32, 0), w = h;
    vitpe_plan *plan = NULL;
    vitpe_io fio = {VITPE_F32, INT64_MAX / 2, 0, 1, 0, 1, 36, 1, 0}; /* inp broadcast, 16 tokens */
    vitpe_io bio = {VITPE_F32, INT64_MAX / 2, 0, 1, 0, 1, 16, 1, 0}; /* dout broadcast, 36 tokens */
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
