// Standalone linear scans: x_t = J_t x_{t-1} + b_t (forward, x_{-1} = x0) or x_t = J_t x_{t+1} + b_t
// (reverse, x_T = x0), diagonal (K = 1) or per-channel 2x2 blocks (K = 2). The reverse scan is the
// forward one in the reversed step q = T-1-t. Thread mapping and chunk scan: see common.cuh.
#include "common.cuh"

namespace pararnn_cuda {

template <int K, typename TJ, int L>
__global__ void __launch_bounds__(kLanes* kMaxWarps, 1)
    linear_scan_kernel(const TJ* __restrict__ J, const TJ* __restrict__ b, const float* __restrict__ x0,
                       float* __restrict__ x, int T, int D, bool reverse) {
  using V = Vec<K>;
  using M = Mat<K>;
  extern __shared__ float smem[];
  const Place p(D);
  const ChunkShared<K> sh(smem, p.W);
  V carry = (x0 != nullptr && p.active) ? load_state<K>(x0, int64_t(p.b) * D + p.d) : vzero<K>();

  for (int chunk = 0; chunk < T; chunk += p.W * L) {
    const int q0 = chunk + p.w * L;
    const int n = p.run_length(chunk, L, T);
    M Jr[L];
    V br[L];
#pragma unroll
    for (int i = 0; i < L; ++i) {
      if (i < n) {
        const int t = reverse ? T - 1 - (q0 + i) : q0 + i;
        const int64_t e = (int64_t(p.b) * T + t) * D + p.d;  // (b, t, d)
#pragma unroll
        for (int r = 0; r < K; ++r) {
          br[i].v[r] = to_float(b[e * K + r]);
#pragma unroll
          for (int c = 0; c < K; ++c) Jr[i].m[r][c] = to_float(J[(e * K + r) * K + c]);
        }
      } else {
        Jr[i] = identity<K>();
        br[i] = vzero<K>();
      }
    }
    M P = identity<K>();
    V S = vzero<K>();
#pragma unroll
    for (int i = 0; i < L; ++i) {
      P = matmul(Jr[i], P);
      S = affine(Jr[i], S, br[i]);
    }
    V xi = run_input(sh, p.w, p.lane, P, S, carry);
#pragma unroll
    for (int i = 0; i < L; ++i) {
      if (i < n) {
        const int t = reverse ? T - 1 - (q0 + i) : q0 + i;
        xi = affine(Jr[i], xi, br[i]);
        store_state(x, (int64_t(p.b) * T + t) * D + p.d, xi);
      }
    }
    carry = broadcast_carry(sh, p.w == p.owner(chunk, L, T), p.lane, xi);
  }
}

template <int K>
cudaError_t launch_scan(int dtype, const void* J, const void* b, const float* x0, float* x, int B, int T, int D,
                        bool reverse, int warps, int steps, cudaStream_t stream) {
  return dispatch(dtype, steps, warps, [&](auto tag, auto run) {
    using TJ = typename decltype(tag)::type;
    constexpr int L = decltype(run)::value;
    const long long blocks = tiles(B, D);
    if (blocks == 0) return cudaSuccess;
    linear_scan_kernel<K, TJ, L><<<unsigned(blocks), dim3(kLanes, warps), shared_bytes<K>(warps), stream>>>(
        static_cast<const TJ*>(J), static_cast<const TJ*>(b), x0, x, T, D, reverse);
    return cudaGetLastError();
  });
}

cudaError_t diagonal_scan(int dtype, const void* J, const void* b, const float* x0, float* x, int B, int T, int D,
                          bool reverse, int warps, int steps, cudaStream_t stream) {
  return launch_scan<1>(dtype, J, b, x0, x, B, T, D, reverse, warps, steps, stream);
}

cudaError_t block2_scan(int dtype, const void* J, const void* b, const float* x0, float* x, int B, int T, int D,
                        bool reverse, int warps, int steps, cudaStream_t stream) {
  return launch_scan<2>(dtype, J, b, x0, x, B, T, D, reverse, warps, steps, stream);
}

}  // namespace pararnn_cuda
