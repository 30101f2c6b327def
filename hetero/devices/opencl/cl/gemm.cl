// gemm.cl: C = act(alpha * A.B + beta * bias + residual), batched over two batch dimensions.
//
// A is any strided matrix (row stride sam, column stride sak: transA is free); B must have unit
// column stride (its row stride is sbk); C is row-major with leading dimension ldc. gemm_reg also reads
// B *packed* in panels of RN*NV columns (b_ps = panel stride, sbk = RN*NV): a panel is contiguous, so a
// work-item walks one stream instead of touching a new page per k for wide B (pack_b / im2col write it);
// plain B is b_ps = RN*NV. The batch index
// z = get_global_id(2) splits into (z / nb1, z % nb1), each with its own stride per operand, which
// covers MatMul broadcasting, Conv batches and Conv groups. bias is read at
// bias[bias_off + b0*bias_sb0 + b1*bias_sb1 + m*bsm + n*bsn] (bsm/bsn 0 broadcast), the residual uses
// C's layout. flags: 1 = has bias, 2 = has residual. act/p0/p1: the activation (common.cl).
//
// Two kernels with the same arguments:
//   gemm_reg    register tiling for CPU OpenCL (PoCL): one work-item computes an RM x (RN*NV) tile
//               with RN-wide vector loads of B and broadcasts of A; no local memory, because on a CPU
//               device local memory is ordinary cache-backed memory and the tile already lives in
//               vector registers (RM*NV accumulators: 16 zmm registers for 8 x 32).
//   gemm_local  the GPU shape: a 16x16 work-group computes a 64x64 tile; A and B tiles of depth 16 are
//               staged in local memory, each work-item keeps a 4x4 register tile.

#ifndef RM
#define RM 8
#endif
#ifndef RN
#define RN 16
#endif
#ifndef NV
#define NV 2
#endif

typedef CAT(float, RN) VF;
#ifdef HALF_MATH
typedef CAT(half, RN) VH;
#endif
#ifndef KB_HALF
#define KB_HALF 32  // HALF_MATH: k-steps summed in half before the float accumulator takes the sum
#endif
#ifdef T_HALF
#define VLOADB(o, p) CAT(vload_half, RN)((o), (p))
#elif defined(CPU_DEVICE)
// vloadN is an out-of-line call in PoCL 3's kernel library; an under-aligned vector type gives the same
// unaligned load (vmovups) inline.
typedef float VBU __attribute__((ext_vector_type(RN), aligned(4)));
#define VLOADB(o, p) (*(const __global VBU*)((p) + (o) * RN))
#else
#define VLOADB(o, p) CAT(vload, RN)((o), (p))
#endif

#ifdef T_HALF
#define VSTOREC(v, p) CAT(vstore_half, RN)((v), 0, (p))
#elif defined(CPU_DEVICE)
#define VSTOREC(v, p) (*(__global VBU*)(p) = (v))
#else
#define VSTOREC(v, p) CAT(vstore, RN)((v), 0, (p))
#endif

typedef union { VF v; float s[RN]; } VFU;

// act_fn on a whole register of results (select keeps NaN where act_fn does)
inline VF act_v(VF x, int act, float p0, float p1) {
    const VF zero = (VF)(0.0f), one = (VF)(1.0f);
    switch (act) {
    case ACT_RELU: return select(x, zero, x < zero);
    case ACT_CLIP: return select(select(x, (VF)(p0), x < (VF)(p0)), (VF)(p1), x > (VF)(p1));
    case ACT_LEAKYRELU: return select(x, x * p0, x < zero);
    case ACT_SIGMOID: return one / (one + exp(-x));
    case ACT_HARDSWISH: return x * clamp(x * (1.0f / 6.0f) + 0.5f, 0.0f, 1.0f);
    case ACT_HARDSIGMOID: return clamp(x * p0 + p1, 0.0f, 1.0f);
    case ACT_TANH: return tanh(x);
    default: return x;
    }
}

#define GEMM_ARGS \
    __global const T* A, int a_off, int sam, int sak, int a_sb0, int a_sb1, \
    __global const T* B, int b_off, int sbk, int b_ps, int b_sb0, int b_sb1, \
    __global T* C, int c_off, int ldc, int c_sb0, int c_sb1, \
    __global const T* bias, int bias_off, int bsm, int bsn, int bias_sb0, int bias_sb1, \
    __global const T* R, int r_off, \
    int M, int N, int K, int nb1, float alpha, float beta, int flags, int act, float p0, float p1

inline void gemm_store(float v, int m, int n, int b0, int b1,
                       __global T* C, int c_off, int ldc, int c_sb0, int c_sb1,
                       __global const T* bias, int bias_off, int bsm, int bsn, int bias_sb0, int bias_sb1,
                       __global const T* R, int r_off, float alpha, float beta, int flags, int act, float p0, float p1) {
    v *= alpha;
    if (flags & 1) v += beta * LD(bias, bias_off + b0 * bias_sb0 + b1 * bias_sb1 + m * bsm + n * bsn);
    const int ci = b0 * c_sb0 + b1 * c_sb1 + m * ldc + n;
    if (flags & 2) v += LD(R, r_off + ci);
    ST(C, c_off + ci, act_fn(v, act, p0, p1));
}

__kernel void gemm_reg(GEMM_ARGS) {
    const int m0 = (int)get_global_id(0) * RM;
    const int n0 = (int)get_global_id(1) * (RN * NV);
    const int z = (int)get_global_id(2);
    const int b0 = z / nb1, b1 = z - (z / nb1) * nb1;
    if (m0 >= M || n0 >= N) return;
    int arow[RM];
    const int abase = a_off + b0 * a_sb0 + b1 * a_sb1;
#pragma unroll
    for (int i = 0; i < RM; ++i) arow[i] = abase + min(m0 + i, M - 1) * sam;  // clamp: rows >= M are not stored
    // may read past N: buffers have slack (and packed panels are padded)
    __global const T* pb = B + b_off + b0 * b_sb0 + b1 * b_sb1 + (int)get_global_id(1) * b_ps;
    VF acc[RM][NV];
#pragma unroll
    for (int i = 0; i < RM; ++i)
#pragma unroll
        for (int j = 0; j < NV; ++j) acc[i][j] = (VF)(0.0f);
#ifdef HALF_MATH
    // half products summed in half over blocks of KB_HALF steps, each block's sum added to the float
    // accumulators (the planner checks that a block's sum stays far inside half's range)
    for (int k0 = 0; k0 < K; k0 += KB_HALF) {
        const int k1 = min(K, k0 + KB_HALF);
        VH part[RM][NV];
#pragma unroll
        for (int i = 0; i < RM; ++i)
#pragma unroll
            for (int j = 0; j < NV; ++j) part[i][j] = (VH)(0.0h);
        for (int k = k0; k < k1; ++k) {
            VH bv[NV];
#pragma unroll
            for (int j = 0; j < NV; ++j) bv[j] = CAT(vload, RN)(j, pb);
#pragma unroll
            for (int i = 0; i < RM; ++i) {
                const half a = A[arow[i] + k * sak];
#pragma unroll
                for (int j = 0; j < NV; ++j) part[i][j] += a * bv[j];
            }
            pb += sbk;
        }
#pragma unroll
        for (int i = 0; i < RM; ++i)
#pragma unroll
            for (int j = 0; j < NV; ++j) acc[i][j] += CAT(convert_float, RN)(part[i][j]);
    }
#else
    for (int k = 0; k < K; ++k) {
        VF bv[NV];
#pragma unroll
        for (int j = 0; j < NV; ++j) bv[j] = VLOADB(j, pb);
#pragma unroll
        for (int i = 0; i < RM; ++i) {
            const float a = LD(A, arow[i] + k * sak);
#pragma unroll
            for (int j = 0; j < NV; ++j) acc[i][j] += a * bv[j];
        }
        pb += sbk;
    }
#endif
    if (m0 + RM <= M && n0 + RN * NV <= N && (bsn == 0 || bsn == 1)) {
        // full tile: the epilogue works on whole vectors
        const int cb = b0 * c_sb0 + b1 * c_sb1 + n0;
        const int bb = bias_off + b0 * bias_sb0 + b1 * bias_sb1 + n0 * bsn;
#pragma unroll
        for (int i = 0; i < RM; ++i) {
            const int m = m0 + i;
#pragma unroll
            for (int j = 0; j < NV; ++j) {
                VF v = acc[i][j] * alpha;
                if (flags & 1) {
                    if (bsn == 0) v += beta * LD(bias, bb + m * bsm);
                    else v += beta * VLOADB(j, bias + bb + m * bsm);
                }
                const int ci = cb + m * ldc + j * RN;
                if (flags & 2) v += VLOADB(0, R + r_off + ci);
                VSTOREC(act_v(v, act, p0, p1), C + c_off + ci);
            }
        }
        return;
    }
#pragma unroll
    for (int i = 0; i < RM; ++i) {
        const int m = m0 + i;
        if (m < M) {
#pragma unroll
            for (int j = 0; j < NV; ++j) {
                VFU u;
                u.v = acc[i][j];
                for (int l = 0; l < RN; ++l) {
                    const int n = n0 + j * RN + l;
                    if (n < N)
                        gemm_store(u.s[l], m, n, b0, b1, C, c_off, ldc, c_sb0, c_sb1, bias, bias_off, bsm, bsn,
                                   bias_sb0, bias_sb1, R, r_off, alpha, beta, flags, act, p0, p1);
                }
            }
        }
    }
}

// Packs B (K x N, row stride sbk, batch stride b_sb) into panels of W columns: P[z][panel][k][0..W),
// zero beyond N. One work-item per (panel, k, z).
__kernel void pack_b(__global const T* B, int b_off, int sbk, int b_sb, __global T* P, int p_off, int N, int K, int W) {
    const int panel = (int)get_global_id(0), k = (int)get_global_id(1), z = (int)get_global_id(2);
    const int npanels = (int)get_global_size(0);
    const int src = b_off + z * b_sb + k * sbk + panel * W;
    const int dst = p_off + ((z * npanels + panel) * K + k) * W;
    const int valid = min(W, N - panel * W);
    for (int j = 0; j < W; ++j) STM(P, dst + j, j < valid ? LDM(B, src + j) : (MT)0.0f);
}

#define LT 16  // work-group side
#define WT 4   // register tile side per work-item
#define TT (LT * WT)  // 64: tile side per work-group
#define TKD 16  // depth of the local tiles
#define KB_LOCAL (KB_HALF < TKD ? KB_HALF : TKD)  // gemm_local's half blocks: within one local tile
#if TKD % KB_LOCAL
#error "TKD must be a multiple of KB_HALF"
#endif

__kernel __attribute__((reqd_work_group_size(LT, LT, 1))) void gemm_local(GEMM_ARGS) {
    __local MT As[TKD][TT + 1];
    __local MT Bs[TKD][TT];
    const int tx = (int)get_local_id(0), ty = (int)get_local_id(1);
    const int nbase = (int)get_group_id(0) * TT, mbase = (int)get_group_id(1) * TT;
    const int z = (int)get_global_id(2);
    const int b0 = z / nb1, b1 = z - (z / nb1) * nb1;
    const int abase = a_off + b0 * a_sb0 + b1 * a_sb1;
    const int bbase = b_off + b0 * b_sb0 + b1 * b_sb1;
    const int tid = ty * LT + tx;
    float acc[WT][WT];
    for (int i = 0; i < WT; ++i)
        for (int j = 0; j < WT; ++j) acc[i][j] = 0.0f;
    for (int k0 = 0; k0 < K; k0 += TKD) {
        // 1. stage a TKD x TT slice of A (transposed) and of B; 256 work-items load 4 elements each
        for (int l = 0; l < (TKD * TT) / (LT * LT); ++l) {
            const int e = tid + l * LT * LT;
            const int mm = e / TKD, kk = e - (e / TKD) * TKD;
            const int m = mbase + mm, k = k0 + kk;
            As[kk][mm] = (m < M && k < K) ? LDM(A, abase + m * sam + k * sak) : (MT)0.0f;
            const int kb = e / TT, nn = e - (e / TT) * TT;
            const int n = nbase + nn, k2 = k0 + kb;
            Bs[kb][nn] = (n < N && k2 < K) ? LDM(B, bbase + k2 * sbk + n) : (MT)0.0f;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        // 2. multiply from local memory into the 4x4 register tile (rows ty + 16i, columns tx + 16j);
        //    with HALF_MATH, in half over blocks of KB_LOCAL steps, each block's sum added in float
        for (int kb0 = 0; kb0 < TKD; kb0 += KB_LOCAL) {
            MT part[WT][WT];
            for (int i = 0; i < WT; ++i)
                for (int j = 0; j < WT; ++j) part[i][j] = (MT)0.0f;
            for (int kk = kb0; kk < kb0 + KB_LOCAL; ++kk) {
                MT a[WT], b[WT];
                for (int i = 0; i < WT; ++i) a[i] = As[kk][ty + i * LT];
                for (int j = 0; j < WT; ++j) b[j] = Bs[kk][tx + j * LT];
                for (int i = 0; i < WT; ++i)
                    for (int j = 0; j < WT; ++j) part[i][j] += a[i] * b[j];
            }
            for (int i = 0; i < WT; ++i)
                for (int j = 0; j < WT; ++j) acc[i][j] += (float)part[i][j];
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    for (int i = 0; i < WT; ++i) {
        const int m = mbase + ty + i * LT;
        if (m >= M) continue;
        for (int j = 0; j < WT; ++j) {
            const int n = nbase + tx + j * LT;
            if (n < N)
                gemm_store(acc[i][j], m, n, b0, b1, C, c_off, ldc, c_sb0, c_sb1, bias, bias_off, bsm, bsn,
                           bias_sb0, bias_sb1, R, r_off, alpha, beta, flags, act, p0, p1);
        }
    }
}
