// Softmax cross-entropy, float32; translates NumpyKernels.softmax_xent_forward/_backward.
//   loss = mean over rows with t_i != ignore of (logsumexp(z_i) - z_i[t_i])
// The forward keeps only lse_i = logsumexp(z_i) per row: the backward recomputes
// softmax(z_i) = exp(z_i - lse_i) from the logits, so no (N, V) probability tensor is stored.
#include "common.cuh"

// one block per row: lse (N,), row_loss (N,) (0 on ignored rows)
extern "C" __global__ void softmax_xent_forward(const float* logits, const long long* targets,
                                                float* lse, float* row_loss, int V, long long ignore_index) {
    __shared__ float scratch[32];
    const long long row = blockIdx.x;
    const float* z = logits + row * V;
    // m = max_j z_j  (block max through block_sum's pattern on a max)
    float m = NEG_INF;
    for (int j = threadIdx.x; j < V; j += blockDim.x) m = fmaxf(m, z[j]);
    m = warp_max(m);
    if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = m;
    __syncthreads();
    m = threadIdx.x % 32 < (int)(blockDim.x / 32) ? scratch[threadIdx.x % 32] : NEG_INF;
    m = warp_max(m);
    // lse = m + log Σ_j exp(z_j - m)
    float s = 0.0f;
    for (int j = threadIdx.x; j < V; j += blockDim.x) s += expf(z[j] - m);
    const float sumexp = block_sum(s, scratch);
    if (threadIdx.x == 0) {
        const long long t = targets[row];
        lse[row] = m + logf(sumexp);
        // -log p_t = -((z_t - m) - log sumexp)
        row_loss[row] = t == ignore_index ? 0.0f : -((z[t] - m) - logf(sumexp));
    }
}

// dz_ij = (exp(z_ij - lse_i) - [j == t_i]) * dloss / max(n_valid, 1), and 0 on ignored rows;
// dloss and n_valid are read from device memory (no host synchronisation)
extern "C" __global__ void softmax_xent_backward(const float* logits, const float* lse,
                                                 const long long* targets, const float* dloss,
                                                 const long long* n_valid, float* dlogits,
                                                 long long n, int V, long long ignore_index) {
    const float scale = dloss[0] / (float)(n_valid[0] > 1 ? n_valid[0] : 1);
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        const long long row = i / V, j = i % V;
        const long long t = targets[row];
        const float p = expf(logits[i] - lse[row]);
        dlogits[i] = t == ignore_index ? 0.0f : (p - (j == t ? 1.0f : 0.0f)) * scale;
    }
}
