// Selective scan (S6 recurrence) on CPU, float32, forward and backward.
//
//   h_t[n] = exp(delta_t * A[d, n]) * h_{t-1}[n] + delta_t * B[b, n, t] * u_t,   h_{-1} = 0
//   y_t    = sum_n C[b, n, t] * h_t[n]
//
// u, delta: (b, d, l); A: (d, n); B, C: (b, n, l). delta is used as given (bias, softplus and the
// D skip term are applied by the Python wrapper). Work is split over rows (b, d) with
// at::parallel_for (OpenMP). B and C are transposed to (b, l, n) once so that each token reads its
// n states contiguously. Decays are computed in flat arrays with a branch-free exp that the
// compiler vectorises.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include "cpu_math.h"

#include <algorithm>
#include <cstdint>
#include <vector>

namespace {

using mmmv::exp_f32;

constexpr int64_t kTile = 256;  // tokens whose decays the forward computes in one batch

// decay[t * n + k] = exp(delta[t] * A[k]) for t < len, k < n.
MMMV_INLINE void compute_decays(const float* delta, const float* A, int64_t len, int64_t n,
                                float* decay) {
  for (int64_t t = 0; t < len; ++t) {
    for (int64_t k = 0; k < n; ++k) decay[t * n + k] = delta[t] * A[k];
  }
  const int64_t total = len * n;
  for (int64_t i = 0; i < total; ++i) decay[i] = exp_f32(decay[i]);
}

// Pointers to one row (b, d) of the inputs; B and C are (b, l, n).
struct Row {
  const float* u;      // (l,)
  const float* delta;  // (l,)
  const float* A;      // (n,)
  const float* B;      // (l, n)
  const float* C;      // (l, n)
};

// y (l,) of one row. decay: scratch of kTile * n floats; h: scratch of n floats.
MMMV_TARGET_CLONES void forward_row(const Row& row, int64_t l, int64_t n, float* y, float* decay,
                                    float* h) {
  std::fill(h, h + n, 0.0f);
  for (int64_t t0 = 0; t0 < l; t0 += kTile) {
    const int64_t len = std::min(kTile, l - t0);
    compute_decays(row.delta + t0, row.A, len, n, decay);
    for (int64_t i = 0; i < len; ++i) {
      const int64_t t = t0 + i;
      const float drive = row.delta[t] * row.u[t];
      const float* a = decay + i * n;
      const float* b = row.B + t * n;
      const float* c = row.C + t * n;
      float acc = 0.0f;
      for (int64_t k = 0; k < n; ++k) {
        h[k] = a[k] * h[k] + drive * b[k];
        acc += h[k] * c[k];
      }
      y[t] = acc;
    }
  }
}

// Gradient outputs of one row. grad_u, grad_delta: (l,) written; grad_A: (n,) written;
// grad_B, grad_C: (l, n) accumulated (shared by the rows of one task).
struct RowGrads {
  float* u;
  float* delta;
  float* A;
  float* B;
  float* C;
};

// Per-task scratch for the backward: decays (l, n), states (l + 1, n) with a zero first row,
// adjoint state (n,) and the double accumulator of grad_A (n,).
struct BackwardScratch {
  std::vector<float> decay, states, adjoint;
  std::vector<double> grad_A;
  BackwardScratch(int64_t l, int64_t n)
      : decay(l * n), states((l + 1) * n, 0.0f), adjoint(n), grad_A(n) {}
};

// states[(t + 1) * n + k] = h_t[k] for the whole row (states[0:n] stays 0 = h_{-1}).
MMMV_INLINE void recompute_states(const Row& row, int64_t l, int64_t n, BackwardScratch& s) {
  compute_decays(row.delta, row.A, l, n, s.decay.data());
  for (int64_t t = 0; t < l; ++t) {
    const float drive = row.delta[t] * row.u[t];
    const float* a = s.decay.data() + t * n;
    const float* b = row.B + t * n;
    const float* prev = s.states.data() + t * n;
    float* cur = s.states.data() + (t + 1) * n;
    for (int64_t k = 0; k < n; ++k) cur[k] = a[k] * prev[k] + drive * b[k];
  }
}

// Reverse scan of one row. With g_t = dL/dh_t = exp(delta_{t+1} A) g_{t+1} + gy_t C_t:
//   grad_u_t = delta_t sum_n g_t B_t,  grad_delta_t = u_t sum_n g_t B_t + sum_n A g_t a_t h_{t-1},
//   grad_A += delta_t g_t a_t h_{t-1}, grad_B_t += g_t delta_t u_t, grad_C_t += gy_t h_t.
MMMV_TARGET_CLONES void backward_row(const Row& row, const float* grad_y, int64_t l, int64_t n,
                                     const RowGrads& out, BackwardScratch& s) {
  recompute_states(row, l, n, s);
  std::fill(s.adjoint.begin(), s.adjoint.end(), 0.0f);
  std::fill(s.grad_A.begin(), s.grad_A.end(), 0.0);
  float* g = s.adjoint.data();
  for (int64_t t = l - 1; t >= 0; --t) {
    const float gy = grad_y[t];
    const float dt = row.delta[t];
    const float drive = dt * row.u[t];
    const float* a = s.decay.data() + t * n;
    const float* b = row.B + t * n;
    const float* c = row.C + t * n;
    const float* h = s.states.data() + (t + 1) * n;
    const float* h_prev = s.states.data() + t * n;
    float* gb = out.B + t * n;
    float* gc = out.C + t * n;
    float sum_gb = 0.0f;
    float sum_decay = 0.0f;
    for (int64_t k = 0; k < n; ++k) {
      const float gk = g[k] + gy * c[k];
      const float q = gk * a[k] * h_prev[k];
      gc[k] += gy * h[k];
      gb[k] += gk * drive;
      sum_gb += gk * b[k];
      sum_decay += q * row.A[k];
      s.grad_A[k] += static_cast<double>(q * dt);
      g[k] = gk * a[k];
    }
    out.u[t] = sum_gb * dt;
    out.delta[t] = sum_gb * row.u[t] + sum_decay;
  }
  for (int64_t k = 0; k < n; ++k) out.A[k] = static_cast<float>(s.grad_A[k]);
}

void check_inputs(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                  const at::Tensor& B, const at::Tensor& C) {
  for (const at::Tensor* t : {&u, &delta, &A, &B, &C}) {
    TORCH_CHECK(t->device().is_cpu(), "_scan_cpu: tensors must be on the CPU");
    TORCH_CHECK(t->scalar_type() == at::kFloat, "_scan_cpu: tensors must be float32");
  }
  TORCH_CHECK(u.dim() == 3 && delta.sizes() == u.sizes(), "_scan_cpu: u, delta must be (b, d, l)");
  TORCH_CHECK(A.dim() == 2 && A.size(0) == u.size(1), "_scan_cpu: A must be (d, n)");
  const std::vector<int64_t> bc{u.size(0), A.size(1), u.size(2)};
  TORCH_CHECK(B.sizes() == bc && C.sizes() == bc, "_scan_cpu: B, C must be (b, n, l)");
}

// (b, n, l) -> contiguous (b, l, n).
at::Tensor token_major(const at::Tensor& x) { return x.transpose(1, 2).contiguous(); }

// Row (bi, di) of contiguous u, delta (b, d, l), A (d, n) and token-major B, C (b, l, n).
Row make_row(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
             const at::Tensor& Bt, const at::Tensor& Ct, int64_t bi, int64_t di) {
  const int64_t d = u.size(1), l = u.size(2), n = A.size(1);
  const int64_t offset = (bi * d + di) * l;
  return Row{u.data_ptr<float>() + offset, delta.data_ptr<float>() + offset,
             A.data_ptr<float>() + di * n, Bt.data_ptr<float>() + bi * l * n,
             Ct.data_ptr<float>() + bi * l * n};
}

// y = scan(u, delta, A, B, C): (b, d, l).
at::Tensor scan_forward(const at::Tensor& u_in, const at::Tensor& delta_in, const at::Tensor& A_in,
                        const at::Tensor& B, const at::Tensor& C) {
  check_inputs(u_in, delta_in, A_in, B, C);
  const at::Tensor u = u_in.contiguous(), delta = delta_in.contiguous(), A = A_in.contiguous();
  const at::Tensor Bt = token_major(B), Ct = token_major(C);
  const int64_t batch = u.size(0), d = u.size(1), l = u.size(2), n = A.size(1);
  at::Tensor y = at::empty_like(u);
  float* y_data = y.data_ptr<float>();
  at::parallel_for(0, batch * d, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> decay(kTile * n), h(n);
    for (int64_t r = begin; r < end; ++r) {
      const Row row = make_row(u, delta, A, Bt, Ct, r / d, r % d);
      forward_row(row, l, n, y_data + r * l, decay.data(), h.data());
    }
  });
  return y;
}

// Channel groups per batch element in the backward: enough tasks for all threads. Each task
// (batch element, channel group) owns a slice of the grad_B / grad_C partial sums.
int64_t channel_groups(int64_t batch, int64_t d) {
  const int64_t threads = at::get_num_threads();
  return std::clamp<int64_t>((threads + batch - 1) / std::max<int64_t>(batch, 1), 1,
                             std::max<int64_t>(d, 1));
}

// Gradients (grad_u, grad_delta, grad_A, grad_B, grad_C) of sum(grad_y * scan(...)).
std::vector<at::Tensor> scan_backward(const at::Tensor& u_in, const at::Tensor& delta_in,
                                      const at::Tensor& A_in, const at::Tensor& B,
                                      const at::Tensor& C, const at::Tensor& grad_y_in) {
  check_inputs(u_in, delta_in, A_in, B, C);
  TORCH_CHECK(grad_y_in.sizes() == u_in.sizes() && grad_y_in.scalar_type() == at::kFloat,
              "_scan_cpu: grad_y must be float32 (b, d, l)");
  const at::Tensor u = u_in.contiguous(), delta = delta_in.contiguous(), A = A_in.contiguous();
  const at::Tensor grad_y = grad_y_in.contiguous();
  const at::Tensor Bt = token_major(B), Ct = token_major(C);
  const int64_t batch = u.size(0), d = u.size(1), l = u.size(2), n = A.size(1);
  const int64_t groups = channel_groups(batch, d);
  const int64_t group_size = (d + groups - 1) / groups;
  at::Tensor grad_u = at::empty_like(u), grad_delta = at::empty_like(u);
  at::Tensor grad_A_rows = at::empty({batch, d, n}, A.options());
  at::Tensor grad_B_parts = at::zeros({batch, groups, l, n}, A.options());
  at::Tensor grad_C_parts = at::zeros({batch, groups, l, n}, A.options());
  at::parallel_for(0, batch * groups, 1, [&](int64_t begin, int64_t end) {
    BackwardScratch scratch(l, n);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t bi = task / groups;
      const int64_t d_end = std::min(d, (task % groups + 1) * group_size);
      for (int64_t di = (task % groups) * group_size; di < d_end; ++di) {
        const int64_t r = bi * d + di;
        const RowGrads out{grad_u.data_ptr<float>() + r * l, grad_delta.data_ptr<float>() + r * l,
                           grad_A_rows.data_ptr<float>() + r * n,
                           grad_B_parts.data_ptr<float>() + task * l * n,
                           grad_C_parts.data_ptr<float>() + task * l * n};
        backward_row(make_row(u, delta, A, Bt, Ct, bi, di), grad_y.data_ptr<float>() + r * l, l, n,
                     out, scratch);
      }
    }
  });
  return {grad_u, grad_delta, grad_A_rows.sum(0), grad_B_parts.sum(1).transpose(1, 2),
          grad_C_parts.sum(1).transpose(1, 2)};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "Selective scan (S6) CPU kernels, float32";
  m.def("forward", &scan_forward,
        "y = scan(u, delta, A, B, C); u, delta (b, d, l), A (d, n), B, C (b, n, l)");
  m.def("backward", &scan_backward,
        "(grad_u, grad_delta, grad_A, grad_B, grad_C) = backward(u, delta, A, B, C, grad_y)");
}
