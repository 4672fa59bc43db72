// Shared pieces of the fused CPU kernels (DESIGN.md §5): inline vectorisable exp / sigmoid / tanh,
// the (batch × channel-block) work split, and the entry points bound in bindings.cpp.
//
// The math functions are plain arithmetic on scalars so that GCC/Clang vectorise the channel loops
// (`#pragma omp simd`) for whatever -march the extension is built with, without -ffast-math (whose
// reassociation would break the exp range reduction) and without libmvec (slower here). Measured
// accuracy: exp within 1.5 ulp (float) and 1 ulp (double); sigmoid and tanh within 2 ulp of 1 in
// absolute terms, which is what the recurrences need (every quantity is O(1)). NaN propagates.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <tuple>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace pararnn_cpu {

// Reinterpret the bits of x: std::bit_cast needs C++20, and some PyTorch/compiler pairs build as C++17.
template <typename To, typename From>
inline To bits_as(From x) {
  static_assert(sizeof(To) == sizeof(From), "bits_as needs same-size types");
  To y;
  std::memcpy(&y, &x, sizeof(To));
  return y;
}

template <typename T>
struct Math;

template <>
struct Math<float> {
  static inline float exp(float x) {
    // Clamp so that 2^k stays a normal number; NaN passes through (comparisons are false).
    x = x > 88.0f ? 88.0f : x;
    x = x < -87.0f ? -87.0f : x;
    // k = round(x / ln 2) by the 1.5·2^23 shifter; its low mantissa bits hold k + 127.
    const float shifter = 12582912.0f + 127.0f;
    const float t = x * 1.44269504088896341f + shifter;
    const float k = t - shifter;
    float r = x - k * 0.693359375f;  // Cody–Waite: ln 2 = 0.693359375 − 2.12194440e-4
    r = r + k * 2.12194440e-4f;
    float p = 1.9875691500e-4f;  // Cephes expf minimax polynomial on |r| ≤ ln2/2
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    const float scale = bits_as<float>(bits_as<int32_t>(t) << 23);
    return p * scale;
  }
};

template <>
struct Math<double> {
  static inline double exp(double x) {
    x = x > 708.0 ? 708.0 : x;
    x = x < -708.0 ? -708.0 : x;
    const double shifter = 6755399441055744.0 + 1023.0;  // 1.5·2^52 + bias
    const double t = x * 1.4426950408889634074 + shifter;
    const double k = t - shifter;
    double r = x - k * 6.93147180369123816490e-01;  // ln 2 split (fdlibm)
    r = r - k * 1.90821492927058770002e-10;
    // Taylor polynomial of degree 13 on |r| ≤ ln2/2 (truncation < 1e-17).
    double p = 1.0 / 6227020800.0;
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * (r * r) + r + 1.0;
    const double scale = bits_as<double>(bits_as<int64_t>(t) << 52);
    return p * scale;
  }
};

template <typename T>
inline T sigmoid(T x) {
  return T(1) / (T(1) + Math<T>::exp(-x));
}

template <typename T>
inline T tanh(T x) {
  return T(2) / (T(1) + Math<T>::exp(T(-2) * x)) - T(1);
}

// Software prefetch of the rows a kernel reads `kPrefetchSteps` time steps ahead: the hardware
// prefetchers alone leave these compute-heavy loops waiting on memory.
constexpr int64_t kPrefetchSteps = 8;

template <typename T>
inline void prefetch_row(const T* row, int64_t n) {
#if defined(__GNUC__)
  constexpr int64_t line = 64 / sizeof(T);
  for (int64_t i = 0; i < n; i += line) __builtin_prefetch(row + i);
#endif
}

// The three gate values of channel i at one step into their rows of a (3, D) slice (grad_u).
template <typename T>
inline void store_gates(T* __restrict g0, T* __restrict g1, T* __restrict g2, int64_t i, T x0, T x1, T x2) {
  g0[i] = x0;
  g1[i] = x1;
  g2[i] = x2;
}

// Channels per work item: one block of state lives in a small per-thread buffer (1 KiB), and the
// channel loop over it is long enough to hide the latency of one time step's dependency chain.
template <typename T>
constexpr int64_t kMaxBlock = 1024 / sizeof(T);

// The block length for (batch, channels): long (up to max_block), yet short enough for about four
// work items per thread so the threads finish together; a multiple of 16 (vector boundaries), at
// least 64 so that one time step still has several independent vectors in flight.
inline int64_t block_length(int64_t batch, int64_t channels, int64_t max_block) {
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  const int64_t splits = threads == 1 ? 1 : (4 * threads + batch - 1) / batch;
  const int64_t block = ((channels + splits - 1) / splits + 15) / 16 * 16;
  return std::clamp<int64_t>(block, 64, max_block);
}

// Runs body(b, d0, n) for every (batch row b, channel block [d0, d0 + n)) over ATen's thread pool,
// giving each thread at least ~32k channel-steps of work (less is cheaper on one thread).
template <typename Body>
void for_each_block(int64_t batch, int64_t steps, int64_t channels, int64_t max_block, const Body& body) {
  if (batch == 0 || channels == 0 || steps == 0) return;
  const int64_t block = block_length(batch, channels, max_block);
  const int64_t blocks = (channels + block - 1) / block;
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 15) / (steps * block));
  at::parallel_for(0, batch * blocks, grain, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / blocks;
      const int64_t d0 = (item % blocks) * block;
      body(b, d0, std::min(block, channels - d0));
    }
  });
}

// The batch rows of a kernel argument: row b starts at data + b * size.
template <typename T>
struct BatchRows {
  T* data;
  int64_t size;
};

// Rows of an input / output tensor of `size` elements each, typed as T.
template <typename T>
inline BatchRows<const T> rows_in(const at::Tensor& x, int64_t size) {
  return {x.const_data_ptr<T>(), size};
}

template <typename T>
inline BatchRows<T> rows_out(const at::Tensor& x, int64_t size) {
  return {x.mutable_data_ptr<T>(), size};
}

// Batch row b of an argument: a parameter pointer (A, C) is shared by all rows.
template <typename T>
inline T* row_of(T* shared, int64_t) {
  return shared;
}

template <typename T>
inline T* row_of(const BatchRows<T>& x, int64_t b) {
  return x.data + b * x.size;
}

// Runs block(row b of each argument..., steps, D, d0, n) over every (batch row b, channel block [d0, d0 + n))
// with for_each_block.
template <auto block, typename... Args>
void run_blocks(int64_t batch, int64_t steps, int64_t D, int64_t max_block, const Args&... args) {
  for_each_block(batch, steps, D, max_block,
                 [&](int64_t b, int64_t d0, int64_t n) { block(row_of(args, b)..., steps, D, d0, n); });
}

// A new uninitialised tensor for a kernel output. On Linux its 2 MiB-aligned interior is advised for
// transparent huge pages before the kernel first writes it: a fresh multi-MB buffer otherwise costs a
// page fault per 4 KiB, which rivals the run time of these memory-bound kernels (torch's allocator
// does the same under THP_MEM_ALLOC_ENABLE=1). Only a hint: the memory is fine without huge pages.
inline at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& options) {
  at::Tensor out = at::empty(sizes, options);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHugePage = uintptr_t(2) << 20;
  const auto begin = reinterpret_cast<uintptr_t>(out.data_ptr());
  const uintptr_t first = (begin + kHugePage - 1) & ~(kHugePage - 1);
  const uintptr_t last = (begin + out.nbytes()) & ~(kHugePage - 1);
  if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
#endif
  return out;
}

// Entry points (paragru.cpp, paralstm.cpp). Shapes as in the backend contract (kernels/README.md):
// u (B, T, 3, D); A (3, D); C (2, D); GRU state (B, D) and trajectory (B, T, D); LSTM state
// (B, D, 2) = [c, h] and trajectory (B, T, D, 2). float32 or float64, contiguous.
at::Tensor gru_forward(const at::Tensor& u, const at::Tensor& A, const at::Tensor& h0);
std::tuple<at::Tensor, at::Tensor, at::Tensor> gru_backward(const at::Tensor& grad_h, const at::Tensor& u,
                                                            const at::Tensor& A, const at::Tensor& h0,
                                                            const at::Tensor& h);
at::Tensor lstm_forward(const at::Tensor& u, const at::Tensor& A, const at::Tensor& C, const at::Tensor& h0);
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_backward(const at::Tensor& grad_h,
                                                                         const at::Tensor& u, const at::Tensor& A,
                                                                         const at::Tensor& C, const at::Tensor& h0,
                                                                         const at::Tensor& h);

// Cheap argument checks shared by both cells.
inline void check_dtype(const at::Tensor& u) {
  TORCH_CHECK(u.scalar_type() == at::kFloat || u.scalar_type() == at::kDouble,
              "pararnn_ts cpu kernels: u must be float32 or float64, got ", u.scalar_type());
}

inline void check_tensor(const at::Tensor& x, const char* name, at::ScalarType dtype, at::IntArrayRef shape) {
  TORCH_CHECK(x.device().is_cpu(), "pararnn_ts cpu kernels: ", name, " must be a CPU tensor, got ", x.device());
  TORCH_CHECK(x.scalar_type() == dtype, "pararnn_ts cpu kernels: ", name, " must be ", dtype, " like u, got ",
              x.scalar_type());
  TORCH_CHECK(x.sizes() == shape, "pararnn_ts cpu kernels: ", name, " must have shape ", shape, ", got ", x.sizes());
  TORCH_CHECK(x.is_contiguous(), "pararnn_ts cpu kernels: ", name, " must be contiguous");
}

// The checks every entry point starts with: u (B, T, 3, D) and A (3, D); `what` names the entry point.
inline void check_u_and_A(const char* what, const at::Tensor& u, const at::Tensor& A) {
  TORCH_CHECK(u.dim() == 4 && u.size(2) == 3, what, ": u must be (B, T, 3, D), got ", u.sizes());
  check_dtype(u);
  check_tensor(u, "u", u.scalar_type(), u.sizes());
  check_tensor(A, "A", u.scalar_type(), {3, u.size(3)});
}

}  // namespace pararnn_cpu
