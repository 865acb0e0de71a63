/* vitpe_naive.c — the naive references of vitpe_cpu.c's passes.
 *
 *   out[b, P + (ot*Hout + oy)*Wout + ox, c] =
 *       sum_kt sum_ky sum_kx wt[kt] * wy[ky] * wx[kx] * inp[b, P + ((st+kt)*Hin + sy+ky)*Win + sx+kx, c]
 *
 * Direct N-D sums in double straight from the tap formulas (vitpe_taps.h):
 * no tables, no separable passes, no scratch rows, no stages. Slow on
 * purpose; the C tests hold the fast passes to them. The forward gathers;
 * the backward scatters (out -> inp), the literal transpose, into a double
 * grid that is rounded once, where the fast backward gathers over the
 * adjoint tables. A grid of rank 1 or 2 has T = 1 (and H = 1): the axes it
 * lacks contribute one tap of weight 1. Prefix and suffix tokens are copied
 * through by value.
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

/* The axes (T, H, W) of a grid of rank 1, 2 or 3, the missing ones 1 -> 1. */
static int vitpe__naive_axes(vitpe_axis ax[3], int rank, const vitpe_axis *axes, const vitpe_io *io,
                             int64_t width[3]) {
    int st;
    if (!axes || rank < 1 || rank > VITPE_MAX_RANK) return VITPE_EINVAL;
    for (int i = 0; i < 3 - rank; i++) {
        memset(&ax[i], 0, sizeof(ax[i]));
        ax[i].in_size = ax[i].out_size = 1;
        ax[i].mode = VITPE_MODE_NEAREST;
    }
    for (int i = 0; i < rank; i++) ax[3 - rank + i] = axes[i];
    for (int i = 0; i < 3; i++) {
        if ((st = vitpe_axis_check(&ax[i]))) return st;
        width[i] = vitpe__axis_width(&ax[i]);
    }
    return vitpe__io_check(io);
}

/* Copies prefix and suffix tokens of batch b by value. */
static void vitpe__naive_tokens(void *dst, const void *src, const vitpe_io *io, int64_t b, int64_t grid_src,
                                int64_t grid_dst) {
    const int64_t sb = b * io->in_batch_stride, db = b * io->out_batch_stride;
    for (int64_t p = 0; p < io->prefix + io->suffix; p++) {
        const int64_t ts = p < io->prefix ? p : p + grid_src, td = p < io->prefix ? p : p + grid_dst;
        for (int64_t c = 0; c < io->channels; c++)
            vitpe__store(dst, io->dtype, db + td * io->out_token_stride + c,
                         vitpe__load(src, io->dtype, sb + ts * io->in_token_stride + c));
    }
}

int vitpe_forward_naive_nd(void *out, const void *inp, int rank, const vitpe_axis *axes,
                           const vitpe_io *io) {
    vitpe_axis ax[3];
    int64_t width[3];
    int st = vitpe__naive_axes(ax, rank, axes, io, width);
    if (st) return st;
    double *wt = (double *)malloc((size_t)(width[0] + width[1] + width[2]) * sizeof(double)), *wy, *wx;
    if (!wt) return VITPE_ENOMEM;
    wy = wt + width[0];
    wx = wy + width[1];
    const int64_t C = io->channels, P = io->prefix;
    const int64_t Hin = ax[1].in_size, Win = ax[2].in_size, Hout = ax[1].out_size, Wout = ax[2].out_size;
    for (int64_t b = 0; b < io->batch; b++) {
        const int64_t ib = b * io->in_batch_stride, ob = b * io->out_batch_stride;
        vitpe__naive_tokens(out, inp, io, b, ax[0].in_size * Hin * Win, ax[0].out_size * Hout * Wout);
        for (int64_t ot = 0; ot < ax[0].out_size; ot++) {
            int64_t st0, nt = vitpe__axis_taps(&ax[0], ot, &st0, wt);
            for (int64_t oy = 0; oy < Hout; oy++) {
                int64_t sy, ny = vitpe__axis_taps(&ax[1], oy, &sy, wy);
                for (int64_t ox = 0; ox < Wout; ox++) {
                    int64_t sx, nx = vitpe__axis_taps(&ax[2], ox, &sx, wx);
                    const int64_t to = P + (ot * Hout + oy) * Wout + ox;
                    for (int64_t c = 0; c < C; c++) {
                        double acc = 0.0;
                        for (int64_t kt = 0; kt < nt; kt++)
                            for (int64_t ky = 0; ky < ny; ky++)
                                for (int64_t kx = 0; kx < nx; kx++) {
                                    const int64_t ti = P + ((st0 + kt) * Hin + sy + ky) * Win + sx + kx;
                                    acc += wt[kt] * wy[ky] * wx[kx] *
                                           vitpe__load(inp, io->dtype, ib + ti * io->in_token_stride + c);
                                }
                        vitpe__store(out, io->dtype, ob + to * io->out_token_stride + c, acc);
                    }
                }
            }
        }
    }
    free(wt);
    return VITPE_OK;
}

int vitpe_backward_naive_nd(void *dinp, const void *dout, int rank, const vitpe_axis *axes,
                            const vitpe_io *io) {
    vitpe_axis ax[3];
    int64_t width[3];
    size_t wbytes, grid;
    int st = vitpe__naive_axes(ax, rank, axes, io, width);
    if (st) return st;
    const int64_t C = io->channels, P = io->prefix;
    const int64_t Hin = ax[1].in_size, Win = ax[2].in_size, Hout = ax[1].out_size, Wout = ax[2].out_size;
    const int64_t grid_in = ax[0].in_size * Hin * Win;
    wbytes = (size_t)(width[0] + width[1] + width[2]) * sizeof(double);
    if ((uint64_t)grid_in > SIZE_MAX / sizeof(double) / ((size_t)C + 1)) return VITPE_EOVERFLOW;
    grid = (size_t)grid_in * (size_t)C; /* one batch's dinp grid, in double */
    if (grid > (SIZE_MAX - wbytes) / sizeof(double)) return VITPE_EOVERFLOW;
    double *wt = (double *)malloc(wbytes + grid * sizeof(double)), *wy, *wx, *acc;
    if (!wt) return VITPE_ENOMEM;
    wy = wt + width[0];
    wx = wy + width[1];
    acc = wx + width[2];
    for (int64_t b = 0; b < io->batch; b++) {
        /* io's "in" strides describe dout, "out" strides dinp */
        const int64_t gb = b * io->in_batch_stride, db = b * io->out_batch_stride;
        vitpe__naive_tokens(dinp, dout, io, b, ax[0].out_size * Hout * Wout, grid_in);
        memset(acc, 0, grid * sizeof(double));
        for (int64_t ot = 0; ot < ax[0].out_size; ot++) {
            int64_t st0, nt = vitpe__axis_taps(&ax[0], ot, &st0, wt);
            for (int64_t oy = 0; oy < Hout; oy++) {
                int64_t sy, ny = vitpe__axis_taps(&ax[1], oy, &sy, wy);
                for (int64_t ox = 0; ox < Wout; ox++) {
                    int64_t sx, nx = vitpe__axis_taps(&ax[2], ox, &sx, wx);
                    const int64_t to = P + (ot * Hout + oy) * Wout + ox;
                    for (int64_t c = 0; c < C; c++) {
                        double g = vitpe__load(dout, io->dtype, gb + to * io->in_token_stride + c);
                        for (int64_t kt = 0; kt < nt; kt++)
                            for (int64_t ky = 0; ky < ny; ky++)
                                for (int64_t kx = 0; kx < nx; kx++)
                                    acc[(((st0 + kt) * Hin + sy + ky) * Win + sx + kx) * C + c] +=
                                        wt[kt] * wy[ky] * wx[kx] * g;
                    }
                }
            }
        }
        for (int64_t t = 0; t < grid_in; t++)
            for (int64_t c = 0; c < C; c++)
                vitpe__store(dinp, io->dtype, db + (P + t) * io->out_token_stride + c, acc[t * C + c]);
    }
    free(wt);
    return VITPE_OK;
}

int vitpe_forward_naive(void *out, const void *inp, const vitpe_axis *h, const vitpe_axis *w,
                        const vitpe_io *io) {
    vitpe_axis axes[2];
    if (!h || !w) return VITPE_EINVAL;
    axes[0] = *h;
    axes[1] = *w;
    return vitpe_forward_naive_nd(out, inp, 2, axes, io);
}

int vitpe_backward_naive(void *dinp, const void *dout, const vitpe_axis *h, const vitpe_axis *w,
                         const vitpe_io *io) {
    vitpe_axis axes[2];
    if (!h || !w) return VITPE_EINVAL;
    axes[0] = *h;
    axes[1] = *w;
    return vitpe_backward_naive_nd(dinp, dout, 2, axes, io);
}
