// Philox4x32-10 uniforms for dropout; follows philox.py (philox4x32 and uniform) word for word.
// Element i of draw `draw` under seed `seed` is word i % 4 of
//   Philox(counter = (i / 4 low, i / 4 high, draw low, draw high), key = (seed low, seed high)),
// as (w >> 8) / 2^24: the same bits as the NumPy mirror, on any GPU, in any launch shape.

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

// 10 rounds on c in place: (hi0, lo0) = M0 c0, (hi1, lo1) = M1 c2;  c <- (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0)
__device__ __forceinline__ void philox4x32_10(unsigned int c[4], unsigned int k0, unsigned int k1) {
    for (int r = 0; r < 10; ++r) {
        if (r) {                                          // the key schedule: a Weyl sequence
            k0 += PHILOX_W0;
            k1 += PHILOX_W1;
        }
        const unsigned long long p0 = (unsigned long long)PHILOX_M0 * c[0];
        const unsigned long long p1 = (unsigned long long)PHILOX_M1 * c[2];
        const unsigned int n0 = (unsigned int)(p1 >> 32) ^ c[1] ^ k0;
        const unsigned int n2 = (unsigned int)(p0 >> 32) ^ c[3] ^ k1;
        c[0] = n0;
        c[1] = (unsigned int)p1;
        c[2] = n2;
        c[3] = (unsigned int)p0;
    }
}

// out (n,) float32 in [0, 1); one thread per block of four elements (grid-stride)
extern "C" __global__ void philox_uniform(float* out, long long n, unsigned int key0, unsigned int key1,
                                          unsigned int draw_lo, unsigned int draw_hi) {
    const long long blocks = (n + 3) / 4;
    for (long long b = blockIdx.x * (long long)blockDim.x + threadIdx.x; b < blocks;
         b += (long long)gridDim.x * blockDim.x) {
        unsigned int c[4] = {(unsigned int)b, (unsigned int)(b >> 32), draw_lo, draw_hi};
        philox4x32_10(c, key0, key1);
        for (int j = 0; j < 4; ++j)
            if (b * 4 + j < n) out[b * 4 + j] = (float)(c[j] >> 8) * (1.0f / 16777216.0f);
    }
}
