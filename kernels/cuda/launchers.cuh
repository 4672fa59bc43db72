// Host entry points of the CUDA kernels (pure C++: no device code, no torch).
//
// Every launcher takes raw, contiguous device pointers, the sizes, the launch tunables and a stream,
// enqueues one kernel and returns cudaGetLastError() (cudaErrorInvalidValue for a bad dtype/tunable).
// Layouts (row-major, contiguous):
//   u       (B, T, 3, D)  dtype `dtype` (float32 / float16 / bfloat16), read as float32
//   A       (3, D)        float32, rows [a_z, a_r, a_c] (GRU) or [a_f, a_z, a_o] (LSTM)
//   C       (2, D)        float32, rows [p_f, p_o] (LSTM)
//   state   (B, T, D) GRU, (B, T, D, 2) LSTM ([c, h] in the last dim); h0 (B, D) or (B, D, 2); float32
// A launch uses tiles(B, D) thread blocks of (32, warps) threads: one block per batch element and
// group of 32 channels. Per-block outputs:
//   tile_stats     (tiles, 2)     [worst normalised residual, most Newton updates] of the block
//   grad_w_partial (B, rows, D)   per-batch-element sums of the weight gradients (rows 3 GRU: A;
//                                 rows 5 LSTM: A then C); the caller sums over the first dimension.
#pragma once

#include <cuda_runtime_api.h>

namespace pararnn_cuda {

enum DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

constexpr int kLanes = 32;     // channels per thread block (one warp's lanes)
constexpr int kMaxWarps = 8;   // warps per block (time runs per chunk): 1..kMaxWarps
constexpr int kGruRows = 3;    // rows of grad_w_partial for the GRU
constexpr int kLstmRows = 5;   // rows of grad_w_partial for the LSTM (3 of A, 2 of C)

// Steps per thread (the length of a thread's run of consecutive time steps) compiled in.
inline bool supported_steps(int steps) { return steps == 4 || steps == 8 || steps == 16; }
inline bool supported_warps(int warps) { return warps >= 1 && warps <= kMaxWarps; }

// Thread blocks of one launch: batch x ceil(channels / 32).
inline long long tiles(long long batch, long long channels) { return batch * ((channels + kLanes - 1) / kLanes); }

cudaError_t gru_forward(int dtype, const void* u, const float* A, const float* h0, float* h, float* tile_stats,
                        int B, int T, int D, float tol, int max_iters, int warps, int steps, cudaStream_t stream);

cudaError_t gru_backward(int dtype, const float* grad_h, const void* u, const float* A, const float* h0,
                         const float* h, float* grad_u, float* grad_w_partial, float* grad_h0, int B, int T, int D,
                         int warps, int steps, cudaStream_t stream);

cudaError_t lstm_forward(int dtype, const void* u, const float* A, const float* C, const float* h0, float* h,
                         float* tile_stats, int B, int T, int D, float tol, int max_iters, int warps, int steps,
                         cudaStream_t stream);

cudaError_t lstm_backward(int dtype, const float* grad_h, const void* u, const float* A, const float* C,
                          const float* h0, const float* h, float* grad_u, float* grad_w_partial, float* grad_h0,
                          int B, int T, int D, int warps, int steps, cudaStream_t stream);

// x_t = J_t x_{t-1} + b_t (forward, x_{-1} = x0) or x_t = J_t x_{t+1} + b_t (reverse, x_T = x0); x0 may be
// null (zero). J, b in `dtype`; x0 and x float32. Diagonal: J, b, x (B, T, D), x0 (B, D).
cudaError_t diagonal_scan(int dtype, const void* J, const void* b, const float* x0, float* x, int B, int T, int D,
                          bool reverse, int warps, int steps, cudaStream_t stream);

// Per-channel 2x2 blocks: J (B, T, D, 2, 2) applied as x_i = sum_j J[i][j] x_j, b and x (B, T, D, 2), x0 (B, D, 2).
cudaError_t block2_scan(int dtype, const void* J, const void* b, const float* x0, float* x, int B, int T, int D,
                        bool reverse, int warps, int steps, cudaStream_t stream);

}  // namespace pararnn_cuda
