// Device building blocks shared by the fused Newton kernels and the standalone scans.
//
// Thread mapping (every kernel): a block of (32 lanes) x (W warps) threads owns one batch element and
// 32 consecutive channels d = 32 * group + lane, and walks time in chunks of W * L steps. Inside a
// chunk, warp w owns the run of L consecutive steps [chunk + w L, chunk + (w + 1) L) of every channel,
// so a thread owns one channel's run in registers, and the 32 lanes of a warp read 32 consecutive
// channels of the same time step (coalesced loads of u, h, J, b, where D is contiguous).
//
// A linear recurrence x_t = J_t x_{t-1} + b_t over a chunk is solved in three passes:
//   1. each thread composes its run into one affine map x_in -> P x_in + S (sequential, registers);
//   2. each thread applies the maps of the warps before it, in order, to the chunk's carry-in
//      (through shared memory: W is at most 8, so a serial loop beats a log-depth scan);
//   3. each thread replays its run from that input.
// Small-state algebra: Vec<K> is a state of K floats, Mat<K> a K x K block (K = 1 diagonal, 2 LSTM).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "launchers.cuh"

namespace pararnn_cuda {

constexpr unsigned kFullMask = 0xffffffffu;

template <int K>
struct Vec {
  float v[K];
};

template <int K>
struct Mat {
  float m[K][K];  // m[i][j]: row i, column j; applied as y_i = sum_j m[i][j] x_j
};

template <int K>
__device__ __forceinline__ Vec<K> vzero() {
  Vec<K> x;
#pragma unroll
  for (int i = 0; i < K; ++i) x.v[i] = 0.f;
  return x;
}

template <int K>
__device__ __forceinline__ Mat<K> identity() {
  Mat<K> a;
#pragma unroll
  for (int i = 0; i < K; ++i)
#pragma unroll
    for (int j = 0; j < K; ++j) a.m[i][j] = i == j ? 1.f : 0.f;
  return a;
}

template <int K>
__device__ __forceinline__ Vec<K> add(const Vec<K>& x, const Vec<K>& y) {
  Vec<K> z;
#pragma unroll
  for (int i = 0; i < K; ++i) z.v[i] = x.v[i] + y.v[i];
  return z;
}

template <int K>
__device__ __forceinline__ Vec<K> sub(const Vec<K>& x, const Vec<K>& y) {
  Vec<K> z;
#pragma unroll
  for (int i = 0; i < K; ++i) z.v[i] = x.v[i] - y.v[i];
  return z;
}

// a x + b
template <int K>
__device__ __forceinline__ Vec<K> affine(const Mat<K>& a, const Vec<K>& x, const Vec<K>& b) {
  Vec<K> y;
#pragma unroll
  for (int i = 0; i < K; ++i) {
    float acc = b.v[i];
#pragma unroll
    for (int j = 0; j < K; ++j) acc = fmaf(a.m[i][j], x.v[j], acc);
    y.v[i] = acc;
  }
  return y;
}

template <int K>
__device__ __forceinline__ Vec<K> matvec(const Mat<K>& a, const Vec<K>& x) {
  return affine(a, x, vzero<K>());
}

// a b (apply b first)
template <int K>
__device__ __forceinline__ Mat<K> matmul(const Mat<K>& a, const Mat<K>& b) {
  Mat<K> c;
#pragma unroll
  for (int i = 0; i < K; ++i)
#pragma unroll
    for (int j = 0; j < K; ++j) {
      float acc = 0.f;
#pragma unroll
      for (int k = 0; k < K; ++k) acc = fmaf(a.m[i][k], b.m[k][j], acc);
      c.m[i][j] = acc;
    }
  return c;
}

template <int K>
__device__ __forceinline__ Mat<K> transpose(const Mat<K>& a) {
  Mat<K> t;
#pragma unroll
  for (int i = 0; i < K; ++i)
#pragma unroll
    for (int j = 0; j < K; ++j) t.m[i][j] = a.m[j][i];
  return t;
}

// max that propagates NaN (like torch.amax), unlike fmaxf.
__device__ __forceinline__ float nanmax(float a, float b) { return (a > b || a != a) ? a : b; }

template <int K>
__device__ __forceinline__ float absmax(const Vec<K>& x) {
  float m = 0.f;
#pragma unroll
  for (int i = 0; i < K; ++i) m = nanmax(m, fabsf(x.v[i]));
  return m;
}

// Accurate transcendentals (expf / tanhf, no fast-math): the kernels are checked at 1e-4 relative
// over thousands of steps against a float64 reference.
__device__ __forceinline__ float sigmoid(float x) { return 1.f / (1.f + expf(-x)); }

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

// State element i (a flat (..., K) index of states) of a float32 array.
template <int K>
__device__ __forceinline__ Vec<K> load_state(const float* __restrict__ p, int64_t i) {
  Vec<K> x;
#pragma unroll
  for (int k = 0; k < K; ++k) x.v[k] = p[i * K + k];
  return x;
}

template <int K>
__device__ __forceinline__ void store_state(float* __restrict__ p, int64_t i, const Vec<K>& x) {
#pragma unroll
  for (int k = 0; k < K; ++k) p[i * K + k] = x.v[k];
}

// Shared memory of a block of W warps, structure-of-arrays (component c of thread slot s at
// c * stride + s, slot = warp * 32 + lane) so that a warp's accesses hit 32 distinct banks.
template <int K>
struct ChunkShared {
  float* boundary;  // K * stride: each thread's last state (Newton: h_{t-1} of the next warp's run)
  float* P;         // K * K * stride: each thread's run map x -> P x + S
  float* S;         // K * stride
  float* reduce;    // 2 * W: per-warp maxima
  float* carry;     // K * 32: the chunk's carried state, per lane
  int stride;

  __host__ __device__ static int floats(int W) { return W * kLanes * (2 * K + K * K) + 2 * W + kLanes * K; }

  __device__ ChunkShared(float* base, int W) : stride(W * kLanes) {
    boundary = base;
    P = boundary + K * stride;
    S = P + K * K * stride;
    reduce = S + K * stride;
    carry = reduce + 2 * W;
  }

  __device__ void store_vec(float* a, int slot, const Vec<K>& x) const {
#pragma unroll
    for (int k = 0; k < K; ++k) a[k * stride + slot] = x.v[k];
  }

  __device__ Vec<K> load_vec(const float* a, int slot) const {
    Vec<K> x;
#pragma unroll
    for (int k = 0; k < K; ++k) x.v[k] = a[k * stride + slot];
    return x;
  }

  __device__ void store_mat(int slot, const Mat<K>& a) const {
#pragma unroll
    for (int i = 0; i < K; ++i)
#pragma unroll
      for (int j = 0; j < K; ++j) P[(i * K + j) * stride + slot] = a.m[i][j];
  }

  __device__ Mat<K> load_mat(int slot) const {
    Mat<K> a;
#pragma unroll
    for (int i = 0; i < K; ++i)
#pragma unroll
      for (int j = 0; j < K; ++j) a.m[i][j] = P[(i * K + j) * stride + slot];
    return a;
  }
};

template <int K>
inline size_t shared_bytes(int warps) {
  return size_t(ChunkShared<K>::floats(warps)) * sizeof(float);
}

// Pass 2 of a chunk scan: publish this thread's run map (P, S), then return the state entering this
// thread's run, i.e. the maps of warps 0..w-1 (same lane) applied in order to `x` (the chunk's carry-in).
// The caller must pass another __syncthreads() before the next call reuses the shared arrays.
template <int K>
__device__ __forceinline__ Vec<K> run_input(const ChunkShared<K>& sh, int w, int lane, const Mat<K>& P,
                                            const Vec<K>& S, Vec<K> x) {
  const int slot = w * kLanes + lane;
  sh.store_mat(slot, P);
  sh.store_vec(sh.S, slot, S);
  __syncthreads();
  for (int j = 0; j < w; ++j) {
    const int other = j * kLanes + lane;
    x = affine(sh.load_mat(other), x, sh.load_vec(sh.S, other));
  }
  return x;
}

// The chunk's last state, held by the warp `owner` (per lane), handed to every thread of the block.
template <int K>
__device__ __forceinline__ Vec<K> broadcast_carry(const ChunkShared<K>& sh, bool owner, int lane,
                                                  const Vec<K>& mine) {
  if (owner) {
#pragma unroll
    for (int k = 0; k < K; ++k) sh.carry[k * kLanes + lane] = mine.v[k];
  }
  __syncthreads();
  Vec<K> x;
#pragma unroll
  for (int k = 0; k < K; ++k) x.v[k] = sh.carry[k * kLanes + lane];
  return x;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int offset = kLanes / 2; offset > 0; offset >>= 1) v = nanmax(v, __shfl_xor_sync(kFullMask, v, offset));
  return v;
}

// Block-wide NaN-propagating maxima of (a, b); every thread gets the same result.
template <int K>
__device__ __forceinline__ float2 block_max2(const ChunkShared<K>& sh, int W, int w, int lane, float a, float b) {
  a = warp_max(a);
  b = warp_max(b);
  if (lane == 0) {
    sh.reduce[2 * w] = a;
    sh.reduce[2 * w + 1] = b;
  }
  __syncthreads();
  a = 0.f;
  b = 0.f;
  for (int j = 0; j < W; ++j) {
    a = nanmax(a, sh.reduce[2 * j]);
    b = nanmax(b, sh.reduce[2 * j + 1]);
  }
  return make_float2(a, b);
}

// Where a thread sits: batch element b, channel d (active iff d < D), warp w of W, lane.
struct Place {
  int lane, w, W, b, d;
  bool active;

  __device__ Place(int D) : lane(threadIdx.x), w(threadIdx.y), W(blockDim.y) {
    const int groups = (D + kLanes - 1) / kLanes;
    b = blockIdx.x / groups;
    d = (blockIdx.x - b * groups) * kLanes + lane;
    active = d < D;
  }

  // Valid steps of this thread's run in the chunk starting at `chunk` (0 for inactive lanes).
  __device__ int run_length(int chunk, int L, int T) const {
    return active ? max(0, min(L, T - (chunk + w * L))) : 0;
  }

  // The warp holding the chunk's last step.
  __device__ int owner(int chunk, int L, int T) const { return (min(W * L, T - chunk) - 1) / L; }
};

// ---- host-side dispatch over the input dtype and the compiled run lengths ----

template <typename T>
struct Tag {
  using type = T;
};

template <int L>
using Steps = std::integral_constant<int, L>;

template <typename TagT, typename F>
cudaError_t dispatch_steps(TagT tag, int steps, F& f) {
  switch (steps) {
    case 4:
      return f(tag, Steps<4>{});
    case 8:
      return f(tag, Steps<8>{});
    case 16:
      return f(tag, Steps<16>{});
    default:
      return cudaErrorInvalidValue;
  }
}

// Calls f(Tag<input type>{}, Steps<L>{}) for the runtime dtype code and steps per thread.
template <typename F>
cudaError_t dispatch(int dtype, int steps, int warps, F f) {
  if (!supported_warps(warps) || !supported_steps(steps)) return cudaErrorInvalidValue;
  switch (dtype) {
    case kFloat32:
      return dispatch_steps(Tag<float>{}, steps, f);
    case kFloat16:
      return dispatch_steps(Tag<__half>{}, steps, f);
    case kBFloat16:
      return dispatch_steps(Tag<__nv_bfloat16>{}, steps, f);
    default:
      return cudaErrorInvalidValue;
  }
}

}  // namespace pararnn_cuda
