// AdamW and the global gradient norm, float32; translates NumpyKernels.adamw_update and
// tinylm.optim.clip_grad_norm. Each has a multi-tensor form: one launch covers every
// parameter, given device arrays of pointers and sizes (blockIdx.y picks the tensor),
// so a step costs a handful of launches instead of several per parameter.
#include "common.cuh"

// m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;  p = p (1 - lr wd) - lr/bias1 * m / (sqrt(v)/sqrt(bias2) + eps)
__device__ __forceinline__ void adamw_element(float* p, const float* g, float* m, float* v, long long i,
                                              float lr, float beta1, float beta2, float eps,
                                              float weight_decay, float bias1, float sqrt_bias2) {
    const float gi = g[i];
    const float mi = beta1 * m[i] + (1.0f - beta1) * gi;
    const float vi = beta2 * v[i] + (1.0f - beta2) * (gi * gi);
    m[i] = mi;
    v[i] = vi;
    float pi = p[i];
    if (weight_decay != 0.0f) pi *= 1.0f - lr * weight_decay;
    p[i] = pi - (lr / bias1) * (mi / (sqrtf(vi) / sqrt_bias2 + eps));
}

// one tensor of n elements, updated in place; bias1 = 1 - b1^step, sqrt_bias2 = sqrt(1 - b2^step)
extern "C" __global__ void adamw_update(float* p, const float* g, float* m, float* v, long long n,
                                        float lr, float beta1, float beta2, float eps,
                                        float weight_decay, float bias1, float sqrt_bias2) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x)
        adamw_element(p, g, m, v, i, lr, beta1, beta2, eps, weight_decay, bias1, sqrt_bias2);
}

// every tensor at once: tensor k = blockIdx.y has sizes[k] elements and its own weight decay
extern "C" __global__ void adamw_update_many(float* const* p, const float* const* g, float* const* m,
                                             float* const* v, const long long* sizes,
                                             const float* weight_decay, float lr, float beta1,
                                             float beta2, float eps, float bias1, float sqrt_bias2) {
    const int k = blockIdx.y;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < sizes[k];
         i += (long long)gridDim.x * blockDim.x)
        adamw_element(p[k], g[k], m[k], v[k], i, lr, beta1, beta2, eps, weight_decay[k], bias1, sqrt_bias2);
}

// norm^2 = Σ_k Σ_i g_k[i]^2, first pass: block (x, k) writes Σ over its grid-stride share of
// tensor k to part[k * gridDim.x + x]; sum_partial_rows (one column) then adds the parts in order
extern "C" __global__ void sum_of_squares_many(const float* const* g, const long long* sizes,
                                               float* part) {
    __shared__ float scratch[32];
    const int k = blockIdx.y;
    float s = 0.0f;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < sizes[k];
         i += (long long)gridDim.x * blockDim.x)
        s += g[k][i] * g[k][i];
    s = block_sum(s, scratch);
    if (threadIdx.x == 0) part[(long long)k * gridDim.x + blockIdx.x] = s;
}

// clipping: out_k = g_k * min(1, max_norm / (norm + 1e-6)), norm = sqrt(norm2[0]) read on the device
extern "C" __global__ void scale_many(const float* const* g, float* const* out, const long long* sizes,
                                      const float* norm2, float max_norm) {
    const int k = blockIdx.y;
    const float scale = fminf(1.0f, max_norm / (sqrtf(norm2[0]) + 1e-6f));
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < sizes[k];
         i += (long long)gridDim.x * blockDim.x)
        out[k][i] = g[k][i] * scale;
}
