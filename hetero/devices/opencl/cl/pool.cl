// pool.cl: 2-D max / average pooling over (N*C, H, W) planes.
//
// One work-item per (oy, plane), looping over ox. Window start = o*S - P_begin, taps at start + k*D.
// mode 3: Lp norm of the taps (padding contributes 0). mode 0: max (taps in padding are skipped); mode 1: average counting taps inside the padded extent
// [-P_begin, size + P_end) (count_include_pad=1); mode 2: average over taps inside the input only.
// A window with no valid tap gives -inf (max) / 0 (average), as onnx.reference does.

__kernel void pool2d(__global const T* X, int x_off, __global T* Y, int y_off,
                     int H, int W, int KH, int KW, int SH, int SW, int PH, int PW, int PHE, int PWE,
                     int DH, int DW, int OH, int OW, int mode, float lp) {
    const int oy = (int)get_global_id(0);
    const int p = (int)get_global_id(1);
    const int xb = x_off + p * H * W;
    const int yb = y_off + (p * OH + oy) * OW;
    const int hs = oy * SH - PH;
    int hcnt_pad = 0, hcnt = 0;
    for (int kh = 0; kh < KH; ++kh) {
        const int iy = hs + kh * DH;
        hcnt_pad += (iy >= -PH && iy < H + PHE);
        hcnt += (iy >= 0 && iy < H);
    }
    for (int ox = 0; ox < OW; ++ox) {
        const int ws = ox * SW - PW;
        MT mx = (MT)(-INFINITY);  // max: in MT (half with HALF_MATH); averages and Lp norms sum in float
        float acc = 0.0f;
        int wcnt_pad = 0, wcnt = 0;
        for (int kw = 0; kw < KW; ++kw) {
            const int ix = ws + kw * DW;
            wcnt_pad += (ix >= -PW && ix < W + PWE);
            wcnt += (ix >= 0 && ix < W);
        }
        for (int kh = 0; kh < KH; ++kh) {
            const int iy = hs + kh * DH;
            if (iy < 0 || iy >= H) continue;
            for (int kw = 0; kw < KW; ++kw) {
                const int ix = ws + kw * DW;
                if (ix < 0 || ix >= W) continue;
                const MT v = LDM(X, xb + iy * W + ix);
                if (mode == 0) mx = (v > mx || isnan(v)) ? v : mx;
                else if (mode == 3) acc += pow(fabs((float)v), lp);
                else acc += (float)v;
            }
        }
        if (mode == 1) acc = acc / (float)(hcnt_pad * wcnt_pad);
        else if (mode == 2) acc = (hcnt * wcnt) > 0 ? acc / (float)(hcnt * wcnt) : 0.0f;
        else if (mode == 3) acc = pow(acc, 1.0f / lp);
        if (mode == 0) STM(Y, yb + ox, mx);
        else ST(Y, yb + ox, acc);
    }
}
