// Causal attention's softmax rows, float32, for the path where cuBLAS computes the products:
//   S = q k^T (cuBLAS);  P = softmax(scale S + causal mask) in place, lse kept;  y = P v (cuBLAS)
// and in the backward, P recomputed from lse and dS = P ⊙ (dP - rowsum(dP ⊙ P)) * scale in place.
// Translates the softmax lines of NumpyKernels.attention_forward/_backward; (T, T) matrices exist
// only inside one op (nothing of size T^2 is saved between forward and backward).
// Rows are the B*H*T rows of a contiguous (B, H, T, T); row r is query t = r % T, whose keys s > t
// are masked. One warp per row, WARPS rows per block.
#include "common.cuh"

#define WARPS 8

// S -> P in place; lse (rows,) = log Σ_{s<=t} exp(scale S_ts)
extern "C" __global__ void causal_softmax_forward(float* S, float* lse, long long rows, int T, float scale) {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const long long r = blockIdx.x * (long long)WARPS + warp;
    if (r >= rows) return;
    const int t = (int)(r % T);
    float* row = S + r * T;
    // m = max_{s<=t} scale S_ts;  l = Σ_{s<=t} exp(scale S_ts - m)
    float m = NEG_INF;
    for (int s = lane; s <= t; s += 32) m = fmaxf(m, scale * row[s]);
    m = warp_max(m);
    float l = 0.0f;
    for (int s = lane; s <= t; s += 32) l += expf(scale * row[s] - m);
    l = warp_sum(l);
    // P_ts = exp(scale S_ts - m) / l, and 0 after t
    for (int s = lane; s < T; s += 32) row[s] = s <= t ? expf(scale * row[s] - m) / l : 0.0f;
    if (lane == 0) lse[r] = m + logf(l);
}

// S -> P in place from the saved lse: P_ts = exp(scale S_ts - lse_t), 0 after t
extern "C" __global__ void causal_softmax_recompute(float* S, const float* lse, long long rows, int T,
                                                    float scale) {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const long long r = blockIdx.x * (long long)WARPS + warp;
    if (r >= rows) return;
    const int t = (int)(r % T);
    float* row = S + r * T;
    const float lse_t = lse[r];
    for (int s = lane; s < T; s += 32) row[s] = s <= t ? expf(scale * row[s] - lse_t) : 0.0f;
}

// dP -> dS in place: dS_ts = P_ts (dP_ts - Σ_s' dP_ts' P_ts') * scale
extern "C" __global__ void causal_softmax_backward(const float* P, float* dP, long long rows, int T,
                                                   float scale) {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const long long r = blockIdx.x * (long long)WARPS + warp;
    if (r >= rows) return;
    const int t = (int)(r % T);
    const float* p = P + r * T;
    float* g = dP + r * T;
    float delta = 0.0f;
    for (int s = lane; s <= t; s += 32) delta += g[s] * p[s];
    delta = warp_sum(delta);
    for (int s = lane; s < T; s += 32) g[s] = s <= t ? p[s] * (g[s] - delta) * scale : 0.0f;
}
