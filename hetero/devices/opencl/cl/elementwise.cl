// elementwise.cl: one kernel for every broadcasting elementwise op (the table in opencl/ops/elementwise.py).
//
// Build options:
//   -DEW_OPS=EW(0,(e0))EW(1,(e1))...  the ops of one family (ops/elementwise.py): expressions on
//                     compute-type values x, y, z (and kernel arguments p0, p1); argument `op` picks one
//   -DCT=float|int|long|uchar   compute type
//   -DTA=... -DTB=... -DTC=... -DTO=...   storage types of inputs a, b, c and output (half: see below)
//   -DA_HALF / -DB_HALF / -DC_HALF / -DO_HALF   that operand is half storage (vload_half/vstore_half)
//   -DHALF_MATH       (cl_khr_fp16) CT is half and the float operands are half: entries EW(...) compute
//                     in half, entries EWF(...) (transcendental ops) load float values and compute in float
//   -DA_IS=0|1 (B_IS, C_IS)   the operand's stride along the innermost (contiguous) axis: 0 broadcasts
//
// Shapes are collapsed on the host to (d0, d1, d2, d3, d4, inner) with per-operand outer strides, so the
// kernel walks rows: work-item (chunk, row) decomposes row into (i0..i4) once and loops over its part
// of the innermost axis, where the operands are contiguous or broadcast (a vectorisable loop).

#ifndef ARITY
#define ARITY 2
#endif
#ifndef A_IS
#define A_IS 1
#endif
#ifndef B_IS
#define B_IS 1
#endif
#ifndef C_IS
#define C_IS 1
#endif

#ifdef A_HALF
#define LDA(i) vload_half((i), a)
#else
#define LDA(i) ((CT)a[i])
#endif
#ifdef B_HALF
#define LDB(i) vload_half((i), b)
#else
#define LDB(i) ((CT)b[i])
#endif
#ifdef C_HALF
#define LDC(i) vload_half((i), c)
#else
#define LDC(i) ((CT)c[i])
#endif
#ifdef O_HALF
#define STO(i, v) vstore_half((float)(v), (i), out)
#else
#define STO(i, v) (out[i] = (TO)(v))
#endif

__kernel void ew(__global TO* out, int o_off,
                 __global const TA* a, int a_off, __global const TB* b, int b_off, __global const TC* c, int c_off,
                 int inner, int d1, int d2, int d3, int d4,
                 int as0, int as1, int as2, int as3, int as4,
                 int bs0, int bs1, int bs2, int bs3, int bs4,
                 int cs0, int cs1, int cs2, int cs3, int cs4,
                 float p0, float p1, int op) {
    const int row = (int)get_global_id(1);
    int r = row;
    const int i4 = r % d4; r /= d4;
    const int i3 = r % d3; r /= d3;
    const int i2 = r % d2; r /= d2;
    const int i1 = r % d1;
    const int i0 = r / d1;
    const int ao = a_off + i0 * as0 + i1 * as1 + i2 * as2 + i3 * as3 + i4 * as4;
    const int bo = b_off + i0 * bs0 + i1 * bs1 + i2 * bs2 + i3 * bs3 + i4 * bs4;
    const int co = c_off + i0 * cs0 + i1 * cs1 + i2 * cs2 + i3 * cs3 + i4 * cs4;
    const int oo = o_off + row * inner;
#ifdef CPU_DEVICE
    // one contiguous chunk per work-item: each op's loop below vectorises
    const int chunk = (inner + (int)get_global_size(0) - 1) / (int)get_global_size(0);
    const int j0 = (int)get_global_id(0) * chunk;
    const int j1 = min(inner, j0 + chunk);
#define EW_LOOP for (int j = j0; j < j1; ++j)
#else
    const int j0 = (int)get_global_id(0), step = (int)get_global_size(0), j1 = inner;
#define EW_LOOP for (int j = j0; j < j1; j += step)
#endif
#if ARITY == 1
#define EW_LOAD const CT x = LDA(ao + j * A_IS); const CT y = x; const CT z = x;
#elif ARITY == 2
#define EW_LOAD const CT x = LDA(ao + j * A_IS); const CT y = LDB(bo + j * B_IS); const CT z = x;
#else
#define EW_LOAD const CT x = LDA(ao + j * A_IS); const CT y = LDB(bo + j * B_IS); const CT z = LDC(co + j * C_IS);
#endif
#define EW(code, expr) case code: EW_LOOP { EW_LOAD STO(oo + j, expr); } break;
#ifdef HALF_MATH
#if ARITY == 1
#define EWF_LOAD const float x = LDA(ao + j * A_IS); const float y = x; const float z = x;
#elif ARITY == 2
#define EWF_LOAD const float x = LDA(ao + j * A_IS); const float y = LDB(bo + j * B_IS); const float z = x;
#else
#define EWF_LOAD const float x = LDA(ao + j * A_IS); const float y = LDB(bo + j * B_IS); const float z = LDC(co + j * C_IS);
#endif
#define EWF(code, expr) case code: EW_LOOP { EWF_LOAD STO(oo + j, expr); } break;
#endif
    switch (op) {
        EW_OPS
    }
}
