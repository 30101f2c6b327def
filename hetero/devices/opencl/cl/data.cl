// data.cl: data movement, independent of the element type: -DELEM=uchar|ushort|uint|ulong (by size).
//
// strided_copy  Y[y_off + sum_d i_d*ys_d] = X[x_off + sum_d i_d*xs_d] over a 6-D index space d0..d5.
//               Transpose (permuted X strides), Slice (start in x_off, steps as strides, negative ok),
//               Expand (zero strides), Concat / Split (an offset window of the output / input) and
//               DepthToSpace / SpaceToDepth are all this one kernel. One work-item per (d0..d4) row,
//               looping over d5.
// pad           constant / reflect / edge / wrap padding over 6-D; `value` holds the constant's raw bits.
// gather        Y[o, t, i] = X[o, idx[t], i] (negative indices count from the end; out of range clamps).
// resize        separable resampling with per-axis tap tables built on the host (opencl/ops/data.py):
//               for output coordinate q on axis a, taps (tidx[ta + q*taps_a + t], tw[...]); an index of
//               -1 means "outside" (tf_crop_and_resize) and gives `extrapolation`. Float tensors only.

#ifndef ELEM
#define ELEM uint
#endif
#ifndef IDX_T
#define IDX_T long
#endif

__kernel void strided_copy(__global ELEM* Y, int y_off, __global const ELEM* X, int x_off,
                           int d1, int d2, int d3, int d4, int d5,
                           int ys0, int ys1, int ys2, int ys3, int ys4, int ys5,
                           int xs0, int xs1, int xs2, int xs3, int xs4, int xs5) {
    int r = (int)get_global_id(0);
    const int i4 = r % d4; r /= d4;
    const int i3 = r % d3; r /= d3;
    const int i2 = r % d2; r /= d2;
    const int i1 = r % d1;
    const int i0 = r / d1;
    const int yb = y_off + i0 * ys0 + i1 * ys1 + i2 * ys2 + i3 * ys3 + i4 * ys4;
    const int xb = x_off + i0 * xs0 + i1 * xs1 + i2 * xs2 + i3 * xs3 + i4 * xs4;
    for (int j = 0; j < d5; ++j) Y[yb + j * ys5] = X[xb + j * xs5];
}

inline int pad_src(int o, int b, int n, int mode) {
    int i = o - b;
    if (i >= 0 && i < n) return i;
    if (mode == 0) return -1;
    if (mode == 2) return i < 0 ? 0 : n - 1;
    if (mode == 3) { i %= n; return i < 0 ? i + n : i; }
    // reflect (mirror without repeating the edge)
    if (n == 1) return 0;
    const int period = 2 * (n - 1);
    i %= period;
    if (i < 0) i += period;
    return i < n ? i : period - i;
}

__kernel void pad(__global ELEM* Y, int y_off, __global const ELEM* X, int x_off,
                  int d0, int d1, int d2, int d3, int d4, int d5,
                  int e0, int e1, int e2, int e3, int e4, int e5,
                  int b0, int b1, int b2, int b3, int b4, int b5, int mode, ulong value) {
    int r = (int)get_global_id(0);
    const int o4 = r % d4; r /= d4;
    const int o3 = r % d3; r /= d3;
    const int o2 = r % d2; r /= d2;
    const int o1 = r % d1;
    const int o0 = r / d1;
    const int s0 = pad_src(o0, b0, e0, mode), s1 = pad_src(o1, b1, e1, mode), s2 = pad_src(o2, b2, e2, mode);
    const int s3 = pad_src(o3, b3, e3, mode), s4 = pad_src(o4, b4, e4, mode);
    const bool rowok = s0 >= 0 && s1 >= 0 && s2 >= 0 && s3 >= 0 && s4 >= 0;
    const int xb = x_off + ((((s0 * e1 + s1) * e2 + s2) * e3 + s3) * e4 + s4) * e5;
    const int yb = y_off + (int)get_global_id(0) * d5;
    const ELEM cv = (ELEM)value;
    for (int j = 0; j < d5; ++j) {
        const int s5 = pad_src(j, b5, e5, mode);
        Y[yb + j] = (rowok && s5 >= 0) ? X[xb + s5] : cv;
    }
}

__kernel void gather(__global ELEM* Y, int y_off, __global const ELEM* X, int x_off,
                     __global const IDX_T* idx, int idx_off, int axis_dim, int nidx, int inner) {
    const int t = (int)get_global_id(0);
    const int o = (int)get_global_id(1);
    long k = idx[idx_off + t];
    if (k < 0) k += axis_dim;
    k = k < 0 ? 0 : (k >= axis_dim ? axis_dim - 1 : k);
    const int xb = x_off + (o * axis_dim + (int)k) * inner;
    const int yb = y_off + (o * nidx + t) * inner;
    for (int j = 0; j < inner; ++j) Y[yb + j] = X[xb + j];
}

#ifdef WITH_RESIZE
__kernel void resize(__global T* Y, int y_off, __global const T* X, int x_off,
                     __global const int* tidx, __global const float* tw,
                     int od1, int od2, int od3, int xs0, int xs1, int xs2, int xs3,
                     int ta0, int ta1, int ta2, int ta3, int nt0, int nt1, int nt2, int nt3, float extrapolation) {
    int r = (int)get_global_id(0);
    const int q2 = r % od2; r /= od2;
    const int q1 = r % od1;
    const int q0 = r / od1;
    const int yb = y_off + (int)get_global_id(0) * od3;
    for (int q3 = 0; q3 < od3; ++q3) {
        float acc = 0.0f;
        bool outside = false;
        for (int t0 = 0; t0 < nt0; ++t0) {
            const int i0 = tidx[ta0 + q0 * nt0 + t0]; const float w0 = tw[ta0 + q0 * nt0 + t0];
            for (int t1 = 0; t1 < nt1; ++t1) {
                const int i1 = tidx[ta1 + q1 * nt1 + t1]; const float w1 = tw[ta1 + q1 * nt1 + t1] * w0;
                for (int t2 = 0; t2 < nt2; ++t2) {
                    const int i2 = tidx[ta2 + q2 * nt2 + t2]; const float w2 = tw[ta2 + q2 * nt2 + t2] * w1;
                    for (int t3 = 0; t3 < nt3; ++t3) {
                        const int i3 = tidx[ta3 + q3 * nt3 + t3]; const float w3 = tw[ta3 + q3 * nt3 + t3] * w2;
                        if (i0 < 0 || i1 < 0 || i2 < 0 || i3 < 0) { outside = true; continue; }
                        if (w3 != 0.0f) acc += w3 * LD(X, x_off + i0 * xs0 + i1 * xs1 + i2 * xs2 + i3 * xs3);
                    }
                }
            }
        }
        ST(Y, yb + q3, outside ? extrapolation : acc);
    }
}
#endif

// GatherElements: Y[i] = X[i with axis index replaced by idx[i]] over the output's (= idx's) 6-D space.
__kernel void gather_elements(__global ELEM* Y, int y_off, __global const ELEM* X, int x_off,
                              __global const IDX_T* idx, int idx_off, int d1, int d2, int d3, int d4, int d5,
                              int xs0, int xs1, int xs2, int xs3, int xs4, int xs5, int axis, int axis_dim) {
    int r = (int)get_global_id(0);
    const int i4 = r % d4; r /= d4;
    const int i3 = r % d3; r /= d3;
    const int i2 = r % d2; r /= d2;
    const int i1 = r % d1;
    const int i0 = r / d1;
    const int ii[5] = {i0, i1, i2, i3, i4};
    const int xsa[6] = {xs0, xs1, xs2, xs3, xs4, xs5};
    const int base = x_off + i0 * xs0 + i1 * xs1 + i2 * xs2 + i3 * xs3 + i4 * xs4;
    const int yb = (int)get_global_id(0) * d5;
    for (int j = 0; j < d5; ++j) {
        long k = idx[idx_off + yb + j];
        if (k < 0) k += axis_dim;
        k = k < 0 ? 0 : (k >= axis_dim ? axis_dim - 1 : k);
        const int cur = axis < 5 ? ii[axis] : j;
        Y[y_off + yb + j] = X[base + j * xs5 + ((int)k - cur) * xsa[axis]];
    }
}

// Trilu over the last two axes: keep element (r, c) when c - r >= k (upper) / c - r <= k (lower).
__kernel void trilu(__global ELEM* Y, int y_off, __global const ELEM* X, int x_off, int rows, int cols, int k, int upper) {
    const int r = (int)get_global_id(0);
    const int b = (int)get_global_id(1);
    const int base = (b * rows + r) * cols;
    for (int c = 0; c < cols; ++c) {
        const bool keep = upper ? (c - r >= k) : (c - r <= k);
        Y[y_off + base + c] = keep ? X[x_off + base + c] : (ELEM)0;
    }
}
