// Embedding backward, float32; translates NumpyKernels.embedding_backward.
//   y = W[idx];   dW[v] = Σ of the rows i of dy with idx[i] = v
// Deterministic: the host side sorts the token positions by (index, position), so that
// the rows of each v are consecutive in `order`, from `start[v]` to `start[v + 1]`;
// thread (v, c) adds them in that order (no atomics, the same bits on every run).
extern "C" __global__ void embedding_backward(const float* dy, const long long* order,
                                              const long long* start, float* dW, int vocab_size, int C) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    const int v = blockIdx.y;
    if (c >= C || v >= vocab_size) return;
    float s = 0.0f;
    for (long long k = start[v]; k < start[v + 1]; ++k) s += dy[order[k] * C + c];
    dW[(long long)v * C + c] = s;                 // every row written: rows no token uses get 0
}
