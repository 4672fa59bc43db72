// The two recurrences h_t = f(h_{t-1}, u_t) of one channel, with their Jacobian J = df/dh_{t-1} and
// vector-Jacobian product. The maths are those of pararnn_ts/cells/gru.py and lstm.py.
//
// A cell provides:
//   K (state floats), G (gates in u), NW (weight rows: A then C),
//   value(s, u)            f(s, u)
//   value_jac(s, u, J)     f(s, u) and J
//   vjp(s, u, lam, gu, gw) returns J^T lam; writes gu = lam^T df/du; adds lam^T df/dw to gw
#pragma once

#include "common.cuh"

namespace pararnn_cuda {

// ParaGRU: z = σ(a_z h + u_z); r = σ(a_r h + u_r); c = tanh(a_c (h r) + u_c); h' = h + z (c − h).
struct GruCell {
  static constexpr int K = 1;
  static constexpr int G = 3;
  static constexpr int NW = kGruRows;
  float a_z, a_r, a_c;

  __device__ GruCell(const float* __restrict__ A, const float* __restrict__ /*C*/, int d, int D)
      : a_z(A[d]), a_r(A[D + d]), a_c(A[2 * D + d]) {}

  __device__ __forceinline__ Vec<1> value(const Vec<1>& s, const float (&u)[G]) const {
    const float h = s.v[0];
    const float z = sigmoid(fmaf(a_z, h, u[0]));
    const float r = sigmoid(fmaf(a_r, h, u[1]));
    const float c = tanhf(fmaf(a_c, h * r, u[2]));
    return Vec<1>{{fmaf(z, c - h, h)}};
  }

  __device__ __forceinline__ Vec<1> value_jac(const Vec<1>& s, const float (&u)[G], Mat<1>& J) const {
    const float h = s.v[0];
    const float z = sigmoid(fmaf(a_z, h, u[0]));
    const float r = sigmoid(fmaf(a_r, h, u[1]));
    const float c = tanhf(fmaf(a_c, h * r, u[2]));
    const float dz = z * (1.f - z) * a_z;
    const float dr = r * (1.f - r) * a_r;
    const float dc = (1.f - c * c) * a_c * fmaf(h, dr, r);
    J.m[0][0] = (1.f - z) + dz * (c - h) + z * dc;
    return Vec<1>{{fmaf(z, c - h, h)}};
  }

  __device__ __forceinline__ Vec<1> vjp(const Vec<1>& s, const float (&u)[G], const Vec<1>& lam, float (&gu)[G],
                                        float (&gw)[NW]) const {
    const float h = s.v[0], l = lam.v[0];
    const float z = sigmoid(fmaf(a_z, h, u[0]));
    const float r = sigmoid(fmaf(a_r, h, u[1]));
    const float c = tanhf(fmaf(a_c, h * r, u[2]));
    const float g_z = l * (c - h) * z * (1.f - z);  // d/d(pre-activation of z)
    const float g_c = l * z * (1.f - c * c);
    const float g_r = g_c * a_c * h * r * (1.f - r);
    gu[0] = g_z;
    gu[1] = g_r;
    gu[2] = g_c;
    gw[0] = fmaf(g_z, h, gw[0]);
    gw[1] = fmaf(g_r, h, gw[1]);
    gw[2] = fmaf(g_c, h * r, gw[2]);
    return Vec<1>{{l * (1.f - z) + g_z * a_z + g_r * a_r + g_c * a_c * r}};
  }
};

// ParaLSTM, state [c, h]: f = σ(a_f h + u_f + p_f c); z = tanh(a_z h + u_z); c' = f c + (1 − f) z;
// o = σ(a_o h + u_o + p_o c'); h' = o tanh(c').
struct LstmCell {
  static constexpr int K = 2;
  static constexpr int G = 3;
  static constexpr int NW = kLstmRows;
  float a_f, a_z, a_o, p_f, p_o;

  __device__ LstmCell(const float* __restrict__ A, const float* __restrict__ C, int d, int D)
      : a_f(A[d]), a_z(A[D + d]), a_o(A[2 * D + d]), p_f(C[d]), p_o(C[D + d]) {}

  struct Gates {
    float f, z, c_new, o, tanh_c;
  };

  __device__ __forceinline__ Gates gates(const Vec<2>& s, const float (&u)[G]) const {
    const float c = s.v[0], h = s.v[1];
    Gates g;
    g.f = sigmoid(fmaf(a_f, h, u[0]) + p_f * c);
    g.z = tanhf(fmaf(a_z, h, u[1]));
    g.c_new = fmaf(g.f, c - g.z, g.z);  // f c + (1 − f) z
    g.o = sigmoid(fmaf(a_o, h, u[2]) + p_o * g.c_new);
    g.tanh_c = tanhf(g.c_new);
    return g;
  }

  __device__ __forceinline__ Vec<2> value(const Vec<2>& s, const float (&u)[G]) const {
    const Gates g = gates(s, u);
    return Vec<2>{{g.c_new, g.o * g.tanh_c}};
  }

  __device__ __forceinline__ Vec<2> value_jac(const Vec<2>& s, const float (&u)[G], Mat<2>& J) const {
    const Gates g = gates(s, u);
    const float c = s.v[0];
    const float df = g.f * (1.f - g.f);
    const float dcc = g.f + df * p_f * (c - g.z);                                   // ∂c'/∂c
    const float dch = df * a_f * (c - g.z) + (1.f - g.f) * (1.f - g.z * g.z) * a_z;  // ∂c'/∂h
    const float d_o = g.o * (1.f - g.o);
    const float dh_dc_new = d_o * p_o * g.tanh_c + g.o * (1.f - g.tanh_c * g.tanh_c);
    J.m[0][0] = dcc;
    J.m[0][1] = dch;
    J.m[1][0] = dh_dc_new * dcc;
    J.m[1][1] = d_o * a_o * g.tanh_c + dh_dc_new * dch;
    return Vec<2>{{g.c_new, g.o * g.tanh_c}};
  }

  __device__ __forceinline__ Vec<2> vjp(const Vec<2>& s, const float (&u)[G], const Vec<2>& lam, float (&gu)[G],
                                        float (&gw)[NW]) const {
    const Gates g = gates(s, u);
    const float c = s.v[0], h = s.v[1], l_c = lam.v[0], l_h = lam.v[1];
    const float g_o = l_h * g.tanh_c * g.o * (1.f - g.o);                                  // d/d(pre o)
    const float g_c_new = l_c + l_h * g.o * (1.f - g.tanh_c * g.tanh_c) + g_o * p_o;        // total d/dc'
    const float g_f = g_c_new * (c - g.z) * g.f * (1.f - g.f);                              // d/d(pre f)
    const float g_z = g_c_new * (1.f - g.f) * (1.f - g.z * g.z);                            // d/d(pre z)
    gu[0] = g_f;
    gu[1] = g_z;
    gu[2] = g_o;
    gw[0] = fmaf(g_f, h, gw[0]);
    gw[1] = fmaf(g_z, h, gw[1]);
    gw[2] = fmaf(g_o, h, gw[2]);
    gw[3] = fmaf(g_f, c, gw[3]);
    gw[4] = fmaf(g_o, g.c_new, gw[4]);
    return Vec<2>{{g_c_new * g.f + g_f * p_f, g_f * a_f + g_z * a_z + g_o * a_o}};
  }
};

}  // namespace pararnn_cuda
