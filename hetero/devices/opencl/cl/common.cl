// common.cl: prepended to every hetero OpenCL source (see programs.py).
//
// Build-option vocabulary (all optional):
//   -DCPU_DEVICE        the device is a CPU implementation (PoCL, Intel CPU runtime): kernels give each
//                       work-item a contiguous chunk so the compiler's loop vectoriser sees an inner loop.
//   -DT_HALF            float tensors are stored as half (INFERENCE_PRECISION_HINT f16 or float16
//                       models); loads/stores go through vload_half/vstore_half (no cl_khr_fp16
//                       needed) and arithmetic stays in float.
//   -DHALF_MATH         with T_HALF, on a device with cl_khr_fp16 (native half): the kernels' products,
//                       short sums, maxima and copies run in half (type MT, loads LDM / stores STM);
//                       long reductions (GEMM's K beyond a block of KB_HALF, Softmax, norms, average
//                       pools) still accumulate in float. Who gets it: OpenCLDevice.half_math (the
//                       device) and plan.half_sums_ok (a GEMM's / conv's weights bound its half sums).
//
// Conventions: every buffer argument is followed by an element offset, so one device buffer can hold
// several tensors; sizes are ints (the planner refuses tensors of 2^31 elements or more); every device
// buffer is allocated with SLACK_BYTES of padding at its end, so vector loads may run past a row end.

#ifdef HALF_MATH
#pragma OPENCL EXTENSION cl_khr_fp16 : enable
#endif

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)

#ifdef T_HALF
typedef half T;
#define LD(p, i) vload_half((i), (p))
#define ST(p, i, v) vstore_half((float)(v), (i), (p))
#else
typedef float T;
#define LD(p, i) ((p)[i])
#define ST(p, i, v) ((p)[i] = (float)(v))
#endif

// MT: the type the marked kernel steps compute in (half with HALF_MATH, else float)
#ifdef HALF_MATH
typedef half MT;
#define LDM(p, i) ((p)[i])
#define STM(p, i, v) ((p)[i] = (half)(v))
#else
typedef float MT;
#define LDM(p, i) LD(p, i)
#define STM(p, i, v) ST(p, i, v)
#endif

// Activation epilogue shared by the fused ops (FusedConv / FusedGemm / FusedMatMul), the depthwise
// conv, BatchNormalization and the GEMM kernels. Codes follow ACTIVATIONS in opencl/ops/gemm.py.
#define ACT_NONE 0
#define ACT_RELU 1
#define ACT_CLIP 2
#define ACT_LEAKYRELU 3
#define ACT_SIGMOID 4
#define ACT_HARDSWISH 5
#define ACT_HARDSIGMOID 6
#define ACT_TANH 7

inline float act_fn(float x, int act, float p0, float p1) {
    switch (act) {
    case ACT_RELU: return x < 0.0f ? 0.0f : x;  // keeps NaN, as numpy's maximum does
    case ACT_CLIP: return x < p0 ? p0 : (x > p1 ? p1 : x);
    case ACT_LEAKYRELU: return x < 0.0f ? p0 * x : x;
    case ACT_SIGMOID: return 1.0f / (1.0f + exp(-x));
    case ACT_HARDSWISH: { float h = x * (1.0f / 6.0f) + 0.5f; h = h < 0.0f ? 0.0f : (h > 1.0f ? 1.0f : h); return x * h; }
    case ACT_HARDSIGMOID: { float h = p0 * x + p1; return h < 0.0f ? 0.0f : (h > 1.0f ? 1.0f : h); }
    case ACT_TANH: return tanh(x);
    default: return x;
    }
}

// Work split of a 1-D range [0, n) over dimension `dim`: on CPU devices each work-item takes one
// contiguous chunk (inner loop vectorises); elsewhere a grid-stride loop keeps accesses coalesced.
#ifdef CPU_DEVICE
#define RANGE_BEGIN(n, dim) const int _n = (n); const int _chunk = (_n + (int)get_global_size(dim) - 1) / (int)get_global_size(dim); \
    const int _j0 = (int)get_global_id(dim) * _chunk; const int _j1 = min(_n, _j0 + _chunk); \
    for (int j = _j0; j < _j1; ++j)
#else
#define RANGE_BEGIN(n, dim) const int _n = (n); for (int j = (int)get_global_id(dim); j < _n; j += (int)get_global_size(dim))
#endif
