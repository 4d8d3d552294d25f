// GELU in its tanh form (GPT-2's), float32, elementwise; translates NumpyKernels.gelu_forward/_backward.
//   y = x/2 * (1 + tanh(u)),   u = c (x + 0.044715 x^3),   c = sqrt(2/pi)
#define GELU_C 0.7978845608028654f

extern "C" __global__ void gelu_forward(const float* x, float* y, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        const float xi = x[i];
        const float u = GELU_C * (xi + 0.044715f * xi * xi * xi);
        y[i] = 0.5f * xi * (1.0f + tanhf(u));
    }
}

// dx = dy * ((1 + tanh u)/2 + x/2 (1 - tanh^2 u) du/dx),   du/dx = c (1 + 3 * 0.044715 x^2)
extern "C" __global__ void gelu_backward(const float* dy, const float* x, float* dx, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        const float xi = x[i], x2 = xi * xi;
        const float t = tanhf(GELU_C * (xi + 0.044715f * x2 * xi));
        const float du = GELU_C * (1.0f + 3.0f * 0.044715f * x2);
        dx[i] = dy[i] * (0.5f * (1.0f + t) + 0.5f * xi * (1.0f - t * t) * du);
    }
}
