/* test_main.c — checks vitpe's C kernels against their own references, no torch.
 *
 *   inp (B, P + Hin*Win, C) --plan + H/W passes--> out (B, P + Hout*Wout, C)
 *
 * What is held to what (each check is one "passed"/"failed" item):
 *   plan       tap tables: windows in range and monotone, unused slots zero,
 *              adjoint tables exactly the transpose of the forward tables;
 *              lanczos3's antialias flag and area's scale_factor change
 *              nothing; a plan without adjoint runs the same forward (fwd-only)
 *   fwd        vitpe_forward_cpu (one row range) vs vitpe_forward_naive, to a
 *              tolerance derived from the magnitude of the terms summed
 *   fwd-split  several row ranges, each with its own scratch, in scrambled
 *              order: bitwise equal to one range; every element written,
 *              padding between tokens/batches never touched
 *   fwd-part   one sub-range writes exactly its rows (and the prefix tokens
 *              of batches whose row 0 it holds), nothing else
 *   prefix     prefix tokens (with NaN payloads, -0, inf, subnormals) are
 *              copied bit for bit
 *   bwd*       the same for vitpe_backward_cpu (gather over the adjoint
 *              tables) vs vitpe_backward_naive (scatter)
 *   adjoint    <A x, y> == <x, A^T y> over the fast passes, float64 data
 *   identity   in == out (no scale_factor): bit-exact, every mode and dtype,
 *              half types over every finite bit pattern
 *   constant   a per-channel constant field stays constant (exactly, for
 *              half types, where the rounding to storage absorbs it)
 *   rounding   float -> float16/bfloat16 stores round to nearest even, at
 *              every tie between adjacent values (bilinear midpoints)
 *   nan-chan*  NaN grid inputs stay in their channels, bit for bit as the
 *              arithmetic gives them, through the vector paths
 *   grid-*     grids of rank 1 and 3 with suffix tokens, and given sample
 *              positions at ranks 1-3 (test_grids.c): the
 *              staged runs vs vitpe_*_naive_nd, split, bit for bit the
 *              staged arithmetic, half types = float32 rounded once, tokens,
 *              adjoint, identity, plans of each rank, errors
 *   errors     invalid axes, sizes over the limit, bad io, bad row ranges,
 *              backward without adjoint tables, status/mode strings, and
 *              (last, as UBSan aborts on it) a batch whose row count
 *              overflows int64
 *
 * The tap formulas themselves (ATen's) are checked against F.interpolate by
 * the Python tests; here naive and fast share them, and what is held is the
 * engine, the tables, the conversions and the API contract.
 *
 * Input padding is filled with NaN bytes so that a read of padding shows up
 * in the results; output padding is filled with a sentinel byte and must
 * come back unchanged. Buffers are allocated to their exact extent so that
 * AddressSanitizer catches any access past the last element.
 *
 * The checks live by group: test_plan.c, test_sweep.c (fwd*, bwd*, adjoint),
 * test_exact.c (identity, constant, rounding, nan-chan*), test_errors.c,
 * test_grids.c (grid-*); the
 * harness they share is test_harness.c, and what the fuzz target shares too
 * (values, the fast passes' arithmetic, the tolerance) test_util.c.
 *
 * Build and run: make -C tests/c test  (exit status 1 on any failure).
 */
#include <stdio.h>
#include <stdlib.h>

#include "test_harness.h"

int main(int argc, char **argv) {
    if (argc > 1) rng_state = strtoull(argv[1], NULL, 0); /* another seed: ./test_vitpe 42 */
    printf("c-kernels: seed 0x%llx\n", (unsigned long long)rng_state);
    printf("c-kernels: modes (every sweep runs over the table):");
    for (int mode = 0; mode < VITPE_MODE_COUNT; mode++) printf(" %s", vitpe_mode_name(mode));
    printf("\n");
    errors();
    rounding_check(VITPE_F16);
    rounding_check(VITPE_BF16);
    identity_sweep();
    constant_sweep();
    sweep();
    fast_paths();
    nan_channels();
    grid_plans();
    grid_errors();
    grid_identity();
    grid_stages();
    grid_sweep();
    grid_positions();
    printf("c-kernels: largest |fast - naive| / tolerance: float32 %.3f, float64 %.3f, float16 %.3f, "
           "bfloat16 %.3f\n", worst_ratio[0], worst_ratio[1], worst_ratio[2], worst_ratio[3]);
    printf("c-kernels: fast != naive (bitwise) in %lld/%lld float16 and %lld/%lld bfloat16 elements\n",
           (long long)n_differ[2], (long long)n_compared[2], (long long)n_differ[3], (long long)n_compared[3]);
    printf("c-kernels: %d passed, %d failed before the last check\n", n_passed, n_failed);
    batch_overflow();
    printf("c-kernels: %d passed, %d failed\n", n_passed, n_failed);
    return n_failed ? 1 : 0;
}
