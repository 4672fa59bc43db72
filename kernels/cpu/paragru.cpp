// Fused sequential ParaGRU on CPU (DESIGN.md §5): one pass over time per (batch row, channel block),
// vectorised over the contiguous channels. Forward reads u once and writes h once; backward runs the
// adjoint recurrence in reverse, recomputing the (diagonal) Jacobian from the saved h and u.
//
//   z = σ(a_z h + u_z),  r = σ(a_r h + u_r),  c = tanh(a_c (h r) + u_c),  h' = h + z (c − h)

#include <ATen/Dispatch.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>

#include "fused_common.h"

namespace pararnn_cpu {
namespace {

// h[t, d0:d0+n] for t = 0..T-1 of one batch row; u_b (T, 3, D), h_b (T, D) and h0_b (D) of that row.
template <typename T>
void gru_forward_block(const T* __restrict u_b, const T* __restrict A, const T* __restrict h0_b,
                       T* __restrict h_b, int64_t steps, int64_t D, int64_t d0, int64_t n) {
  alignas(64) T state[kMaxBlock<T>];
  for (int64_t i = 0; i < n; ++i) state[i] = h0_b[d0 + i];
  const T* __restrict a_z = A + d0;
  const T* __restrict a_r = A + D + d0;
  const T* __restrict a_c = A + 2 * D + d0;
  for (int64_t t = 0; t < steps; ++t) {
    const T* __restrict u_z = u_b + t * 3 * D + d0;
    const T* __restrict u_r = u_z + D;
    const T* __restrict u_c = u_r + D;
    T* __restrict out = h_b + t * D + d0;
    if (t + kPrefetchSteps < steps) {
      for (int64_t k = 0; k < 3; ++k) prefetch_row(u_z + kPrefetchSteps * 3 * D + k * D, n);
    }
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      const T x = state[i];
      const T z = sigmoid(a_z[i] * x + u_z[i]);
      const T r = sigmoid(a_r[i] * x + u_r[i]);
      const T c = tanh(a_c[i] * (x * r) + u_c[i]);
      const T y = x + z * (c - x);
      state[i] = y;
      out[i] = y;
    }
  }
}

// Reverse pass for one (batch row, channel block): λ_t = g_t + J_{t+1}ᵀ λ_{t+1}; writes grad_u_b
// (T, 3, D), grad_h0_b (D) and adds Σ_t λ_t ∂f/∂A into grad_A_b (3, D), this row's partial sum.
template <typename T>
void gru_backward_block(const T* __restrict g_b, const T* __restrict u_b, const T* __restrict A,
                        const T* __restrict h0_b, const T* __restrict h_b, T* __restrict grad_u_b,
                        T* __restrict grad_A_b, T* __restrict grad_h0_b, int64_t steps, int64_t D, int64_t d0,
                        int64_t n) {
  alignas(64) T carry[kMaxBlock<T>];  // J_{t+1}ᵀ λ_{t+1}
  alignas(64) T acc_z[kMaxBlock<T>];
  alignas(64) T acc_r[kMaxBlock<T>];
  alignas(64) T acc_c[kMaxBlock<T>];
  for (int64_t i = 0; i < n; ++i) carry[i] = acc_z[i] = acc_r[i] = acc_c[i] = T(0);
  const T* __restrict a_z = A + d0;
  const T* __restrict a_r = A + D + d0;
  const T* __restrict a_c = A + 2 * D + d0;
  for (int64_t t = steps - 1; t >= 0; --t) {
    const T* __restrict u_z = u_b + t * 3 * D + d0;
    const T* __restrict u_r = u_z + D;
    const T* __restrict u_c = u_r + D;
    const T* __restrict prev = (t > 0 ? h_b + (t - 1) * D : h0_b) + d0;
    const T* __restrict g = g_b + t * D + d0;
    T* __restrict gu_z = grad_u_b + t * 3 * D + d0;
    T* __restrict gu_r = gu_z + D;
    T* __restrict gu_c = gu_r + D;
    if (t >= kPrefetchSteps + 1) {
      for (int64_t k = 0; k < 3; ++k) prefetch_row(u_z - kPrefetchSteps * 3 * D + k * D, n);
      prefetch_row(prev - kPrefetchSteps * D, n);
      prefetch_row(g - kPrefetchSteps * D, n);
    }
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      const T lam = g[i] + carry[i];
      const T x = prev[i];
      const T z = sigmoid(a_z[i] * x + u_z[i]);
      const T r = sigmoid(a_r[i] * x + u_r[i]);
      const T xr = x * r;
      const T c = tanh(a_c[i] * xr + u_c[i]);
      const T gz = lam * (c - x) * z * (T(1) - z);  // ∂/∂(a_z x + u_z)
      const T gc = lam * z * (T(1) - c * c);        // ∂/∂(a_c x r + u_c)
      const T gxr = gc * a_c[i];                    // ∂/∂(x r)
      const T gr = gxr * x * r * (T(1) - r);        // ∂/∂(a_r x + u_r)
      store_gates(gu_z, gu_r, gu_c, i, gz, gr, gc);
      acc_z[i] += gz * x;
      acc_r[i] += gr * x;
      acc_c[i] += gc * xr;
      carry[i] = lam * (T(1) - z) + gz * a_z[i] + gr * a_r[i] + gxr * r;
    }
  }
  for (int64_t i = 0; i < n; ++i) {
    grad_h0_b[d0 + i] = carry[i];
    grad_A_b[d0 + i] = acc_z[i];
    grad_A_b[D + d0 + i] = acc_r[i];
    grad_A_b[2 * D + d0 + i] = acc_c[i];
  }
}

}  // namespace

at::Tensor gru_forward(const at::Tensor& u, const at::Tensor& A, const at::Tensor& h0) {
  check_u_and_A("paragru forward", u, A);
  const int64_t B = u.size(0), steps = u.size(1), D = u.size(3);
  check_tensor(h0, "h0", u.scalar_type(), {B, D});
  at::Tensor h = empty_output({B, steps, D}, u.options());
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "paragru_forward", [&] {
    run_blocks<gru_forward_block<scalar_t>>(B, steps, D, kMaxBlock<scalar_t>, rows_in<scalar_t>(u, steps * 3 * D),
                                            A.const_data_ptr<scalar_t>(), rows_in<scalar_t>(h0, D),
                                            rows_out<scalar_t>(h, steps * D));
  });
  return h;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> gru_backward(const at::Tensor& grad_h, const at::Tensor& u,
                                                            const at::Tensor& A, const at::Tensor& h0,
                                                            const at::Tensor& h) {
  check_u_and_A("paragru backward", u, A);
  const int64_t B = u.size(0), steps = u.size(1), D = u.size(3);
  check_tensor(h0, "h0", u.scalar_type(), {B, D});
  check_tensor(h, "h", u.scalar_type(), {B, steps, D});
  check_tensor(grad_h, "grad_h", u.scalar_type(), {B, steps, D});
  at::Tensor grad_u = empty_output(u.sizes(), u.options());
  at::Tensor grad_A_rows = at::zeros({B, 3, D}, u.options());  // per-row partial sums: deterministic
  at::Tensor grad_h0 = at::zeros_like(h0);
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "paragru_backward", [&] {
    run_blocks<gru_backward_block<scalar_t>>(
        B, steps, D, kMaxBlock<scalar_t>, rows_in<scalar_t>(grad_h, steps * D), rows_in<scalar_t>(u, steps * 3 * D),
        A.const_data_ptr<scalar_t>(), rows_in<scalar_t>(h0, D), rows_in<scalar_t>(h, steps * D),
        rows_out<scalar_t>(grad_u, steps * 3 * D), rows_out<scalar_t>(grad_A_rows, 3 * D),
        rows_out<scalar_t>(grad_h0, D));
  });
  return {grad_u, grad_A_rows.sum(0), grad_h0};
}

}  // namespace pararnn_cpu
