// Torch bindings of the CUDA kernels (launchers.cuh): check the tensors, allocate the outputs, launch on
// the current stream, reduce the per-block outputs. Built by pararnn_ts/ops/cuda.py.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>

#include <climits>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "launchers.cuh"

namespace {

using at::Tensor;

constexpr const char* kWho = "pararnn_ts cuda: ";

// Numbers are formatted with std::to_string, never streamed: on the CUDA image we test on (GCC 13 against
// torch 2.11), `ostream << int64_t` inside an extension crashes (a segfault in std::ostream::_M_insert<long>).
std::string num(int64_t value) { return std::to_string(value); }

std::string shape_str(at::IntArrayRef shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i) text += (i ? ", " : "") + num(shape[i]);
  return text + "]";
}

int dtype_code(const Tensor& t, const char* name) {
  switch (t.scalar_type()) {
    case at::kFloat:
      return pararnn_cuda::kFloat32;
    case at::kHalf:
      return pararnn_cuda::kFloat16;
    case at::kBFloat16:
      return pararnn_cuda::kBFloat16;
    default:
      TORCH_CHECK(false, kWho, name, " must be float32, float16 or bfloat16, got ", t.scalar_type());
  }
  return -1;
}

// `t` is a contiguous tensor of `shape` on `device` (and of `dtype` when given).
void check(const Tensor& t, const char* name, const at::Device& device, std::optional<at::ScalarType> dtype,
           at::IntArrayRef shape) {
  TORCH_CHECK(t.device() == device, kWho, name, " is on ", t.device(), ", expected ", device);
  TORCH_CHECK(!dtype.has_value() || t.scalar_type() == *dtype, kWho, name, " must be ", *dtype, ", got ",
              t.scalar_type());
  TORCH_CHECK(t.sizes() == shape, kWho, name, " has shape ", shape_str(t.sizes()), ", expected ", shape_str(shape));
  TORCH_CHECK(t.is_contiguous(), kWho, name, " must be contiguous");
}

void check_config(int64_t warps, int64_t steps) {
  TORCH_CHECK(warps >= 1 && warps <= pararnn_cuda::kMaxWarps, kWho, "warps must be in [1, ",
              num(pararnn_cuda::kMaxWarps), "], got ", num(warps));
  TORCH_CHECK(steps == 4 || steps == 8 || steps == 16, kWho, "steps must be 4, 8 or 16, got ", num(steps));
}

void check_sizes(int64_t B, int64_t T, int64_t D) {
  TORCH_CHECK(B <= INT_MAX && T <= INT_MAX && D <= INT_MAX && pararnn_cuda::tiles(B, D) <= INT_MAX, kWho,
              "sizes too large: batch ", num(B), ", steps ", num(T), ", channels ", num(D));
}

void check_launch(cudaError_t error, const char* what) {
  TORCH_CHECK(error == cudaSuccess, kWho, what, " failed: ", cudaGetErrorString(error));
}

// u (B, T, 3, D): checked, returns (B, T, D).
std::tuple<int64_t, int64_t, int64_t> input_sizes(const Tensor& u) {
  TORCH_CHECK(u.is_cuda(), kWho, "u must be a CUDA tensor, got one on ", u.device());
  TORCH_CHECK(u.dim() == 4 && u.size(2) == 3, kWho, "u must be (batch, steps, 3, channels), got ",
              shape_str(u.sizes()));
  TORCH_CHECK(u.is_contiguous(), kWho, "u must be contiguous");
  dtype_code(u, "u");
  check_sizes(u.size(0), u.size(1), u.size(3));
  return {u.size(0), u.size(1), u.size(3)};
}

at::TensorOptions f32(const Tensor& like) { return like.options().dtype(at::kFloat); }

// (tiles, 2) per-block [residual, updates] -> (2,) worst over blocks (NaN propagates).
Tensor reduce_stats(const Tensor& tile_stats) {
  return tile_stats.size(0) == 0 ? at::zeros({2}, tile_stats.options()) : tile_stats.amax(0);
}

std::tuple<Tensor, Tensor> gru_forward(const Tensor& u, const Tensor& A, const Tensor& h0, double tol,
                                       int64_t max_iters, int64_t warps, int64_t steps) {
  const auto [B, T, D] = input_sizes(u);
  const at::Device device = u.device();
  check(A, "A", device, at::kFloat, {3, D});
  check(h0, "h0", device, at::kFloat, {B, D});
  check_config(warps, steps);
  TORCH_CHECK(max_iters >= 0 && max_iters <= INT_MAX, kWho, "max_iters must be >= 0, got ", num(max_iters));
  const c10::cuda::CUDAGuard guard(device);
  Tensor h = at::empty({B, T, D}, f32(u));
  Tensor tile_stats = at::empty({static_cast<int64_t>(pararnn_cuda::tiles(B, D)), 2}, f32(u));
  check_launch(pararnn_cuda::gru_forward(dtype_code(u, "u"), u.data_ptr(), A.data_ptr<float>(),
                                         h0.data_ptr<float>(), h.data_ptr<float>(), tile_stats.data_ptr<float>(),
                                         int(B), int(T), int(D), float(tol), int(max_iters), int(warps), int(steps),
                                         c10::cuda::getCurrentCUDAStream().stream()),
               "gru_forward");
  return {h, reduce_stats(tile_stats)};
}

std::tuple<Tensor, Tensor, Tensor> gru_backward(const Tensor& grad_h, const Tensor& u, const Tensor& A,
                                                const Tensor& h0, const Tensor& h, int64_t warps, int64_t steps) {
  const auto [B, T, D] = input_sizes(u);
  const at::Device device = u.device();
  check(grad_h, "grad_h", device, at::kFloat, {B, T, D});
  check(A, "A", device, at::kFloat, {3, D});
  check(h0, "h0", device, at::kFloat, {B, D});
  check(h, "h", device, at::kFloat, {B, T, D});
  check_config(warps, steps);
  const c10::cuda::CUDAGuard guard(device);
  Tensor grad_u = at::empty({B, T, 3, D}, f32(u));
  Tensor grad_w = at::empty({B, pararnn_cuda::kGruRows, D}, f32(u));
  Tensor grad_h0 = at::empty({B, D}, f32(u));
  check_launch(pararnn_cuda::gru_backward(dtype_code(u, "u"), grad_h.data_ptr<float>(), u.data_ptr(),
                                          A.data_ptr<float>(), h0.data_ptr<float>(), h.data_ptr<float>(),
                                          grad_u.data_ptr<float>(), grad_w.data_ptr<float>(),
                                          grad_h0.data_ptr<float>(), int(B), int(T), int(D), int(warps), int(steps),
                                          c10::cuda::getCurrentCUDAStream().stream()),
               "gru_backward");
  return {grad_u, grad_w.sum(0), grad_h0};
}

std::tuple<Tensor, Tensor> lstm_forward(const Tensor& u, const Tensor& A, const Tensor& C, const Tensor& h0,
                                        double tol, int64_t max_iters, int64_t warps, int64_t steps) {
  const auto [B, T, D] = input_sizes(u);
  const at::Device device = u.device();
  check(A, "A", device, at::kFloat, {3, D});
  check(C, "C", device, at::kFloat, {2, D});
  check(h0, "h0", device, at::kFloat, {B, D, 2});
  check_config(warps, steps);
  TORCH_CHECK(max_iters >= 0 && max_iters <= INT_MAX, kWho, "max_iters must be >= 0, got ", num(max_iters));
  const c10::cuda::CUDAGuard guard(device);
  Tensor h = at::empty({B, T, D, 2}, f32(u));
  Tensor tile_stats = at::empty({static_cast<int64_t>(pararnn_cuda::tiles(B, D)), 2}, f32(u));
  check_launch(pararnn_cuda::lstm_forward(dtype_code(u, "u"), u.data_ptr(), A.data_ptr<float>(),
                                          C.data_ptr<float>(), h0.data_ptr<float>(), h.data_ptr<float>(),
                                          tile_stats.data_ptr<float>(), int(B), int(T), int(D), float(tol),
                                          int(max_iters), int(warps), int(steps),
                                          c10::cuda::getCurrentCUDAStream().stream()),
               "lstm_forward");
  return {h, reduce_stats(tile_stats)};
}

std::tuple<Tensor, Tensor, Tensor, Tensor> lstm_backward(const Tensor& grad_h, const Tensor& u, const Tensor& A,
                                                         const Tensor& C, const Tensor& h0, const Tensor& h,
                                                         int64_t warps, int64_t steps) {
  const auto [B, T, D] = input_sizes(u);
  const at::Device device = u.device();
  check(grad_h, "grad_h", device, at::kFloat, {B, T, D, 2});
  check(A, "A", device, at::kFloat, {3, D});
  check(C, "C", device, at::kFloat, {2, D});
  check(h0, "h0", device, at::kFloat, {B, D, 2});
  check(h, "h", device, at::kFloat, {B, T, D, 2});
  check_config(warps, steps);
  const c10::cuda::CUDAGuard guard(device);
  Tensor grad_u = at::empty({B, T, 3, D}, f32(u));
  Tensor grad_w = at::empty({B, pararnn_cuda::kLstmRows, D}, f32(u));
  Tensor grad_h0 = at::empty({B, D, 2}, f32(u));
  check_launch(pararnn_cuda::lstm_backward(dtype_code(u, "u"), grad_h.data_ptr<float>(), u.data_ptr(),
                                           A.data_ptr<float>(), C.data_ptr<float>(), h0.data_ptr<float>(),
                                           h.data_ptr<float>(), grad_u.data_ptr<float>(), grad_w.data_ptr<float>(),
                                           grad_h0.data_ptr<float>(), int(B), int(T), int(D), int(warps),
                                           int(steps), c10::cuda::getCurrentCUDAStream().stream()),
               "lstm_backward");
  const Tensor grad_w_total = grad_w.sum(0);
  return {grad_u, grad_w_total.slice(0, 0, 3).contiguous(), grad_w_total.slice(0, 3, 5).contiguous(), grad_h0};
}

// Shared by both scans: J (B, T, D, *jac), b (B, T, D, *state), x0 (B, D, *state) or None.
Tensor scan(const Tensor& J, const Tensor& b, const std::optional<Tensor>& x0, bool reverse, int64_t warps,
            int64_t steps, bool block2) {
  const char* what = block2 ? "block2_scan" : "diagonal_scan";
  const int64_t extra = block2 ? 2 : 0;
  TORCH_CHECK(J.is_cuda(), kWho, what, ": J must be a CUDA tensor, got one on ", J.device());
  TORCH_CHECK(J.dim() == 3 + extra && (!block2 || (J.size(3) == 2 && J.size(4) == 2)), kWho, what,
              ": J must be ", block2 ? "(batch, steps, channels, 2, 2)" : "(batch, steps, channels)", ", got ",
              shape_str(J.sizes()));
  TORCH_CHECK(J.is_contiguous(), kWho, what, ": J must be contiguous");
  const int64_t B = J.size(0), T = J.size(1), D = J.size(2);
  check_sizes(B, T, D);
  const int dtype = dtype_code(J, "J");
  const at::Device device = J.device();
  std::vector<int64_t> state_shape{B, T, D};
  std::vector<int64_t> x0_shape{B, D};
  if (block2) {
    state_shape.push_back(2);
    x0_shape.push_back(2);
  }
  check(b, "b", device, J.scalar_type(), state_shape);
  const float* x0_ptr = nullptr;
  if (x0.has_value()) {
    check(*x0, "x0", device, at::kFloat, x0_shape);
    x0_ptr = x0->data_ptr<float>();
  }
  check_config(warps, steps);
  const c10::cuda::CUDAGuard guard(device);
  Tensor x = at::empty(state_shape, f32(J));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  const cudaError_t error =
      block2 ? pararnn_cuda::block2_scan(dtype, J.data_ptr(), b.data_ptr(), x0_ptr, x.data_ptr<float>(), int(B),
                                         int(T), int(D), reverse, int(warps), int(steps), stream)
             : pararnn_cuda::diagonal_scan(dtype, J.data_ptr(), b.data_ptr(), x0_ptr, x.data_ptr<float>(), int(B),
                                           int(T), int(D), reverse, int(warps), int(steps), stream);
  check_launch(error, what);
  return x;
}

Tensor diagonal_scan(const Tensor& J, const Tensor& b, const std::optional<Tensor>& x0, bool reverse,
                     int64_t warps, int64_t steps) {
  return scan(J, b, x0, reverse, warps, steps, false);
}

Tensor block2_scan(const Tensor& J, const Tensor& b, const std::optional<Tensor>& x0, bool reverse, int64_t warps,
                   int64_t steps) {
  return scan(J, b, x0, reverse, warps, steps, true);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "pararnn_ts fused CUDA kernels (ParaGRU / ParaLSTM Newton forward, adjoint backward, linear scans)";
  m.def("gru_forward", &gru_forward, "(u, A, h0, tol, max_iters, warps, steps) -> (h, stats)", py::arg("u"),
        py::arg("A"), py::arg("h0"), py::arg("tol"), py::arg("max_iters"), py::arg("warps"), py::arg("steps"));
  m.def("gru_backward", &gru_backward, "(grad_h, u, A, h0, h, warps, steps) -> (grad_u, grad_A, grad_h0)",
        py::arg("grad_h"), py::arg("u"), py::arg("A"), py::arg("h0"), py::arg("h"), py::arg("warps"),
        py::arg("steps"));
  m.def("lstm_forward", &lstm_forward, "(u, A, C, h0, tol, max_iters, warps, steps) -> (h, stats)", py::arg("u"),
        py::arg("A"), py::arg("C"), py::arg("h0"), py::arg("tol"), py::arg("max_iters"), py::arg("warps"),
        py::arg("steps"));
  m.def("lstm_backward", &lstm_backward,
        "(grad_h, u, A, C, h0, h, warps, steps) -> (grad_u, grad_A, grad_C, grad_h0)", py::arg("grad_h"),
        py::arg("u"), py::arg("A"), py::arg("C"), py::arg("h0"), py::arg("h"), py::arg("warps"), py::arg("steps"));
  m.def("diagonal_scan", &diagonal_scan, "(J, b, x0, reverse, warps, steps) -> x", py::arg("J"), py::arg("b"),
        py::arg("x0"), py::arg("reverse"), py::arg("warps"), py::arg("steps"));
  m.def("block2_scan", &block2_scan, "(J, b, x0, reverse, warps, steps) -> x", py::arg("J"), py::arg("b"),
        py::arg("x0"), py::arg("reverse"), py::arg("warps"), py::arg("steps"));
}
