/* vitpe.h — resize Vision Transformer position embeddings, token-major, in C.
 *
 * The one public header of vitpe's kernels. No torch, no CUDA types: the CUDA
 * stream is passed as void*. Every call returns a vitpe_status; nothing prints
 * or exits.
 *
 * Shapes (B = batch of tables, P = prefix tokens, S = suffix tokens,
 * C = channels), for a grid of rank 3 (Tin, Hin, Win) -> (Tout, Hout, Wout):
 *   in  (B, P + Tin*Hin*Win    + S, C)  any batch/token strides, channel stride 1
 *   out (B, P + Tout*Hout*Wout + S, C)  any batch/token strides, channel stride 1
 * Grid tokens are row-major, the last axis fastest (token P + (t*H + y)*W + x),
 * the order ViTs flatten patches. A grid of rank 2 is (H, W) (T = 1), of rank
 * 1 (W) (T = H = 1). The P prefix tokens (class, distillation, registers) and
 * the S suffix tokens (BEiT's extra relative-position rows) are copied unchanged.
 *
 * How a resize runs (Pillow's Resample.c, stb_image_resize's samplers):
 *   1. plan: per axis (T, H, W), per output index, a tap table {start, count,
 *      weights}; for the backward pass also the transposed ("adjoint")
 *      tables, which have the same form with inputs and outputs swapped. An
 *      axis a grid of lower rank lacks is 1 -> 1: one tap of weight 1.
 *   2. passes: per output row, an H pass into a scratch row, then a W pass,
 *      with the channel index innermost (the layout ViT tables already have),
 *      over each T slice; then, where the T axis is resized, a T pass whose
 *      channels are a whole (Hout, Wout, C) slab: a second stage, after
 *      which the slabs, kept in the accumulator type (float, double for
 *      float64) in between, are rounded once, as a 2-D result is.
 * Backward is the forward machinery run over the adjoint tables, in the
 * reverse order (T pass, then H and W passes): a gather, so every gradient
 * element is written once, by one thread, in a fixed order (deterministic,
 * no atomics). Backward writes dinp with "=", never "+=".
 *
 * Numerics follow F.interpolate (ATen's CPU kernels): indices and weights are
 * computed in float for float32/float16/bfloat16 data (ATen's opmath) and in
 * double for float64; data accumulate in float (double for float64) and are
 * rounded once, on store.
 */
#ifndef VITPE_H
#define VITPE_H

#include <stddef.h>
#include <stdint.h>

#include "vitpe_modes.h" /* vitpe_mode: the one table of modes */

#ifdef __cplusplus
extern "C" {
#endif

typedef enum vitpe_status {
    VITPE_OK = 0,
    VITPE_EINVAL = 1,    /* an argument is out of its domain */
    VITPE_ENOMEM = 2,    /* malloc failed */
    VITPE_EOVERFLOW = 3, /* a size does not fit the index or byte arithmetic */
    VITPE_EINTERNAL = 4, /* a table invariant broke: a bug, please report */
    VITPE_ECUDA = 5      /* a CUDA runtime call failed */
} vitpe_status;

typedef enum vitpe_dtype {
    VITPE_F32 = 0,
    VITPE_F64 = 1,
    VITPE_F16 = 2, /* IEEE binary16, stored as uint16_t */
    VITPE_BF16 = 3 /* bfloat16, stored as uint16_t */
} vitpe_dtype;

/* Grids of rank 1, 2 and 3. */
#define VITPE_MAX_RANK 3

/* The longest grid side, in or out: beyond it ATen's float index math (which
 * the kernels reproduce) can no longer address every token exactly. */
#define VITPE_MAX_AXIS ((int64_t)1 << 24)

/* One axis of a resize. */
typedef struct vitpe_axis {
    int64_t in_size, out_size; /* >= 1 */
    int32_t mode;              /* vitpe_mode */
    int32_t align_corners;     /* 0/1; 1 only where the mode accepts it */
    int32_t antialias;         /* 0/1; 1 only where the mode accepts it */
    int32_t opmath_double;     /* 1: index/weight math in double (float64 data), 0: in float */
    double scale_factor;       /* > 0: the user's F.interpolate scale_factor for this axis,
                                  used for the coordinate mapping (recompute_scale_factor=False);
                                  it must give this axis's sizes, floor(in_size * scale_factor)
                                  == out_size, as F.interpolate's does (else VITPE_EINVAL);
                                  0: none, the mapping uses in_size / out_size */
    const double *positions;   /* NULL: the mode's uniform mapping. Else out_size sample
                                  positions in host memory, in input units (input i sits at
                                  i): output o is the mode's interpolation at positions[o]
                                  (BEiT's geometric-progression resize samples a table so).
                                  Finite, non-decreasing, |p| <= VITPE_MAX_AXIS; only for
                                  the point samplers (vitpe_mode_samples_at), without
                                  align_corners, antialias or scale_factor. Outside
                                  [0, in_size-1] the edge sample is repeated: at each p,
                                  F.grid_sample(padding_mode="border", align_corners=True)'s
                                  value (nearest: halves to even), the tap math in double
                                  whatever opmath_double says. A plan copies
                                  them; the caller's array need only live through the call
                                  that is given it. */
} vitpe_axis;

/* Tap table of one axis: output o reads inputs start[o] .. start[o]+count[o]-1
 * with weights weight[o*width + k]; slots k >= count[o] are zero. */
typedef struct vitpe_taps {
    int64_t n_out, n_in, width;
    const int64_t *start, *count;
    const double *weight;
} vitpe_taps;

/* Where each table lives inside one plan buffer (host or device memory).
 * Index 0 = H forward, 1 = W forward, 2 = H adjoint, 3 = W adjoint,
 * 4 = T forward, 5 = T adjoint (the adjoint tables only with_adjoint). */
#define VITPE_PLAN_TABLES 6
typedef struct vitpe_plan_layout {
    int64_t n_out[VITPE_PLAN_TABLES], n_in[VITPE_PLAN_TABLES], width[VITPE_PLAN_TABLES];
    size_t start_offset[VITPE_PLAN_TABLES], count_offset[VITPE_PLAN_TABLES],
        weight_offset[VITPE_PLAN_TABLES];
    size_t bytes;
    int32_t with_adjoint;
} vitpe_plan_layout;

typedef struct vitpe_plan {
    int32_t rank;                   /* 1, 2 or 3: the grid's */
    vitpe_axis t, h, w;             /* the axes a lower rank lacks are 1 -> 1 nearest (a copy) */
    vitpe_plan_layout layout;
    vitpe_taps fwd_t, fwd_h, fwd_w; /* out index -> input taps */
    vitpe_taps adj_t, adj_h, adj_w; /* input index -> output taps (only with_adjoint) */
    void *buffer;                   /* the plan's one allocation */
} vitpe_plan;

/* The memory layout of the tensors. Strides are in elements. */
typedef struct vitpe_io {
    int32_t dtype;                               /* vitpe_dtype */
    int64_t batch, prefix, channels;             /* B, P, C */
    int64_t in_batch_stride, in_token_stride;    /* the tensor read */
    int64_t out_batch_stride, out_token_stride;  /* the tensor written */
    int64_t suffix;                              /* S tokens after the grid, copied as the prefix */
} vitpe_io;

const char *vitpe_status_str(int status);

/* What a mode accepts, from its row of VITPE_MODE_TABLE. */
typedef struct vitpe_mode_info {
    const char *name;
    int32_t align_corners; /* 1: accepts align_corners=1 */
    int32_t antialias;     /* vitpe_antialias: NEVER, OPTIONAL or ALWAYS */
    int32_t scale_factor;  /* 1: accepts a scale_factor */
    int32_t is_default;    /* 1: VITPE_MODE_DEFAULT */
} vitpe_mode_info;

/* Fills *info for mode 0 .. VITPE_MODE_COUNT-1; VITPE_EINVAL for others. */
int vitpe_mode_get_info(int mode, vitpe_mode_info *info);
/* The mode's name, or "unknown". */
const char *vitpe_mode_name(int mode);
/* The mode called `name`, or -1 where none is. */
int vitpe_mode_from_name(const char *name);
/* The mode called `name` on a grid of rank `rank`: a table name (any rank)
 * or one of F.interpolate's names for that rank (VITPE_MODE_ALIASES:
 * "linear" at rank 1, "trilinear" at rank 3); -1 where none is. */
int vitpe_mode_lookup(const char *name, int rank);
/* Alias i (0, 1, ...): its name, the rank it belongs to and its mode;
 * VITPE_EINVAL past the last. */
int vitpe_mode_alias(int i, const char **name, int *rank, int *mode);

/* 1 where `mode` can sample at given positions (vitpe_axis.positions): the
 * modes that interpolate at a point (nearest, nearest-exact: the sample
 * nearest the position; bilinear; bicubic), not those that average a window
 * whose width comes from the scale (area, antialiased filters). */
int vitpe_mode_samples_at(int mode);

/* Checks one axis: sizes >= 1, flags the mode accepts, scale_factor 0 or one
 * that gives out_size (as F.interpolate), positions as vitpe_axis says. */
int vitpe_axis_check(const vitpe_axis *axis);

/* Computes table widths and byte offsets of a plan for a grid of rank 1, 2
 * or 3 whose axes are axes[0 .. rank-1], outermost first ((W), (H, W) or
 * (T, H, W)); no allocation. */
int vitpe_plan_measure_nd(vitpe_plan_layout *layout, int rank, const vitpe_axis *axes,
                          int with_adjoint);
/* Measures, makes the plan's one allocation, fills the tables on the host. */
int vitpe_plan_create_nd(vitpe_plan **plan, int rank, const vitpe_axis *axes, int with_adjoint);
/* The same for a grid of rank 2: axes (h, w). */
int vitpe_plan_measure(vitpe_plan_layout *layout, const vitpe_axis *h, const vitpe_axis *w,
                       int with_adjoint);
int vitpe_plan_create(vitpe_plan **plan, const vitpe_axis *h, const vitpe_axis *w,
                      int with_adjoint);
void vitpe_plan_destroy(vitpe_plan *plan);

/* How a CPU pass runs: in `count` stages, 1, or 2 where a plan of rank 3
 * resizes its T axis and H or W as well (forward: H and W passes per T slice,
 * then the T pass; backward: the reverse). Stage s has rows[s] work items
 * (output grid rows of the stage); every row of stage 0 must be done before
 * any row of stage 1 starts. The stages share a workspace of
 * workspace_bytes (the intermediate slabs, in the accumulator type; 0 with
 * one stage), each worker has its own scratch (vitpe_scratch_bytes). */
typedef struct vitpe_stages {
    int32_t count;
    int64_t rows[2];
    size_t workspace_bytes;
} vitpe_stages;
int vitpe_cpu_stages(vitpe_stages *stages, const vitpe_plan *plan, const vitpe_io *io, int backward);

/* Bytes of scratch one worker of vitpe_{forward,backward}_cpu needs. */
int vitpe_scratch_bytes(size_t *bytes, const vitpe_plan *plan, const vitpe_io *io, int backward);

/* Forward: rows [row_begin, row_end) of stage `stage` (vitpe_cpu_stages), and
 * in stage 0 the prefix and suffix tokens of every batch whose first row is
 * in the range. Workers with disjoint row ranges of one stage may run
 * concurrently, each with its own scratch. workspace: NULL with one stage. */
int vitpe_forward_cpu_stage(void *out, const void *inp, const vitpe_plan *plan, const vitpe_io *io,
                            int stage, int64_t row_begin, int64_t row_end, void *workspace,
                            void *scratch);
/* Backward: the same over the adjoint tables, from dout to dinp: the
 * gradient of the grid and of the prefix and suffix tokens. io's "in"
 * strides describe dout, its "out" strides dinp. */
int vitpe_backward_cpu_stage(void *dinp, const void *dout, const vitpe_plan *plan,
                             const vitpe_io *io, int stage, int64_t row_begin, int64_t row_end,
                             void *workspace, void *scratch);
/* A run of one stage (every plan of rank 1 or 2): out rows [row_begin,
 * row_end) of the B*Tout*Hout output grid rows (backward: the B*Tin*Hin
 * rows of dinp). VITPE_EINVAL for a plan of two stages. */
int vitpe_forward_cpu(void *out, const void *inp, const vitpe_plan *plan, const vitpe_io *io,
                      int64_t row_begin, int64_t row_end, void *scratch);
int vitpe_backward_cpu(void *dinp, const void *dout, const vitpe_plan *plan, const vitpe_io *io,
                       int64_t row_begin, int64_t row_end, void *scratch);

/* Naive references: the direct N-D formula (a triple sum over the T, H and
 * W taps, in double), no plan, no separable passes. The backward reference
 * scatters (out -> inp), the literal transpose. axes as vitpe_plan_create_nd. */
int vitpe_forward_naive_nd(void *out, const void *inp, int rank, const vitpe_axis *axes,
                           const vitpe_io *io);
int vitpe_backward_naive_nd(void *dinp, const void *dout, int rank, const vitpe_axis *axes,
                            const vitpe_io *io);
/* The same for a grid of rank 2. */
int vitpe_forward_naive(void *out, const void *inp, const vitpe_axis *h, const vitpe_axis *w,
                        const vitpe_io *io);
int vitpe_backward_naive(void *dinp, const void *dout, const vitpe_axis *h,
                         const vitpe_axis *w, const vitpe_io *io);

/* CUDA (vitpe_cuda.cu). out/inp are device pointers, stream a cudaStream_t;
 * plan is a host plan (vitpe_plan_create; with_adjoint for the backward).
 * Its tables travel by value in the kernel's launch parameters: one launch,
 * no device memory besides the output, capturable in a CUDA graph. Where
 * they do not fit (tables of several KB, very wide grids) the passes need a
 * workspace of vitpe_cuda_workspace_bytes() bytes of device memory, where
 * the tables are rebuilt on the device in stream order; a plan of two stages
 * (vitpe_cpu_stages) keeps its intermediate slabs there too, and runs as
 * several launches in stream order (0 bytes: pass NULL). */
int vitpe_cuda_workspace_bytes(size_t *bytes, const vitpe_plan *plan, const vitpe_io *io,
                               int backward);
int vitpe_forward_cuda(void *out, const void *inp, const vitpe_plan *plan, const vitpe_io *io,
                       void *workspace, void *stream);
int vitpe_backward_cuda(void *dinp, const void *dout, const vitpe_plan *plan, const vitpe_io *io,
                        void *workspace, void *stream);
/* Total memory of CUDA device `device`, in bytes. */
int vitpe_cuda_device_memory(size_t *bytes, int device);
/* After a VITPE_ECUDA: why the passes cannot run on `device`, as a sentence
 * with the fix (an old driver, a GPU without kernels in this build), or "". */
void vitpe_cuda_diagnose(char *buf, size_t size, int device);

#ifdef __cplusplus
}
#endif
#endif /* VITPE_H */
