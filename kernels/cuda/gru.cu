// ParaGRU fused kernels: Newton forward and adjoint backward (see fused.cuh).
#include "fused.cuh"

namespace pararnn_cuda {

cudaError_t gru_forward(int dtype, const void* u, const float* A, const float* h0, float* h, float* tile_stats,
                        int B, int T, int D, float tol, int max_iters, int warps, int steps, cudaStream_t stream) {
  return launch_forward<GruCell>(dtype, u, A, nullptr, h0, h, tile_stats, B, T, D, tol, max_iters, warps, steps,
                                 stream);
}

cudaError_t gru_backward(int dtype, const float* grad_h, const void* u, const float* A, const float* h0,
                         const float* h, float* grad_u, float* grad_w_partial, float* grad_h0, int B, int T, int D,
                         int warps, int steps, cudaStream_t stream) {
  return launch_backward<GruCell>(dtype, grad_h, u, A, nullptr, h0, h, grad_u, grad_w_partial, grad_h0, B, T, D,
                                  warps, steps, stream);
}

}  // namespace pararnn_cuda
