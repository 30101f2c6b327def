// norm.cl: normalisations.
//
// batchnorm  inference BatchNormalization over (N, C, inner): y = (x - mean) * scale / sqrt(var + eps) + b,
//            then the activation (so a following Relu can be folded in). One work-item per (chunk, c, n).
// lrn        local response normalisation across channels of (N, C, inner).
// rownorm    LayerNormalization / InstanceNormalization over rows of length R: y = (x - mean) / sqrt(var
//            + eps) * scale + bias. scale/bias index = r * s_stride, or (o % per_outer) when per_outer > 0
//            (InstanceNormalization's per-channel parameters). flags: 1 = has bias, 2 / 4 = write the
//            row mean / inverse standard deviation (LayerNormalization's optional outputs).

__kernel void batchnorm(__global const T* X, int x_off, __global T* Y, int y_off,
                        __global const T* scale, int s_off, __global const T* B, int b_off,
                        __global const T* mean, int m_off, __global const T* var, int v_off,
                        int C, int inner, float eps, int act, float p0, float p1) {
    const int c = (int)get_global_id(1);
    const int n = (int)get_global_id(2);
    const float s = LD(scale, s_off + c) / sqrt(LD(var, v_off + c) + eps);
    const float t = LD(B, b_off + c) - LD(mean, m_off + c) * s;
    const int base = (n * C + c) * inner;
    const MT sm = (MT)s, tm = (MT)t;  // HALF_MATH: the affine step in half
    RANGE_BEGIN(inner, 0) {
        ST(Y, y_off + base + j, act_fn(LDM(X, x_off + base + j) * sm + tm, act, p0, p1));
    }
}

__kernel void lrn(__global const T* X, int x_off, __global T* Y, int y_off, int C, int inner,
                  int size, float alpha, float beta, float bias) {
    const int c = (int)get_global_id(1);
    const int n = (int)get_global_id(2);
    const int lo = max(0, c - (size - 1) / 2);
    const int hi = min(C - 1, c + size / 2);  // ceil((size-1)/2) == size/2
    const int base = n * C * inner;
    RANGE_BEGIN(inner, 0) {
        float s = 0.0f;
        for (int k = lo; k <= hi; ++k) {
            const float v = LD(X, x_off + base + k * inner + j);
            s += v * v;
        }
        const float x = LD(X, x_off + base + c * inner + j);
        ST(Y, y_off + base + c * inner + j, x / pow(bias + alpha / (float)size * s, beta));
    }
}

__kernel void rownorm(__global const T* X, int x_off, __global T* Y, int y_off,
                      __global const T* scale, int s_off, int s_stride, __global const T* B, int b_off, int b_stride,
                      int R, int per_outer, float eps, int flags, __global T* Mean, __global T* InvStd) {
    const int o = (int)get_global_id(0);
    const int base = o * R;
    float mean = 0.0f;
    for (int r = 0; r < R; ++r) mean += LD(X, x_off + base + r);
    mean /= (float)R;
    float var = 0.0f;
    for (int r = 0; r < R; ++r) { const float d = LD(X, x_off + base + r) - mean; var += d * d; }
    var /= (float)R;
    const float inv = 1.0f / sqrt(var + eps);
    if (flags & 2) ST(Mean, o, mean);
    if (flags & 4) ST(InvStd, o, inv);
    const int pc = per_outer > 0 ? o % per_outer : 0;
    for (int r = 0; r < R; ++r) {
        const int si = per_outer > 0 ? pc : r * s_stride;
        const int bi = per_outer > 0 ? pc : r * b_stride;
        float y = (LD(X, x_off + base + r) - mean) * inv * LD(scale, s_off + si);
        if (flags & 1) y += LD(B, b_off + bi);
        ST(Y, y_off + base + r, y);
    }
}
