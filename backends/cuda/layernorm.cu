// Layer norm over the last axis, float32; translates NumpyKernels.layernorm_forward/_backward.
//   y = (x - mean) * rstd * w + b,   rstd = 1 / sqrt(var + eps)
// One block per row for the forward; rows strided over a fixed grid for the backward,
// whose dw, db go through per-block partial sums added in order (no atomics).
#include "common.cuh"

// x, y (rows, C); mean, rstd (rows,)
extern "C" __global__ void layernorm_forward(const float* x, const float* w, const float* b, float* y,
                                             float* mean, float* rstd, int C, float eps) {
    __shared__ float scratch[32];
    const long long row = blockIdx.x;
    const float* xr = x + row * C;
    float* yr = y + row * C;
    // mean = Σ x / C
    float s = 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) s += xr[c];
    const float m = block_sum(s, scratch) / C;
    // var = Σ (x - mean)^2 / C, from the centred values (no cancellation at large means)
    float ss = 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        const float xc = xr[c] - m;
        ss += xc * xc;
    }
    const float r = 1.0f / sqrtf(block_sum(ss, scratch) / C + eps);
    // y = xhat * w + b,  xhat = (x - mean) * rstd
    for (int c = threadIdx.x; c < C; c += blockDim.x) yr[c] = (xr[c] - m) * r * w[c] + b[c];
    if (threadIdx.x == 0) {
        mean[row] = m;
        rstd[row] = r;
    }
}

// dx (rows, C); dw_part, db_part (gridDim.x, C): block g owns row g of each and rows g, g+G, ... of dx
extern "C" __global__ void layernorm_backward(const float* dy, const float* x, const float* w,
                                              const float* mean, const float* rstd, float* dx,
                                              float* dw_part, float* db_part, int rows, int C) {
    __shared__ float scratch[32];
    float* dw_g = dw_part + (long long)blockIdx.x * C;
    float* db_g = db_part + (long long)blockIdx.x * C;
    for (int c = threadIdx.x; c < C; c += blockDim.x) dw_g[c] = db_g[c] = 0.0f;  // each thread its own c
    for (long long row = blockIdx.x; row < rows; row += gridDim.x) {
        const float* dyr = dy + row * C;
        const float* xr = x + row * C;
        const float m = mean[row], r = rstd[row];
        // Σ dxhat and Σ dxhat * xhat,  dxhat = dy * w
        float sum_dxhat = 0.0f, sum_dxhat_xhat = 0.0f;
        for (int c = threadIdx.x; c < C; c += blockDim.x) {
            const float xhat = (xr[c] - m) * r;
            const float dxhat = dyr[c] * w[c];
            sum_dxhat += dxhat;
            sum_dxhat_xhat += dxhat * xhat;
            db_g[c] += dyr[c];                    // db = Σ_rows dy
            dw_g[c] += dyr[c] * xhat;             // dw = Σ_rows dy * xhat
        }
        const float mean_dxhat = block_sum(sum_dxhat, scratch) / C;
        const float mean_dxhat_xhat = block_sum(sum_dxhat_xhat, scratch) / C;
        for (int c = threadIdx.x; c < C; c += blockDim.x) {
            const float xhat = (xr[c] - m) * r;
            // term 1: dxhat;  term 2: -mean(dxhat);  term 3: -xhat * mean(dxhat * xhat);  final scale: rstd
            dx[row * C + c] = (dyr[c] * w[c] - mean_dxhat - xhat * mean_dxhat_xhat) * r;
        }
    }
}
