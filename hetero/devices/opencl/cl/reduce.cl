// reduce.cl: reductions over the middle axis of an (outer, R, inner) view, softmax-style row ops.
//
// The planner moves the reduced axes into one contiguous block (transposing first when they are not
// adjacent), so every reduction is Y[o, i] = op_{r < R} X[o, r, i]. One work-item per (i, o).
// op codes (REDUCE_OPS in opencl/ops/reduce.py): 0 sum, 1 mean, 2 max, 3 min, 4 prod, 5 sum of squares,
// 6 L1, 7 L2, 8 log-sum, 9 log-sum-exp, 10 argmax, 11 argmin (argmax/argmin write int64 to Yi;
// select_last picks the last index on ties).

__kernel void reduce(__global const T* X, int x_off, __global T* Y, int y_off, __global long* Yi, int yi_off,
                     int R, int inner, int op, int select_last) {
    const int i = (int)get_global_id(0);
    const int o = (int)get_global_id(1);
    const int base = x_off + o * R * inner + i;
    float acc;
    if (op == 2 || op == 10) acc = -INFINITY;
    else if (op == 3 || op == 11) acc = INFINITY;
    else if (op == 4) acc = 1.0f;
    else acc = 0.0f;
    if (op == 9) {  // log-sum-exp, shifted by the max for range
        float mx = -INFINITY;
        for (int r = 0; r < R; ++r) mx = fmax(mx, LD(X, base + r * inner));
        if (isinf(mx)) mx = 0.0f;
        for (int r = 0; r < R; ++r) acc += exp(LD(X, base + r * inner) - mx);
        ST(Y, y_off + o * inner + i, log(acc) + mx);
        return;
    }
    int arg = 0;
    for (int r = 0; r < R; ++r) {
        const float v = LD(X, base + r * inner);
        switch (op) {
        case 0: case 1: case 8: acc += v; break;
        case 2: acc = (v > acc || isnan(v)) ? v : acc; break;
        case 3: acc = (v < acc || isnan(v)) ? v : acc; break;
        case 4: acc *= v; break;
        case 5: case 7: acc += v * v; break;
        case 6: acc += fabs(v); break;
        case 10: if (v > acc || (select_last && v == acc) || r == 0) { acc = v; arg = r; } break;
        case 11: if (v < acc || (select_last && v == acc) || r == 0) { acc = v; arg = r; } break;
        }
    }
    if (op == 10 || op == 11) { Yi[yi_off + o * inner + i] = arg; return; }
    if (op == 1) acc = acc / (float)R;
    else if (op == 7) acc = sqrt(acc);
    else if (op == 8) acc = log(acc);
    ST(Y, y_off + o * inner + i, acc);
}

// Softmax / LogSoftmax / Hardmax along the middle axis of (outer, R, inner). mode 0 softmax, 1 log, 2 hard.
__kernel void softmax(__global const T* X, int x_off, __global T* Y, int y_off, int R, int inner, int mode) {
    const int i = (int)get_global_id(0);
    const int o = (int)get_global_id(1);
    const int base = o * R * inner + i;
    float mx = -INFINITY;
    int amax = 0;
    for (int r = 0; r < R; ++r) {
        const float v = LD(X, x_off + base + r * inner);
        if (v > mx) { mx = v; amax = r; }
    }
    if (mode == 2) {
        for (int r = 0; r < R; ++r) ST(Y, y_off + base + r * inner, r == amax ? 1.0f : 0.0f);
        return;
    }
    float s = 0.0f;
    for (int r = 0; r < R; ++r) s += exp(LD(X, x_off + base + r * inner) - mx);
    if (mode == 1) {
        const float ls = log(s);
        for (int r = 0; r < R; ++r) ST(Y, y_off + base + r * inner, LD(X, x_off + base + r * inner) - mx - ls);
    } else {
        const float inv = 1.0f / s;
        for (int r = 0; r < R; ++r) ST(Y, y_off + base + r * inner, exp(LD(X, x_off + base + r * inner) - mx) * inv);
    }
}

// CumSum along the middle axis of (outer, R, inner); exclusive / reverse as in ONNX.
__kernel void cumsum(__global const T* X, int x_off, __global T* Y, int y_off, int R, int inner, int exclusive,
                     int reverse) {
    const int i = (int)get_global_id(0);
    const int o = (int)get_global_id(1);
    const int base = o * R * inner + i;
    float acc = 0.0f;
    for (int t = 0; t < R; ++t) {
        const int r = reverse ? R - 1 - t : t;
        const float v = LD(X, x_off + base + r * inner);
        if (exclusive) { ST(Y, y_off + base + r * inner, acc); acc += v; }
        else { acc += v; ST(Y, y_off + base + r * inner, acc); }
    }
}
