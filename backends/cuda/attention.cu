// Causal attention, flash-attention style, float32; follows flash_attention.py tile by tile and
// translates NumpyKernels.attention_forward/_backward:
//   S = q k^T * scale + causal mask;  P = softmax(S);  y = P v
// The (T, T) matrix P is never stored: the forward keeps lse = log Σ_s exp(S_ts) per query,
// the backward recomputes P = exp(S - lse) tile by tile. Memory is linear in T.
//
// Tiles: a block is WARPS query (or key) rows, one warp each (flash_attention.BLOCK_Q); the
// other side comes in tiles of TILE_K rows, one per lane (BLOCK_K). A lane keeps the head
// dimensions d = lane, lane + 32, ... of its row's outputs in registers, so D <= MAX_D.
// q, k, v (and y, dy) are read through (batch, head, time) strides with d contiguous, so the
// views of the fused qkv projection are used in place. Plain float32 FMA (no tensor cores yet).
#include "common.cuh"

#define WARPS 8
#define TILE_K 32
#define MAX_D 128
#define PER_LANE (MAX_D / 32)

// rows [r0, r0 + n_rows) of a (T, D) matrix at `src` with time stride `st` -> dst (n_rows, D + 1);
// rows at or past `r_end` become 0. The +1 column keeps lanes reading one column each off the same bank.
__device__ void load_rows(float* dst, const float* src, long long st, int r0, int n_rows, int r_end, int D) {
    for (int i = threadIdx.x; i < n_rows * D; i += blockDim.x) {
        const int r = i / D, d = i % D;
        dst[r * (D + 1) + d] = r0 + r < r_end ? src[(long long)(r0 + r) * st + d] : 0.0f;
    }
}

// Σ_d a[d] b[d] over two rows in shared memory
__device__ __forceinline__ float row_dot(const float* a, const float* b, int D) {
    float s = 0.0f;
    for (int d = 0; d < D; ++d) s += a[d] * b[d];
    return s;
}

// grid (ceil(T / WARPS), B * H), WARPS * 32 threads; shared (WARPS + 2 * TILE_K) * (D + 1) floats.
// y (B, H, T, D) through its own strides; lse (B * H, T) contiguous.
extern "C" __global__ void attention_forward(const float* q, const float* k, const float* v, float* y,
                                             float* lse, int H, int T, int D, long long sb, long long sh,
                                             long long st, long long ysb, long long ysh, long long yst,
                                             float scale) {
    extern __shared__ float smem[];
    const int Dp = D + 1, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    float* q_s = smem;                                   // (WARPS, D + 1): this block's query rows
    float* k_s = q_s + WARPS * Dp;                       // (TILE_K, D + 1): the current key tile
    float* v_s = k_s + TILE_K * Dp;                      // (TILE_K, D + 1): its values
    const int b = blockIdx.y / H, h = blockIdx.y % H;
    const long long base = b * sb + h * sh;
    const int q0 = blockIdx.x * WARPS, q1 = min(q0 + WARPS, T);
    const int t = q0 + warp;                             // this warp's query
    load_rows(q_s, q + base, st, q0, WARPS, T, D);
    float m = NEG_INF, l = 0.0f, acc[PER_LANE];          // running max, Σ exp(S - m), Σ exp(S - m) v
    for (int i = 0; i < PER_LANE; ++i) acc[i] = 0.0f;
    for (int k0 = 0; k0 < q1; k0 += TILE_K) {            // keys >= q1 are masked for every query here
        const int k1 = min(k0 + TILE_K, q1);
        __syncthreads();                                 // everyone is done with the previous tile
        load_rows(k_s, k + base, st, k0, TILE_K, k1, D);
        load_rows(v_s, v + base, st, k0, TILE_K, k1, D);
        __syncthreads();
        if (t >= T) continue;                            // a whole warp past the end: loads only
        // S_ts = scale q_t . k_s for s = k0 + lane, -inf where s > t (the causal mask)
        const int s = k0 + lane;
        const float score = s <= t ? scale * row_dot(q_s + warp * Dp, k_s + lane * Dp, D) : NEG_INF;
        const float m_new = fmaxf(m, warp_max(score));   // finite: key 0 is in the first tile
        const float p = expf(score - m_new);             // this tile's unnormalised probability
        const float alpha = expf(m - m_new);             // rescales what earlier tiles summed
        l = alpha * l + warp_sum(p);
        for (int i = 0; i < PER_LANE; ++i) acc[i] *= alpha;
        for (int j = 0; j < TILE_K; ++j) {               // acc += P v, p_j broadcast from lane j
            const float pj = __shfl_sync(FULL_MASK, p, j);
            for (int i = 0; i < PER_LANE; ++i)
                if (lane + 32 * i < D) acc[i] += pj * v_s[j * Dp + lane + 32 * i];
        }
        m = m_new;
    }
    if (t >= T) return;
    float* yt = y + b * ysb + h * ysh + t * yst;
    for (int i = 0; i < PER_LANE; ++i)
        if (lane + 32 * i < D) yt[lane + 32 * i] = acc[i] / l;
    if (lane == 0) lse[(long long)blockIdx.y * T + t] = m + logf(l);
}

// delta_t = Σ_d dy_td y_td  (= rowsum(dP ⊙ P));  one warp per row; grid (ceil(T / WARPS), B * H)
extern "C" __global__ void attention_backward_delta(const float* dy, const float* y, float* delta,
                                                    int H, int T, int D, long long gsb, long long gsh,
                                                    long long gst, long long ysb, long long ysh,
                                                    long long yst) {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int b = blockIdx.y / H, h = blockIdx.y % H, t = blockIdx.x * WARPS + warp;
    if (t >= T) return;
    const float* g = dy + b * gsb + h * gsh + t * gst;
    const float* yt = y + b * ysb + h * ysh + t * yst;
    float s = 0.0f;
    for (int d = lane; d < D; d += 32) s += g[d] * yt[d];
    s = warp_sum(s);
    if (lane == 0) delta[(long long)blockIdx.y * T + t] = s;
}

// pass 1, over key tiles: warp w owns key s = k0 + w's rows of dk and dv, looping over query tiles
// from k0 (earlier queries cannot see s).  P_ts = exp(S_ts - lse_t);  dv_s = Σ_t P_ts dy_t;
// dS_ts = P_ts (dy_t . v_s - delta_t);  dk_s = scale Σ_t dS_ts q_t.
// grid (ceil(T / WARPS), B * H); shared (2 * WARPS + 2 * TILE_K) * (D + 1) + 2 * TILE_K floats.
// dk, dv (B, H, T, D) contiguous.
extern "C" __global__ void attention_backward_dkdv(const float* dy, const float* q, const float* k,
                                                   const float* v, const float* lse, const float* delta,
                                                   float* dk, float* dv, int H, int T, int D,
                                                   long long sb, long long sh, long long st,
                                                   long long gsb, long long gsh, long long gst,
                                                   float scale) {
    extern __shared__ float smem[];
    const int Dp = D + 1, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    float* k_s = smem;                                   // (WARPS, D + 1): this block's keys
    float* v_s = k_s + WARPS * Dp;                       // (WARPS, D + 1): their values
    float* q_s = v_s + WARPS * Dp;                       // (TILE_K, D + 1): the current query tile
    float* g_s = q_s + TILE_K * Dp;                      // (TILE_K, D + 1): its dy rows
    float* lse_s = g_s + TILE_K * Dp;                    // (TILE_K,)
    float* delta_s = lse_s + TILE_K;                     // (TILE_K,)
    const int b = blockIdx.y / H, h = blockIdx.y % H;
    const long long base = b * sb + h * sh, gbase = b * gsb + h * gsh, row0 = (long long)blockIdx.y * T;
    const int k0 = blockIdx.x * WARPS, s = k0 + warp;    // this warp's key
    load_rows(k_s, k + base, st, k0, WARPS, T, D);
    load_rows(v_s, v + base, st, k0, WARPS, T, D);
    float dk_acc[PER_LANE], dv_acc[PER_LANE];
    for (int i = 0; i < PER_LANE; ++i) dk_acc[i] = dv_acc[i] = 0.0f;
    for (int q0 = k0; q0 < T; q0 += TILE_K) {
        const int q1 = min(q0 + TILE_K, T);
        __syncthreads();
        load_rows(q_s, q + base, st, q0, TILE_K, q1, D);
        load_rows(g_s, dy + gbase, gst, q0, TILE_K, q1, D);
        for (int j = threadIdx.x; j < TILE_K; j += blockDim.x) {
            lse_s[j] = q0 + j < q1 ? lse[row0 + q0 + j] : 0.0f;
            delta_s[j] = q0 + j < q1 ? delta[row0 + q0 + j] : 0.0f;
        }
        __syncthreads();
        if (s >= T) continue;
        // lane j: query t = q0 + j, which sees key s when t >= s
        const int t = q0 + lane;
        float p = 0.0f, dS = 0.0f;
        if (t < q1 && t >= s) {
            p = expf(scale * row_dot(q_s + lane * Dp, k_s + warp * Dp, D) - lse_s[lane]);
            dS = p * (row_dot(g_s + lane * Dp, v_s + warp * Dp, D) - delta_s[lane]);
        }
        for (int j = 0; j < TILE_K; ++j) {
            const float pj = __shfl_sync(FULL_MASK, p, j), dSj = __shfl_sync(FULL_MASK, dS, j);
            for (int i = 0; i < PER_LANE; ++i) {
                const int d = lane + 32 * i;
                if (d < D) {
                    dv_acc[i] += pj * g_s[j * Dp + d];
                    dk_acc[i] += dSj * q_s[j * Dp + d];
                }
            }
        }
    }
    if (s >= T) return;
    const long long out = (row0 + s) * D;
    for (int i = 0; i < PER_LANE; ++i) {
        const int d = lane + 32 * i;
        if (d < D) {
            dk[out + d] = scale * dk_acc[i];
            dv[out + d] = dv_acc[i];
        }
    }
}

// pass 2, over query tiles: warp w owns query t = q0 + w's row of dq, looping over key tiles
// before the block's last query.  dq_t = scale Σ_s dS_ts k_s.
// grid (ceil(T / WARPS), B * H); shared (2 * WARPS + 2 * TILE_K) * (D + 1) floats. dq (B, H, T, D) contiguous.
extern "C" __global__ void attention_backward_dq(const float* dy, const float* q, const float* k,
                                                 const float* v, const float* lse, const float* delta,
                                                 float* dq, int H, int T, int D, long long sb,
                                                 long long sh, long long st, long long gsb,
                                                 long long gsh, long long gst, float scale) {
    extern __shared__ float smem[];
    const int Dp = D + 1, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    float* q_s = smem;                                   // (WARPS, D + 1): this block's queries
    float* g_s = q_s + WARPS * Dp;                       // (WARPS, D + 1): their dy rows
    float* k_s = g_s + WARPS * Dp;                       // (TILE_K, D + 1): the current key tile
    float* v_s = k_s + TILE_K * Dp;                      // (TILE_K, D + 1): its values
    const int b = blockIdx.y / H, h = blockIdx.y % H;
    const long long base = b * sb + h * sh, gbase = b * gsb + h * gsh, row0 = (long long)blockIdx.y * T;
    const int q0 = blockIdx.x * WARPS, q1 = min(q0 + WARPS, T), t = q0 + warp;
    load_rows(q_s, q + base, st, q0, WARPS, T, D);
    load_rows(g_s, dy + gbase, gst, q0, WARPS, T, D);
    const float lse_t = t < T ? lse[row0 + t] : 0.0f, delta_t = t < T ? delta[row0 + t] : 0.0f;
    float dq_acc[PER_LANE];
    for (int i = 0; i < PER_LANE; ++i) dq_acc[i] = 0.0f;
    for (int k0 = 0; k0 < q1; k0 += TILE_K) {
        const int k1 = min(k0 + TILE_K, q1);
        __syncthreads();
        load_rows(k_s, k + base, st, k0, TILE_K, k1, D);
        load_rows(v_s, v + base, st, k0, TILE_K, k1, D);
        __syncthreads();
        if (t >= T) continue;
        // lane j: key s = k0 + j, seen by query t when s <= t
        const int s = k0 + lane;
        float dS = 0.0f;
        if (s <= t) {
            const float p = expf(scale * row_dot(q_s + warp * Dp, k_s + lane * Dp, D) - lse_t);
            dS = p * (row_dot(g_s + warp * Dp, v_s + lane * Dp, D) - delta_t);
        }
        for (int j = 0; j < TILE_K; ++j) {
            const float dSj = __shfl_sync(FULL_MASK, dS, j);
            for (int i = 0; i < PER_LANE; ++i)
                if (lane + 32 * i < D) dq_acc[i] += dSj * k_s[j * Dp + lane + 32 * i];
        }
    }
    if (t >= T) return;
    for (int i = 0; i < PER_LANE; ++i)
        if (lane + 32 * i < D) dq[(row0 + t) * D + lane + 32 * i] = scale * dq_acc[i];
}
