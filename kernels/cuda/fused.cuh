// Fused kernels of a cell (GruCell, LstmCell): Newton forward and adjoint backward.
// Thread mapping and the three-pass chunk scan: see common.cuh.
#pragma once

#include "cells.cuh"
#include "common.cuh"

namespace pararnn_cuda {

// Forward. Per chunk of W*L steps, starting from the exact carried state h_carry:
//   guess h_t = f(h_carry, u_t); loop { J_t, r_t = f(h_{t-1}) − h_t; residual = max|r| / max(1, max|h|)
//   over the block; stop if residual <= tol (or NaN) or updates == max_iters;
//   δ = scan(δ_t = J_t δ_{t-1} + r_t, δ_{-1} = 0); h += δ }; write h; carry h at the chunk's last step.
// tile_stats[block] = [worst residual over chunks, most updates over chunks].
template <class Cell, typename TU, int L>
__global__ void __launch_bounds__(kLanes* kMaxWarps, 1)
    newton_forward_kernel(const TU* __restrict__ u, const float* __restrict__ A, const float* __restrict__ C,
                          const float* __restrict__ h0, float* __restrict__ h, float* __restrict__ tile_stats, int T,
                          int D, float tol, int max_iters) {
  constexpr int K = Cell::K, G = Cell::G;
  using V = Vec<K>;
  using M = Mat<K>;
  extern __shared__ float smem[];
  const Place p(D);
  const ChunkShared<K> sh(smem, p.W);
  const Cell cell(A, C, p.active ? p.d : 0, D);
  const int slot = p.w * kLanes + p.lane;
  V carry = p.active ? load_state<K>(h0, int64_t(p.b) * D + p.d) : vzero<K>();
  float worst = 0.f;
  int most = 0;

  for (int chunk = 0; chunk < T; chunk += p.W * L) {
    const int t0 = chunk + p.w * L;
    const int n = p.run_length(chunk, L, T);
    float uu[L][G];
    V s[L];
#pragma unroll
    for (int i = 0; i < L; ++i) {
#pragma unroll
      for (int g = 0; g < G; ++g)
        uu[i][g] = i < n ? to_float(u[((int64_t(p.b) * T + t0 + i) * G + g) * D + p.d]) : 0.f;
    }
#pragma unroll
    for (int i = 0; i < L; ++i) s[i] = i < n ? cell.value(carry, uu[i]) : vzero<K>();

    int updates = 0;
    float residual;
    while (true) {
      V last = vzero<K>();
#pragma unroll
      for (int i = 0; i < L; ++i)
        if (i < n) last = s[i];
      sh.store_vec(sh.boundary, slot, last);
      __syncthreads();
      const V before = p.w == 0 ? carry : sh.load_vec(sh.boundary, slot - kLanes);

      M J[L];
      V r[L];
      float r_max = 0.f, h_max = 0.f;
#pragma unroll
      for (int i = 0; i < L; ++i) {
        if (i < n) {
          const V f = cell.value_jac(i == 0 ? before : s[i > 0 ? i - 1 : 0], uu[i], J[i]);
          r[i] = sub(f, s[i]);
          r_max = nanmax(r_max, absmax(r[i]));
          h_max = nanmax(h_max, absmax(s[i]));
        } else {
          J[i] = identity<K>();
          r[i] = vzero<K>();
        }
      }
      const float2 m = block_max2(sh, p.W, p.w, p.lane, r_max, h_max);
      residual = m.x / fmaxf(1.f, m.y);
      if (!(residual > tol) || updates >= max_iters) break;  // converged, NaN, or out of updates

      M P = identity<K>();
      V S = vzero<K>();
#pragma unroll
      for (int i = 0; i < L; ++i) {
        P = matmul(J[i], P);
        S = affine(J[i], S, r[i]);
      }
      V x = run_input(sh, p.w, p.lane, P, S, vzero<K>());
#pragma unroll
      for (int i = 0; i < L; ++i) {
        if (i < n) {
          x = affine(J[i], x, r[i]);
          s[i] = add(s[i], x);
        }
      }
      ++updates;
    }
    worst = nanmax(worst, residual);
    most = max(most, updates);

    V last = vzero<K>();
#pragma unroll
    for (int i = 0; i < L; ++i) {
      if (i < n) {
        store_state(h, (int64_t(p.b) * T + t0 + i) * D + p.d, s[i]);
        last = s[i];
      }
    }
    carry = broadcast_carry(sh, p.w == p.owner(chunk, L, T), p.lane, last);
  }
  if (p.w == 0 && p.lane == 0) {
    tile_stats[2 * blockIdx.x] = worst;
    tile_stats[2 * blockIdx.x + 1] = float(most);
  }
}

// Backward. Time is walked from the end: reversed step q = T-1-t. With ν_t = J_tᵀ λ_t (the gradient
// reaching h_{t-1} through step t) the adjoint λ_t = g_t + ν_{t+1} gives ν_t = J_tᵀ (g_t + ν_{t+1}),
// a linear recurrence in q with transition J_tᵀ (recomputed from h_{t-1}, u_t) and ν_T = 0; it is
// solved per chunk with the same three passes, carrying ν from the later chunk. Then every step
// does its VJP with λ_t: grad_u_t, the weight sums, and ν_t; grad_h0 = ν_0.
template <class Cell, typename TU, int L>
__global__ void __launch_bounds__(kLanes* kMaxWarps, 1)
    adjoint_backward_kernel(const float* __restrict__ grad_h, const TU* __restrict__ u, const float* __restrict__ A,
                            const float* __restrict__ C, const float* __restrict__ h0, const float* __restrict__ h,
                            float* __restrict__ grad_u, float* __restrict__ grad_w_partial,
                            float* __restrict__ grad_h0, int T, int D) {
  constexpr int K = Cell::K, G = Cell::G, NW = Cell::NW;
  using V = Vec<K>;
  using M = Mat<K>;
  extern __shared__ float smem[];
  const Place p(D);
  const ChunkShared<K> sh(smem, p.W);
  const Cell cell(A, C, p.active ? p.d : 0, D);
  float gw[NW];
#pragma unroll
  for (int k = 0; k < NW; ++k) gw[k] = 0.f;
  V carry = vzero<K>();  // ν at the first (earliest) step of the later chunk

  for (int chunk = 0; chunk < T; chunk += p.W * L) {
    const int q0 = chunk + p.w * L;
    const int n = p.run_length(chunk, L, T);
    float uu[L][G];
    V prev[L], g[L];
    M Jt[L];
#pragma unroll
    for (int i = 0; i < L; ++i) {
      if (i < n) {
        const int t = T - 1 - (q0 + i);
        const int64_t bt = int64_t(p.b) * T + t;
#pragma unroll
        for (int k = 0; k < G; ++k) uu[i][k] = to_float(u[(bt * G + k) * D + p.d]);
        g[i] = load_state<K>(grad_h, bt * D + p.d);
        prev[i] = t > 0 ? load_state<K>(h, (bt - 1) * D + p.d) : load_state<K>(h0, int64_t(p.b) * D + p.d);
        M J;
        cell.value_jac(prev[i], uu[i], J);
        Jt[i] = transpose(J);
      } else {
#pragma unroll
        for (int k = 0; k < G; ++k) uu[i][k] = 0.f;
        prev[i] = vzero<K>();
        g[i] = vzero<K>();
        Jt[i] = identity<K>();
      }
    }
    // The run's map ν_in -> P ν_in + S, with ν_i = J_iᵀ (g_i + ν_{i-1}) in reversed order.
    M P = identity<K>();
    V S = vzero<K>();
#pragma unroll
    for (int i = 0; i < L; ++i) {
      S = matvec(Jt[i], add(S, g[i]));
      P = matmul(Jt[i], P);
    }
    V nu = run_input(sh, p.w, p.lane, P, S, carry);
#pragma unroll
    for (int i = 0; i < L; ++i) {
      if (i < n) {
        const int t = T - 1 - (q0 + i);
        const int64_t bt = int64_t(p.b) * T + t;
        float gu[G];
        nu = cell.vjp(prev[i], uu[i], add(g[i], nu), gu, gw);
#pragma unroll
        for (int k = 0; k < G; ++k) grad_u[(bt * G + k) * D + p.d] = gu[k];
      }
    }
    carry = broadcast_carry(sh, p.w == p.owner(chunk, L, T), p.lane, nu);
  }
  if (p.active && p.w == 0) store_state(grad_h0, int64_t(p.b) * D + p.d, carry);

  // Sum the weight gradients over the block's warps (deterministic, no atomics).
#pragma unroll
  for (int k = 0; k < NW; ++k) {
    sh.P[p.w * kLanes + p.lane] = gw[k];
    __syncthreads();
    if (p.w == 0 && p.active) {
      float total = 0.f;
      for (int j = 0; j < p.W; ++j) total += sh.P[j * kLanes + p.lane];
      grad_w_partial[(int64_t(p.b) * NW + k) * D + p.d] = total;
    }
    __syncthreads();
  }
}

// Launch helpers (host). Grid: one block per (batch element, 32 channels).
template <class Cell>
cudaError_t launch_forward(int dtype, const void* u, const float* A, const float* C, const float* h0, float* h,
                           float* tile_stats, int B, int T, int D, float tol, int max_iters, int warps, int steps,
                           cudaStream_t stream) {
  return dispatch(dtype, steps, warps, [&](auto tag, auto run) {
    using TU = typename decltype(tag)::type;
    constexpr int L = decltype(run)::value;
    const long long blocks = tiles(B, D);
    if (blocks == 0) return cudaSuccess;
    newton_forward_kernel<Cell, TU, L><<<unsigned(blocks), dim3(kLanes, warps), shared_bytes<Cell::K>(warps), stream>>>(
        static_cast<const TU*>(u), A, C, h0, h, tile_stats, T, D, tol, max_iters);
    return cudaGetLastError();
  });
}

template <class Cell>
cudaError_t launch_backward(int dtype, const float* grad_h, const void* u, const float* A, const float* C,
                            const float* h0, const float* h, float* grad_u, float* grad_w_partial, float* grad_h0,
                            int B, int T, int D, int warps, int steps, cudaStream_t stream) {
  return dispatch(dtype, steps, warps, [&](auto tag, auto run) {
    using TU = typename decltype(tag)::type;
    constexpr int L = decltype(run)::value;
    const long long blocks = tiles(B, D);
    if (blocks == 0) return cudaSuccess;
    adjoint_backward_kernel<Cell, TU, L><<<unsigned(blocks), dim3(kLanes, warps), shared_bytes<Cell::K>(warps),
                                           stream>>>(grad_h, static_cast<const TU*>(u), A, C, h0, h, grad_u,
                                                     grad_w_partial, grad_h0, T, D);
    return cudaGetLastError();
  });
}

}  // namespace pararnn_cuda
