// cuda_tuning.cu — times the CUDA rows kernel under explicit launch choices,
// GPU time only (CUDA events), against a device copy of the output's size.
//
// Per case (ViT-B/16 14 -> 32, DINOv2-g/14 37 -> 73; float32 and bfloat16;
// forward and backward; ViT-B at batch 8):
//   plan fwd / +adjoint   the device plan fill (vitpe__plan_fill_cuda)
//   copy(out size)        cudaMemcpyAsync of the output: the floor
//   default               vitpe__choose_grid's launch, tables in device memory
//                         and inline in the launch parameters
//   host us per call      the CPU's cost of a launch (queued, not waited for)
//   tx=.. ty=..           DINOv2 only: the other channel tiles x columns in
//                         flight, to check vitpe__choose_grid's choice
//
// Build and run on a GPU machine, from the repository root (sm_90: H100/H200;
// scripts/device_run.sh tune does this):
//   gcc -O2 -std=c11 -ffp-contract=off -Icsrc -c csrc/vitpe_plan.c -o /tmp/vitpe_plan.o
//   nvcc -O3 -fmad=false -std=c++17 -gencode=arch=compute_90,code=sm_90 -Icsrc \
//       bench/cuda_tuning.cu csrc/vitpe_cuda_plan.cu /tmp/vitpe_plan.o -o /tmp/vitpe_tune
//   /tmp/vitpe_tune            all cases, with the DINOv2 sweep
//   /tmp/vitpe_tune nosweep    default launches only
//   /tmp/vitpe_tune profile    the DINOv2 forward kernels only, two launches
//                              each (for ncu)
// It compiles against csrc's internal headers: the kernels and launchers are
// vitpe_cuda_rows.cuh's, the same the library runs.
#include <chrono>
#include <cstdio>
#include <cstring>

#include "vitpe.h"
#include "vitpe_taps.h"
#include "vitpe_cuda_plan.h"
#include "vitpe_cuda_rows.cuh"

#define CK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { printf("CUDA %s at %d\n", cudaGetErrorString(e_), __LINE__); return 1; } } while (0)

static int g_profile = 0; /* 1: no sweep, few launches (under ncu) */
static int g_sweep = 1;

template <typename F> static float time_us(F f, cudaStream_t s, int iters = 200) {
    if (g_profile) iters = 2;
    cudaEvent_t a, b; cudaEventCreate(&a); cudaEventCreate(&b);
    for (int i = 0; i < 20; i++) f();
    cudaEventRecord(a, s);
    for (int i = 0; i < iters; i++) f();
    cudaEventRecord(b, s); cudaEventSynchronize(b);
    float ms; cudaEventElapsedTime(&ms, a, b);
    cudaEventDestroy(a); cudaEventDestroy(b);
    return ms * 1000.f / iters;
}

/* Host time per launch: the launches are queued without waiting, so this
 * is the CPU's cost of a call (argument packing, the driver), not the GPU's. */
template <typename F> static float host_us(F f, cudaStream_t s, int iters = 200) {
    for (int i = 0; i < 20; i++) f();
    cudaStreamSynchronize(s);
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < iters; i++) f();
    auto t1 = std::chrono::steady_clock::now();
    cudaStreamSynchronize(s);
    return std::chrono::duration<float, std::micro>(t1 - t0).count() / iters;
}

template <typename TR, int V>
static int run_case(const char *name, int64_t B, int64_t P, int64_t hin, int64_t hout, int64_t C,
                    double sf, int backward) {
    typedef typename TR::T T;
    vitpe_axis h = {hin, hout, VITPE_MODE_BICUBIC, 0, 0, 0, sf}, w = h;
    vitpe_plan_layout L;
    if (vitpe_plan_measure(&L, &h, &w, 1)) { printf("measure failed\n"); return 1; }
    void *plan; CK(cudaMalloc(&plan, L.bytes));
    cudaStream_t s; CK(cudaStreamCreate(&s));
    const int64_t tin = P + hin * hin, tout = P + hout * hout;
    const int64_t src_tokens = backward ? tout : tin, dst_tokens = backward ? tin : tout;
    void *src, *dst, *cpy;
    CK(cudaMalloc(&src, B * src_tokens * C * sizeof(T)));
    CK(cudaMalloc(&dst, B * dst_tokens * C * sizeof(T)));
    CK(cudaMalloc(&cpy, B * dst_tokens * C * sizeof(T)));
    CK(cudaMemset(src, 0x3C, B * src_tokens * C * sizeof(T)));
    vitpe__rows_args a = {};
    a.slices = 1;
    int t = backward ? 2 : 0;
    a.th = vitpe__table_at(plan, &L, t); a.tw = vitpe__table_at(plan, &L, t + 1);
    a.batch = B; a.prefix = P; a.channels = C;
    a.in_bs = src_tokens * C; a.in_ts = C; a.out_bs = dst_tokens * C; a.out_ts = C;
    const size_t bytes = B * dst_tokens * C * sizeof(T);
    vitpe_plan_layout Lf;
    vitpe_plan_measure(&Lf, &h, &w, 0);
    float fill_fwd = time_us([&] { vitpe__plan_fill_cuda(plan, &Lf, &h, &w, s); }, s);
    float fill = time_us([&] { vitpe__plan_fill_cuda(plan, &L, &h, &w, s); }, s);
    float copy = time_us([&] { cudaMemcpyAsync(cpy, dst, bytes, cudaMemcpyDeviceToDevice, s); }, s);
    int sms = 132; vitpe__sm_count(&sms);
    vitpe__grid_plan def = vitpe__choose_grid<TR, V>(a, sms);
    float tdef = time_us([&] { vitpe__launch_rows_with<TR, V>(dst, src, a, def, nullptr, nullptr, s); }, s);
    vitpe_plan *hp = nullptr;
    if (vitpe_plan_create(&hp, &h, &w, 1)) { printf("plan_create failed\n"); return 1; }
    const vitpe_taps *th = backward ? &hp->adj_h : &hp->fwd_h, *tw = backward ? &hp->adj_w : &hp->fwd_w;
    float tinl = time_us([&] { vitpe__launch_rows_with<TR, V>(dst, src, a, def, th, tw, s); }, s);
    float hdev = host_us([&] { vitpe__launch_rows_with<TR, V>(dst, src, a, def, nullptr, nullptr, s); }, s);
    float hinl = host_us([&] { vitpe__launch_rows_with<TR, V>(dst, src, a, def, th, tw, s); }, s);
    float hcpy = host_us([&] { cudaMemcpyAsync(cpy, dst, bytes, cudaMemcpyDeviceToDevice, s); }, s);
    CK(cudaStreamSynchronize(s)); CK(cudaGetLastError());
    printf("   host us per call: launch with device tables %.2f, with inline tables %.2f, cudaMemcpyAsync %.2f\n",
           hdev, hinl, hcpy);
    printf("%-8s %-4s %s plan fwd %.2f / +adjoint %.2f us | copy(out size) %.2f us | default tx=%lld ty=%lld direct=%d: device tables %.2f us, inline (%lld B) %.2f us (%.2fx copy)\n",
           name, sizeof(T) == 4 ? "f32" : "bf16", backward ? "bwd" : "fwd", fill_fwd, fill, copy,
           (long long)def.tx, (long long)def.ty, def.direct, tdef,
           (long long)vitpe__table_bytes<typename TR::ACC>(a), tinl, tinl / copy);
    for (int tx : {32, 16, 8}) {
        if (g_profile || !g_sweep || strcmp(name, "dinov2") != 0) break;
        printf("   tx=%2d:", tx);
        for (int ty : {8, 16, 32}) {
            vitpe__grid_plan g = def; g.tx = tx; g.ty = ty; g.direct = 0;
            if (tx * ty > 256 || vitpe__rows_smem<typename TR::ACC, V>(a, tx) > VITPE_SMEM_LIMIT) {
                printf("  ty=%2d %7s", ty, "-");
                continue;
            }
            float us = time_us([&] { vitpe__launch_rows_with<TR, V>(dst, src, a, g, th, tw, s); }, s);
            printf("  ty=%2d %7.2f", ty, us);
        }
        printf("\n");
    }
    vitpe_plan_destroy(hp);
    cudaFree(plan); cudaFree(src); cudaFree(dst); cudaFree(cpy); cudaStreamDestroy(s);
    return 0;
}

int main(int argc, char **argv) {
    int rc = 0;
    setvbuf(stdout, NULL, _IONBF, 0); /* a timeout must not eat buffered lines */
    if (argc > 1 && argv[1][0] == 'n') g_sweep = 0; /* "nosweep": default grids only */
    if (argc > 1 && argv[1][0] == 'p') { /* "profile": the DINOv2 forward kernels only, for ncu */
        g_profile = 1;
        rc |= run_case<vitpe__f32, 4>("dinov2", 1, 5, 37, 73, 1536, 73.1 / 37, 0);
        rc |= run_case<vitpe__bf16, 8>("dinov2", 1, 5, 37, 73, 1536, 73.1 / 37, 0);
        return rc;
    }
    for (int bwd = 0; bwd < 2; bwd++) {
        rc |= run_case<vitpe__f32, 4>("vitb", 1, 1, 14, 32, 768, 0.0, bwd);
        rc |= run_case<vitpe__bf16, 8>("vitb", 1, 1, 14, 32, 768, 0.0, bwd);
        rc |= run_case<vitpe__f32, 4>("dinov2", 1, 5, 37, 73, 1536, 73.1 / 37, bwd);
        rc |= run_case<vitpe__bf16, 8>("dinov2", 1, 5, 37, 73, 1536, 73.1 / 37, bwd);
    }
    rc |= run_case<vitpe__f32, 4>("vitb-b8", 8, 1, 14, 24, 768, 0.0, 0);
    return rc;
}
