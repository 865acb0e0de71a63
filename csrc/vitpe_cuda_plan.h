/* vitpe_cuda_plan.h — the device plan fill (vitpe_cuda_plan.cu), internal to
 * the CUDA passes: vitpe_cuda.cu and the tuning bench (bench/cuda_tuning.cu).
 * Include after vitpe.h, in CUDA C++.
 */
#ifndef VITPE_CUDA_PLAN_H
#define VITPE_CUDA_PLAN_H

#include <cuda_runtime.h>

#include "vitpe.h"

/* Fills a device plan buffer of layout->bytes (the layout of
 * vitpe_plan_measure for axes h, w) on the device, in stream order: the
 * forward tables and, with layout->with_adjoint, the adjoint tables, by the
 * tap formulas of the host (vitpe_taps.h). The rows kernels read them there
 * where a plan's tables are too big to travel in the launch parameters. */
int vitpe__plan_fill_cuda(void *plan_buffer, const vitpe_plan_layout *layout, const vitpe_axis *h,
                          const vitpe_axis *w, cudaStream_t stream);
/* The same for the T tables (layout slots 4 and 5) of axis t. */
int vitpe__plan_fill_t_cuda(void *plan_buffer, const vitpe_plan_layout *layout, const vitpe_axis *t,
                            cudaStream_t stream);

#endif /* VITPE_CUDA_PLAN_H */
