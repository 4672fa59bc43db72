// Python bindings of the fused CPU kernels (module built by pararnn_ts/ops/cpu.py). The GIL is
// released while a kernel runs.
#include <torch/extension.h>

#include "fused_common.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  using release = pybind11::call_guard<pybind11::gil_scoped_release>;
  m.doc() = "pararnn_ts fused sequential ParaGRU / ParaLSTM kernels (CPU)";
  m.def("gru_forward", &pararnn_cpu::gru_forward, "h (B, T, D) from u (B, T, 3, D), A (3, D), h0 (B, D)",
        pybind11::arg("u"), pybind11::arg("A"), pybind11::arg("h0"), release());
  m.def("gru_backward", &pararnn_cpu::gru_backward, "(grad_u, grad_A, grad_h0) from grad_h, u, A, h0, h",
        pybind11::arg("grad_h"), pybind11::arg("u"), pybind11::arg("A"), pybind11::arg("h0"), pybind11::arg("h"),
        release());
  m.def("lstm_forward", &pararnn_cpu::lstm_forward,
        "s (B, T, D, 2) from u (B, T, 3, D), A (3, D), C (2, D), s0 (B, D, 2)", pybind11::arg("u"),
        pybind11::arg("A"), pybind11::arg("C"), pybind11::arg("h0"), release());
  m.def("lstm_backward", &pararnn_cpu::lstm_backward,
        "(grad_u, grad_A, grad_C, grad_h0) from grad_h, u, A, C, h0, h", pybind11::arg("grad_h"),
        pybind11::arg("u"), pybind11::arg("A"), pybind11::arg("C"), pybind11::arg("h0"), pybind11::arg("h"),
        release());
}
