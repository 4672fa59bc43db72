// Fused sequential ParaLSTM on CPU (DESIGN.md §5): one pass over time per (batch row, channel block),
// vectorised over the contiguous channels; the state [c, h] is interleaved per channel in memory and
// kept as two de-interleaved block buffers in the kernel. Backward recomputes the 2×2 Jacobian blocks.
//
//   f = σ(a_f h + u_f + p_f c),  z = tanh(a_z h + u_z),  c' = f c + (1 − f) z,
//   o = σ(a_o h + u_o + p_o c'),  h' = o tanh(c')

#include <ATen/Dispatch.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>

#include "fused_common.h"

namespace pararnn_cpu {
namespace {

// s[t, d0:d0+n, :] for t = 0..T-1 of one batch row; u_b (T, 3, D), s_b (T, D, 2) and s0_b (D, 2).
template <typename T>
void lstm_forward_block(const T* __restrict u_b, const T* __restrict A, const T* __restrict C,
                        const T* __restrict s0_b, T* __restrict s_b, int64_t steps, int64_t D, int64_t d0,
                        int64_t n) {
  alignas(64) T cell[kMaxBlock<T>];
  alignas(64) T hid[kMaxBlock<T>];
  for (int64_t i = 0; i < n; ++i) {
    cell[i] = s0_b[2 * (d0 + i)];
    hid[i] = s0_b[2 * (d0 + i) + 1];
  }
  const T* __restrict a_f = A + d0;
  const T* __restrict a_z = A + D + d0;
  const T* __restrict a_o = A + 2 * D + d0;
  const T* __restrict p_f = C + d0;
  const T* __restrict p_o = C + D + d0;
  for (int64_t t = 0; t < steps; ++t) {
    const T* __restrict u_f = u_b + t * 3 * D + d0;
    const T* __restrict u_z = u_f + D;
    const T* __restrict u_o = u_z + D;
    T* __restrict out = s_b + 2 * (t * D + d0);
    if (t + kPrefetchSteps < steps) {
      for (int64_t k = 0; k < 3; ++k) prefetch_row(u_f + kPrefetchSteps * 3 * D + k * D, n);
    }
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      const T c = cell[i];
      const T x = hid[i];
      const T f = sigmoid(a_f[i] * x + u_f[i] + p_f[i] * c);
      const T z = tanh(a_z[i] * x + u_z[i]);
      const T c_new = z + f * (c - z);
      const T o = sigmoid(a_o[i] * x + u_o[i] + p_o[i] * c_new);
      const T h_new = o * tanh(c_new);
      cell[i] = c_new;
      hid[i] = h_new;
      out[2 * i] = c_new;
      out[2 * i + 1] = h_new;
    }
  }
}

// Reverse pass for one (batch row, channel block): λ_t = g_t + J_{t+1}ᵀ λ_{t+1} with 2×2 blocks;
// writes grad_u_b (T, 3, D), grad_s0_b (D, 2) and this row's partial sums grad_A_b (3, D), grad_C_b (2, D).
template <typename T>
void lstm_backward_block(const T* __restrict g_b, const T* __restrict u_b, const T* __restrict A,
                         const T* __restrict C, const T* __restrict s0_b, const T* __restrict s_b,
                         T* __restrict grad_u_b, T* __restrict grad_A_b, T* __restrict grad_C_b,
                         T* __restrict grad_s0_b, int64_t steps, int64_t D, int64_t d0, int64_t n) {
  alignas(64) T carry_c[kMaxBlock<T>];  // J_{t+1}ᵀ λ_{t+1}, c and h components
  alignas(64) T carry_h[kMaxBlock<T>];
  alignas(64) T acc_f[kMaxBlock<T>];
  alignas(64) T acc_z[kMaxBlock<T>];
  alignas(64) T acc_o[kMaxBlock<T>];
  alignas(64) T acc_pf[kMaxBlock<T>];
  alignas(64) T acc_po[kMaxBlock<T>];
  for (int64_t i = 0; i < n; ++i) {
    carry_c[i] = carry_h[i] = T(0);
    acc_f[i] = acc_z[i] = acc_o[i] = acc_pf[i] = acc_po[i] = T(0);
  }
  const T* __restrict a_f = A + d0;
  const T* __restrict a_z = A + D + d0;
  const T* __restrict a_o = A + 2 * D + d0;
  const T* __restrict p_f = C + d0;
  const T* __restrict p_o = C + D + d0;
  for (int64_t t = steps - 1; t >= 0; --t) {
    const T* __restrict u_f = u_b + t * 3 * D + d0;
    const T* __restrict u_z = u_f + D;
    const T* __restrict u_o = u_z + D;
    const T* __restrict prev = (t > 0 ? s_b + 2 * (t - 1) * D : s0_b) + 2 * d0;
    const T* __restrict g = g_b + 2 * (t * D + d0);
    T* __restrict gu_f = grad_u_b + t * 3 * D + d0;
    T* __restrict gu_z = gu_f + D;
    T* __restrict gu_o = gu_z + D;
    if (t >= kPrefetchSteps + 1) {
      for (int64_t k = 0; k < 3; ++k) prefetch_row(u_f - kPrefetchSteps * 3 * D + k * D, n);
      prefetch_row(prev - 2 * kPrefetchSteps * D, 2 * n);
      prefetch_row(g - 2 * kPrefetchSteps * D, 2 * n);
    }
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      const T lam_c = g[2 * i] + carry_c[i];
      const T lam_h = g[2 * i + 1] + carry_h[i];
      const T c = prev[2 * i];
      const T x = prev[2 * i + 1];
      const T f = sigmoid(a_f[i] * x + u_f[i] + p_f[i] * c);
      const T z = tanh(a_z[i] * x + u_z[i]);
      const T c_new = z + f * (c - z);
      const T o = sigmoid(a_o[i] * x + u_o[i] + p_o[i] * c_new);
      const T tc = tanh(c_new);
      const T go = lam_h * tc * o * (T(1) - o);                                // ∂/∂(o's pre-activation)
      const T gc_new = lam_c + lam_h * o * (T(1) - tc * tc) + go * p_o[i];  // ∂/∂c'
      const T gf = gc_new * (c - z) * f * (T(1) - f);                          // ∂/∂(f's pre-activation)
      const T gz = gc_new * (T(1) - f) * (T(1) - z * z);                       // ∂/∂(z's pre-activation)
      store_gates(gu_f, gu_z, gu_o, i, gf, gz, go);
      acc_f[i] += gf * x;
      acc_z[i] += gz * x;
      acc_o[i] += go * x;
      acc_pf[i] += gf * c;
      acc_po[i] += go * c_new;
      carry_c[i] = gc_new * f + gf * p_f[i];
      carry_h[i] = gf * a_f[i] + gz * a_z[i] + go * a_o[i];
    }
  }
  for (int64_t i = 0; i < n; ++i) {
    grad_s0_b[2 * (d0 + i)] = carry_c[i];
    grad_s0_b[2 * (d0 + i) + 1] = carry_h[i];
    grad_A_b[d0 + i] = acc_f[i];
    grad_A_b[D + d0 + i] = acc_z[i];
    grad_A_b[2 * D + d0 + i] = acc_o[i];
    grad_C_b[d0 + i] = acc_pf[i];
    grad_C_b[D + d0 + i] = acc_po[i];
  }
}

}  // namespace

at::Tensor lstm_forward(const at::Tensor& u, const at::Tensor& A, const at::Tensor& C, const at::Tensor& h0) {
  check_u_and_A("paralstm forward", u, A);
  const int64_t B = u.size(0), steps = u.size(1), D = u.size(3);
  check_tensor(C, "C", u.scalar_type(), {2, D});
  check_tensor(h0, "h0", u.scalar_type(), {B, D, 2});
  at::Tensor s = empty_output({B, steps, D, 2}, u.options());
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "paralstm_forward", [&] {
    run_blocks<lstm_forward_block<scalar_t>>(B, steps, D, kMaxBlock<scalar_t>, rows_in<scalar_t>(u, steps * 3 * D),
                                             A.const_data_ptr<scalar_t>(), C.const_data_ptr<scalar_t>(),
                                             rows_in<scalar_t>(h0, D * 2), rows_out<scalar_t>(s, steps * D * 2));
  });
  return s;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_backward(const at::Tensor& grad_h,
                                                                         const at::Tensor& u, const at::Tensor& A,
                                                                         const at::Tensor& C, const at::Tensor& h0,
                                                                         const at::Tensor& h) {
  check_u_and_A("paralstm backward", u, A);
  const int64_t B = u.size(0), steps = u.size(1), D = u.size(3);
  check_tensor(C, "C", u.scalar_type(), {2, D});
  check_tensor(h0, "h0", u.scalar_type(), {B, D, 2});
  check_tensor(h, "h", u.scalar_type(), {B, steps, D, 2});
  check_tensor(grad_h, "grad_h", u.scalar_type(), {B, steps, D, 2});
  at::Tensor grad_u = empty_output(u.sizes(), u.options());
  at::Tensor grad_A_rows = at::zeros({B, 3, D}, u.options());  // per-row partial sums: deterministic
  at::Tensor grad_C_rows = at::zeros({B, 2, D}, u.options());
  at::Tensor grad_h0 = at::zeros_like(h0);
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "paralstm_backward", [&] {
    run_blocks<lstm_backward_block<scalar_t>>(
        B, steps, D, kMaxBlock<scalar_t>, rows_in<scalar_t>(grad_h, steps * D * 2),
        rows_in<scalar_t>(u, steps * 3 * D), A.const_data_ptr<scalar_t>(), C.const_data_ptr<scalar_t>(),
        rows_in<scalar_t>(h0, D * 2), rows_in<scalar_t>(h, steps * D * 2), rows_out<scalar_t>(grad_u, steps * 3 * D),
        rows_out<scalar_t>(grad_A_rows, 3 * D), rows_out<scalar_t>(grad_C_rows, 2 * D),
        rows_out<scalar_t>(grad_h0, D * 2));
  });
  return {grad_u, grad_A_rows.sum(0), grad_C_rows.sum(0), grad_h0};
}

}  // namespace pararnn_cpu
