/* vitpe_naive.c — the naive references of vitpe_cpu.c's passes.
 *
 *   out[b, P + oy*Wout + ox, c] = sum_ky sum_kx wy[ky] * wx[kx] * inp[b, P + (sy+ky)*Win + sx+kx, c]
 *
 * Direct 2-D sums in double straight from the tap formulas (vitpe_taps.h):
 * no tables, no separable passes, no scratch rows. Slow on purpose; the C
 * tests hold the fast passes to them. The forward gathers; the backward
 * scatters (out -> inp), the literal transpose, into a double grid that is
 * rounded once, where the fast backward gathers over the adjoint tables.
 * Prefix tokens are copied through by value.
 */
#include <stdlib.h>
#include <string.h>

#include "vitpe.h"
#include "vitpe_taps.h"
#include "vitpe_convert.h"

static double vitpe__load(const void *p, int dtype, int64_t i) {
    switch (dtype) {
    case VITPE_F32: return ((const float *)p)[i];
    case VITPE_F64: return ((const double *)p)[i];
    case VITPE_F16: return vitpe__f16_to_f32(((const uint16_t *)p)[i]);
    default: return vitpe__bf16_to_f32(((const uint16_t *)p)[i]);
    }
}

static void vitpe__store(void *p, int dtype, int64_t i, double v) {
    switch (dtype) {
    case VITPE_F32: ((float *)p)[i] = (float)v; break;
    case VITPE_F64: ((double *)p)[i] = v; break;
    case VITPE_F16: ((uint16_t *)p)[i] = vitpe__f32_to_f16((float)v); break;
    default: ((uint16_t *)p)[i] = vitpe__f32_to_bf16((float)v); break;
    }
}

static int vitpe__naive_check(const vitpe_axis *h, const vitpe_axis *w, const vitpe_io *io,
                              size_t *wbytes) {
    int st;
    if ((st = vitpe_axis_check(h)) || (st = vitpe_axis_check(w)) || (st = vitpe__io_check(io)))
        return st;
    *wbytes = (size_t)(vitpe__axis_width(h) + vitpe__axis_width(w)) * sizeof(double);
    return VITPE_OK;
}

int vitpe_forward_naive(void *out, const void *inp, const vitpe_axis *h, const vitpe_axis *w,
                        const vitpe_io *io) {
    size_t wbytes;
    int st = vitpe__naive_check(h, w, io, &wbytes);
    if (st) return st;
    double *wy = (double *)malloc(wbytes), *wx;
    if (!wy) return VITPE_ENOMEM;
    wx = wy + vitpe__axis_width(h);
    const int64_t C = io->channels, P = io->prefix, Win = w->in_size, Wout = w->out_size;
    for (int64_t b = 0; b < io->batch; b++) {
        const int64_t ib = b * io->in_batch_stride, ob = b * io->out_batch_stride;
        for (int64_t p = 0; p < P; p++)
            for (int64_t c = 0; c < C; c++)
                vitpe__store(out, io->dtype, ob + p * io->out_token_stride + c,
                             vitpe__load(inp, io->dtype, ib + p * io->in_token_stride + c));
        for (int64_t oy = 0; oy < h->out_size; oy++) {
            int64_t sy, ny = vitpe__axis_taps(h, oy, &sy, wy);
            for (int64_t ox = 0; ox < Wout; ox++) {
                int64_t sx, nx = vitpe__axis_taps(w, ox, &sx, wx);
                for (int64_t c = 0; c < C; c++) {
                    double acc = 0.0;
                    for (int64_t ky = 0; ky < ny; ky++)
                        for (int64_t kx = 0; kx < nx; kx++)
                            acc += wy[ky] * wx[kx] *
                                   vitpe__load(inp, io->dtype,
                                               ib + (P + (sy + ky) * Win + sx + kx) * io->in_token_stride + c);
                    vitpe__store(out, io->dtype, ob + (P + oy * Wout + ox) * io->out_token_stride + c, acc);
                }
            }
        }
    }
    free(wy);
    return VITPE_OK;
}

int vitpe_backward_naive(void *dinp, const void *dout, const vitpe_axis *h, const vitpe_axis *w,
                         const vitpe_io *io) {
    size_t wbytes, grid;
    int st = vitpe__naive_check(h, w, io, &wbytes);
    if (st) return st;
    const int64_t C = io->channels, P = io->prefix, Win = w->in_size, Wout = w->out_size;
    grid = (size_t)(h->in_size * Win) * (size_t)C; /* one batch's dinp grid, in double */
    if (grid > (SIZE_MAX - wbytes) / sizeof(double)) return VITPE_EOVERFLOW;
    double *wy = (double *)malloc(wbytes + grid * sizeof(double)), *wx, *acc;
    if (!wy) return VITPE_ENOMEM;
    wx = wy + vitpe__axis_width(h);
    acc = wx + vitpe__axis_width(w);
    for (int64_t b = 0; b < io->batch; b++) {
        /* io's "in" strides describe dout, "out" strides dinp */
        const int64_t gb = b * io->in_batch_stride, db = b * io->out_batch_stride;
        for (int64_t p = 0; p < P; p++)
            for (int64_t c = 0; c < C; c++)
                vitpe__store(dinp, io->dtype, db + p * io->out_token_stride + c,
                             vitpe__load(dout, io->dtype, gb + p * io->in_token_stride + c));
        memset(acc, 0, grid * sizeof(double));
        for (int64_t oy = 0; oy < h->out_size; oy++) {
            int64_t sy, ny = vitpe__axis_taps(h, oy, &sy, wy);
            for (int64_t ox = 0; ox < Wout; ox++) {
                int64_t sx, nx = vitpe__axis_taps(w, ox, &sx, wx);
                for (int64_t c = 0; c < C; c++) {
                    double g = vitpe__load(dout, io->dtype, gb + (P + oy * Wout + ox) * io->in_token_stride + c);
                    for (int64_t ky = 0; ky < ny; ky++)
                        for (int64_t kx = 0; kx < nx; kx++)
                            acc[((sy + ky) * Win + sx + kx) * C + c] += wy[ky] * wx[kx] * g;
                }
            }
        }
        for (int64_t t = 0; t < h->in_size * Win; t++)
            for (int64_t c = 0; c < C; c++)
                vitpe__store(dinp, io->dtype, db + (P + t) * io->out_token_stride + c, acc[t * C + c]);
    }
    free(wy);
    return VITPE_OK;
}
