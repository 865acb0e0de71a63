// shim_cuda.cpp — the CUDA module, vitpe_ext._C_cuda: shim.cpp compiled with
// the CUDA kernels, registering only the ops' CUDA kernels (the schemas and the
// CPU kernels are vitpe_ext._C's). A file of its own rather than a second
// compile of shim.cpp, so that the two objects do not share one build path.
#define VITPE_CUDA_MODULE 1
#include "shim.cpp"
