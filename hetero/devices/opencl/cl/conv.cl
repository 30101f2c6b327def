// conv.cl: the pieces of convolution that are not a GEMM.
//
// im2col   unfolds X[n] (C, H, W) into Col[n] (C*KH*KW, OH*OW): row (c, kh, kw), column (oy, ox);
//          zero where the tap falls into padding. The GEMM kernel then multiplies W (Cout, C*KH*KW).
//          One work-item per (oy, row, n), looping over ox (the inner loop vectorises on CPUs).
// (HALF_MATH: im2col copies half as half; dwconv sums its taps in half.)
// dwconv   depthwise convolution (group == C_in, `mult` output channels per input channel), direct:
//          one work-item per (oy, output channel, n), looping over ox; bias, residual and activation
//          are applied in the same pass (flags: 1 = bias, 2 = residual).

// PW_ > 0: write Col packed in panels of PW_ columns for gemm_reg (see gemm.cl), zero-padded.
__kernel void im2col(__global const T* X, int x_off, __global T* Col, int col_off,
                     int C, int H, int W, int KH, int KW, int SH, int SW, int PH, int PW, int DH, int DW,
                     int OH, int OW, int PW_) {
    const int oy = (int)get_global_id(0);
    const int row = (int)get_global_id(1);
    const int n = (int)get_global_id(2);
    const int kw = row % KW;
    const int kh = (row / KW) % KH;
    const int c = row / (KW * KH);
    const int iy = oy * SH - PH + kh * DH;
    const int xb = x_off + (n * C + c) * H * W + iy * W;
    const bool rowok = iy >= 0 && iy < H;
    const int rows = C * KH * KW;
    if (PW_ == 0) {
        const int ob = col_off + (n * rows + row) * OH * OW + oy * OW;
        for (int ox = 0; ox < OW; ++ox) {
            const int ix = ox * SW - PW + kw * DW;
            const MT v = (rowok && ix >= 0 && ix < W) ? LDM(X, xb + ix) : (MT)0.0f;
            STM(Col, ob + ox, v);
        }
        return;
    }
    const int npanels = (OH * OW + PW_ - 1) / PW_;
    const int nb = col_off + n * npanels * rows * PW_;
    for (int ox = 0; ox < OW; ++ox) {
        const int ix = ox * SW - PW + kw * DW;
        const MT v = (rowok && ix >= 0 && ix < W) ? LDM(X, xb + ix) : (MT)0.0f;
        const int col = oy * OW + ox;
        const int panel = col / PW_;
        STM(Col, nb + (panel * rows + row) * PW_ + (col - panel * PW_), v);
    }
    if (oy == OH - 1) {  // zero the padding columns of the last panel
        for (int col = OH * OW; col < npanels * PW_; ++col) {
            const int panel = col / PW_;
            STM(Col, nb + (panel * rows + row) * PW_ + (col - panel * PW_), (MT)0.0f);
        }
    }
}

#define DWB 64  // output columns accumulated at a time (private row buffer)

__kernel void dwconv(__global const T* X, int x_off, __global const T* Wt, int w_off,
                     __global const T* bias, int bias_off, __global const T* R, int r_off,
                     __global T* Y, int y_off,
                     int C, int H, int W, int KH, int KW, int SH, int SW, int PH, int PW, int DH, int DW,
                     int OH, int OW, int mult, int flags, int act, float p0, float p1) {
    const int oy = (int)get_global_id(0);
    const int co = (int)get_global_id(1);
    const int n = (int)get_global_id(2);
    const int ci = co / mult;
    const int cout = C * mult;
    const int xb = x_off + (n * C + ci) * H * W;
    const int wb = w_off + co * KH * KW;
    const int yb = (n * cout + co) * OH * OW + oy * OW;
    const MT b = (flags & 1) ? LDM(bias, bias_off + co) : (MT)0.0f;
    // taps outer, columns inner: for each tap the valid column range is computed once, so the inner
    // loop has no bounds checks (and vectorises for stride 1)
    for (int ox0 = 0; ox0 < OW; ox0 += DWB) {
        const int cnt = min(DWB, OW - ox0);
        MT acc[DWB];  // HALF_MATH: half (the planner checks the taps' sum stays inside half's range)
        for (int j = 0; j < cnt; ++j) acc[j] = b;
        for (int kh = 0; kh < KH; ++kh) {
            const int iy = oy * SH - PH + kh * DH;
            if (iy < 0 || iy >= H) continue;
            for (int kw = 0; kw < KW; ++kw) {
                const MT w = LDM(Wt, wb + kh * KW + kw);
                const int ix0 = ox0 * SW - PW + kw * DW;
                const int jlo = ix0 >= 0 ? 0 : (-ix0 + SW - 1) / SW;
                const int jhi = ix0 > W - 1 ? 0 : min(cnt, (W - 1 - ix0) / SW + 1);
                const int xr = xb + iy * W + ix0;
                for (int j = jlo; j < jhi; ++j) acc[j] += w * LDM(X, xr + j * SW);
            }
        }
        for (int j = 0; j < cnt; ++j) {
            float v = acc[j];
            if (flags & 2) v += LD(R, r_off + yb + ox0 + j);
            ST(Y, y_off + yb + ox0 + j, act_fn(v, act, p0, p1));
        }
    }
}

// col2im for ConvTranspose: Y[n, m, oy, ox] = bias[m] + sum over taps (kh, kw) whose input position
// iy = (oy + PH - kh*DH) / SH (exact division) and ix likewise fall inside the input, of
// Col[n][(m, kh, kw)][iy*W + ix], where Col = W^T . X was computed by the GEMM. A gather: no atomics.
__kernel void col2im(__global const T* Col, int col_off, __global const T* bias, int bias_off, __global T* Y, int y_off,
                     int M, int H, int W, int KH, int KW, int SH, int SW, int PH, int PW, int DH, int DW,
                     int OH, int OW, int flags) {
    const int oy = (int)get_global_id(0);
    const int m = (int)get_global_id(1);
    const int n = (int)get_global_id(2);
    const int cb = col_off + (n * M + m) * KH * KW * H * W;
    const float b = (flags & 1) ? LD(bias, bias_off + m) : 0.0f;
    const int yb = y_off + ((n * M + m) * OH + oy) * OW;
    for (int ox = 0; ox < OW; ++ox) {
        float acc = b;
        for (int kh = 0; kh < KH; ++kh) {
            const int ty = oy + PH - kh * DH;
            if (ty < 0 || ty % SH) continue;
            const int iy = ty / SH;
            if (iy >= H) continue;
            for (int kw = 0; kw < KW; ++kw) {
                const int tx = ox + PW - kw * DW;
                if (tx < 0 || tx % SW) continue;
                const int ix = tx / SW;
                if (ix >= W) continue;
                acc += LD(Col, cb + (kh * KW + kw) * H * W + iy * W + ix);
            }
        }
        ST(Y, yb + ox, acc);
    }
}
