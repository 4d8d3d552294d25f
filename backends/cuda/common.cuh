// Reductions shared by the kernels. NVRTC here has no CUDA headers (no math.h,
// no cuda_fp16.h): only built-in device functions (expf, tanhf, sqrtf, __shfl_*).
// Every sum adds in a fixed order (lanes by xor-butterfly, then warps by index),
// so a kernel gives the same bits on every run.
#pragma once

#define NEG_INF __int_as_float(0xff800000)
#define FULL_MASK 0xffffffffu

// sum over the 32 lanes of a warp; every lane gets it
__device__ __forceinline__ float warp_sum(float x) {
    for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_xor_sync(FULL_MASK, x, offset);
    return x;
}

// max over the 32 lanes of a warp; every lane gets it
__device__ __forceinline__ float warp_max(float x) {
    for (int offset = 16; offset > 0; offset >>= 1) x = fmaxf(x, __shfl_xor_sync(FULL_MASK, x, offset));
    return x;
}

// sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets it.
// `scratch` holds 32 floats of shared memory; the first barrier lets a previous call finish reading it.
__device__ float block_sum(float x, float* scratch) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    x = warp_sum(x);
    __syncthreads();
    if (lane == 0) scratch[warp] = x;
    __syncthreads();
    x = lane < (int)(blockDim.x / 32) ? scratch[lane] : 0.0f;
    return warp_sum(x);
}

// column sums of a (rows, cols) row-major matrix of per-block partial sums: out[c] = Σ_r part[r, c],
// rows added in order; one thread per column
extern "C" __global__ void sum_partial_rows(const float* part, float* out, int rows, int cols) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cols) return;
    float s = 0.0f;
    for (int r = 0; r < rows; ++r) s += part[(long long)r * cols + c];
    out[c] = s;
}
