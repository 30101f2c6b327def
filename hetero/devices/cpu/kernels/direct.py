"""Direct convolution: a register-blocked micro-kernel written in LLVM IR (through llvmlite, which
numba brings) and compiled for the host CPU's vector unit on first use.

Why: im2col + BLAS pays an extra copy of every input value per tap, and OpenBLAS is at its weakest on
exactly the GEMM shapes CNNs give it (K = 16..144 for a 3x3 conv on few channels, N = 49 or 196 on
7x7 / 14x14 maps); Winograd pays six transform passes around its 36 GEMMs. numba cannot be told to
keep a tile of accumulators in registers (its GEMM loops ran at 7-20 GFLOP/s), but LLVM IR written
with explicit vector values can: each accumulator is an SSA value, each multiply-add one ``fma``.
Measured on this project's 2-core AVX-512 machine, one thread: 3x3 conv 16 -> 64 channels on 55x55,
im2col 1.31 ms, direct 0.64 ms; 192 -> 320 on 7x7, im2col 1.35 ms, direct 0.54 ms; 64 -> 192 on
56x56, Winograd 7.7 ms, direct 6.5 ms. The units of a conv run through ``parallel.run_native``:
claimed by the caller and the pool threads inside compiled code, without the GIL.

How a conv runs (``conv2d``):

1. the input is laid out "wide" (``jit.pack``: each channel's padded plane split into its stride
   phases, so that every kernel tap reads ONE contiguous run of a channel, the output position q
   of the wide output being ``oh * Wq + ow``; for a 1x1 stride-1 unpadded conv that is the input
   itself). ``offs[c*K + t]`` is where tap t of channel c starts. Each plan (geometry) keeps its
   own wide buffer: ``jit.pack`` fills its padding once, and every call copies only the interior,
   with the compiled copy of ``_build_copy_ir`` (whole vectors; stride 2 deinterleaved by a
   permute), its channels spread over the threads;
2. the weights are packed once per weight array into blocks of MR output channels:
   ``wp[block, c*K + t, r]`` (zero rows pad the last block), per group; MR is at most the group's
   output channels (depthwise: 1). A unit of work runs a range of groups one after another;
3. the kernel, for each tile of TILE = NV * VW consecutive wide positions and each block of MR
   output channels, keeps MR x NV vector accumulators in registers while it walks j over the
   C*K (channel, tap) pairs: NV vector loads of the input at ``offs[j] + q``, MR broadcasts of
   the weights, MR * NV fused multiply-adds. Order: chunks of wide positions whose input fits
   ``CHUNK_BYTES`` (L2), in each chunk every block, in each block the chunk's tiles. So a block's
   output channels are written as a few sequential streams (tile-major order wrote every output
   channel's plane per tile: 64 streams for a 64-channel conv, which the prefetchers cannot
   follow once the data comes from memory; SqueezeNet's stem, in the model: 1.47 -> 0.92 ms), and
   the weights are read once per chunk (ResNet-50's 512 -> 2048 1x1 on 7x7: once). The last tile
   of a run runs only its vectors holding some position (L = 196: 1 of 4);
4. epilogue, still in registers: bias, residual, Relu / Clip / LeakyRelu, then each vector is stored
   through a lane mask that drops the wide output's garbage columns (and the positions past the
   end): ``compressstore`` packs the valid lanes, which are consecutive in the real (OH, OW) output.

Traced example: 3x3, pads 1, 4x4 input. The padded plane is 6x6 (Wq = 6), the wide output has
4 rows of 6 (L = 24): tap (1, 2) of channel c starts at offs = c*36 + 1*6 + 2 = c*36 + 8, and wide
position q = 13 (oh 2, ow 1) reads padded (3, 3) = element 8 + 13 = 21 of the channel. Positions
q = 4, 5 (ow 4, 5) are garbage: the mask drops them, and q = 6 (output (1, 0)) lands at 4.

``engine()`` returns None when llvmlite is missing or fails (the callers use their BLAS paths), or
with ``HETERO_JIT=0`` or ``HETERO_DIRECT=0``.
"""
from __future__ import annotations

import ctypes
import os
import threading

import numpy as np

from . import jit, native, parallel
from .nn import per_weight

_lock = threading.RLock()  # engine() compiles its first variant while holding it
_state: dict = {}


# ---- code generation --------------------------------------------------------------------------------

def _shape_for(features: str) -> tuple[int, int, int]:
    """(VW, NV, MR): vector width in floats, vectors per tile, output channels per block, sized
    so the MR*NV accumulators, NV input vectors and one broadcast fit the register file (AVX-512:
    32 registers, 24 accumulators; AVX2: 16 registers, 12; anything else: 4-wide, 8)."""
    if "+avx512f" in features:
        return 16, 4, 6
    if "+avx2" in features and "+fma" in features:
        return 8, 2, 6
    return 4, 2, 4


#: the integer parameters of one kernel call, in the order of its ``prm`` array
PRM = ("x", "w", "y", "bias", "J", "ldy", "mb0", "mb1", "p0", "p1", "L", "M", "offs", "mask", "dst",
       "ng", "xg", "wg", "yg", "bg", "CL")


def _build_ir(VW: int, NV: int, MR: int, act: int, bias: bool, res: bool, crop: bool) -> str:
    """The LLVM IR module (text) of one kernel variant ``conv``:

    void conv(i64 *prm, float *x, float *w, float *y, float *bias, float *res, float a0, float a1)

    ``prm`` holds the call's integers: offsets (in floats) added to x, w, y and res, and to bias;
    J (channel-tap pairs), ldy (output row pitch), the channel blocks [mb0, mb1), the wide positions
    [p0, p1), L, M (rows stored), the addresses of ``offs`` (i64 per pair), ``mask`` (i32 per
    wide position) and ``dst`` (i64 per vector), then ng groups run one after another, each moving
    the x, w, y (and res) and bias offsets on by xg, wg, yg and bg, in that order (``PRM``). Passing
    them in one array keeps the ctypes call at eight arguments (each costs a conversion in Python).

    Tiles of wide positions [p0, p1) (p0 a multiple of TILE) times channel blocks [mb0, mb1). Input
    loads of a tile reaching past L are masked, so the kernel never reads beyond the wide run.
    ``crop``: store through ``mask`` (i32 per wide position, 0 for garbage) and ``dst`` (per
    vector: its first valid lane's index in the real output) with compressstore / expandload;
    otherwise position q is stored at q (lanes past L masked). Loops: ``native.ir_loop``."""
    import llvmlite.ir as ir

    f32, i64, i32, i1 = ir.FloatType(), ir.IntType(64), ir.IntType(32), ir.IntType(1)
    vt, mt, it = ir.VectorType(f32, VW), ir.VectorType(i1, VW), ir.VectorType(i32, VW)
    lt = ir.VectorType(i64, VW)
    fp, lp, ip = f32.as_pointer(), i64.as_pointer(), i32.as_pointer()
    vp = vt.as_pointer()
    TILE = VW * NV
    mod = ir.Module(name="hetero_direct")
    fn = ir.Function(mod, ir.FunctionType(ir.VoidType(), [lp, fp, fp, fp, fp, fp, f32, f32]), name="conv")
    prm, x0, w0, y0, b0, r0, a0, a1 = fn.args
    for a in (x0, w0, y0, b0, r0):
        a.add_attribute("noalias")
    vname = f"v{VW}f32"
    fma = ir.Function(mod, ir.FunctionType(vt, [vt, vt, vt]), name=f"llvm.fma.{vname}")
    mload = ir.Function(mod, ir.FunctionType(vt, [vp, i32, mt, vt]), name=f"llvm.masked.load.{vname}.p0")
    mstore = ir.Function(mod, ir.FunctionType(ir.VoidType(), [vt, vp, i32, mt]), name=f"llvm.masked.store.{vname}.p0")
    cstore = ir.Function(mod, ir.FunctionType(ir.VoidType(), [vt, fp, mt]), name=f"llvm.masked.compressstore.{vname}")
    eload = ir.Function(mod, ir.FunctionType(vt, [fp, mt, vt]), name=f"llvm.masked.expandload.{vname}")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    c64 = lambda v: ir.Constant(i64, v)  # noqa: E731
    xo, wo, yo, bo, J, ldy, mb0, mb1, p0, p1, L, M, ao, am, ad, ng, xg, wg, yg, bg, CL = (
        b.load(b.gep(prm, [c64(i)])) for i in range(len(PRM)))
    x = w = y = rp = bp = None  # the current group's pointers (set by ``group``)
    offs, maskp, dstp = b.inttoptr(ao, lp), b.inttoptr(am, ip), b.inttoptr(ad, lp)
    zero = ir.Constant(vt, [0.0] * VW)
    iota = ir.Constant(lt, list(range(VW)))

    def splat(s, ty=vt):
        return native.ir_splat(b, s, ty)

    def loop(lo, hi, step, body):
        native.ir_loop(b, lo, hi, body, step)

    accs = [[b.alloca(vt) for _ in range(NV)] for _ in range(MR)]
    A0, A1 = splat(a0), splat(a1)

    def chunk(pc):
        pe = b.add(pc, CL)
        pe = b.select(b.icmp_signed("<", p1, pe), p1, pe)
        loop(mb0, mb1, 1, lambda mb: loop(pc, pe, TILE, lambda p: tile(p, mb)))

    def tile(p, mb):
        # a whole tile: NV vectors, plain loads. The last tile (positions past L): only the vectors
        # holding some position run (n = 1 .. NV, chosen by a branch; on a 14x14 output, L = 196,
        # the fourth tile has 4 positions: one masked vector instead of four), the last of them
        # masked
        left = b.sub(L, p)
        with b.if_else(b.icmp_signed(">=", left, c64(TILE))) as (then, otherwise):
            with then:
                vectors(p, mb, NV, False)
            with otherwise:
                live = b.udiv(b.add(left, c64(VW - 1)), c64(VW))

                def pick(n):
                    if n == NV:
                        vectors(p, mb, n, True)
                        return
                    with b.if_else(b.icmp_signed("==", live, c64(n))) as (yes, no):
                        with yes:
                            vectors(p, mb, n, True)
                        with no:
                            pick(n + 1)
                pick(1)

    def vectors(p, mb, n, masked):
        """The n vectors of tile p times channel block mb: reduce, then the epilogue. ``masked``:
        the last vector's lanes past L are masked off (its loads, and its store when uncropped).
        Only it: masked loads, even with every lane on, ran the 512 -> 512 3x3 conv on 7x7 (one
        tile of 63 positions) at 4.0 ms against 3.5 with plain loads for the three whole vectors."""
        last = b.icmp_signed("<", b.add(splat(b.add(p, c64((n - 1) * VW)), lt), iota), splat(L, lt)) if masked else None
        for row in accs:
            for a in row[:n]:
                b.store(zero, a)
        wbase = b.mul(mb, b.mul(J, c64(MR)))

        def step(j):
            o = b.add(b.load(b.gep(offs, [j])), p)
            xs = []
            for v in range(n):
                ptr = b.bitcast(b.gep(x, [b.add(o, c64(v * VW))]), vp)
                if masked and v == n - 1:
                    xs.append(b.call(mload, [ptr, ir.Constant(i32, 4), last, zero]))
                else:
                    xs.append(b.load(ptr, align=4))
            wj = b.add(wbase, b.mul(j, c64(MR)))
            for r in range(MR):
                bw = splat(b.load(b.gep(w, [b.add(wj, c64(r))])))
                for v in range(n):
                    b.store(b.call(fma, [xs[v], bw, b.load(accs[r][v])]), accs[r][v])
        loop(c64(0), J, 1, step)
        # epilogue
        masks, dsts = [], []
        for v in range(n):
            q = b.add(p, c64(v * VW))
            if crop:
                mv = b.load(b.bitcast(b.gep(maskp, [q]), it.as_pointer()), align=4)
                masks.append(b.icmp_signed("!=", mv, ir.Constant(it, [0] * VW)))
                dsts.append(b.load(b.gep(dstp, [b.udiv(q, c64(VW))])))
            else:  # (None: a whole vector, plain loads and stores)
                masks.append(last if masked and v == n - 1 else None)
                dsts.append(q)
        for r in range(MR):
            m = b.add(b.mul(mb, c64(MR)), c64(r))
            with b.if_then(b.icmp_signed("<", m, M)):
                row = b.mul(m, ldy)
                bv = splat(b.load(b.gep(bp, [m]))) if bias else None
                for v in range(n):
                    val = b.load(accs[r][v])
                    if bias:
                        val = b.fadd(val, bv)
                    at = b.add(row, dsts[v])
                    if res:
                        if crop:
                            rv = b.call(eload, [b.gep(rp, [at]), masks[v], zero])
                        elif masks[v] is None:
                            rv = b.load(b.bitcast(b.gep(rp, [at]), vp), align=4)
                        else:
                            rv = b.call(mload, [b.bitcast(b.gep(rp, [at]), vp), ir.Constant(i32, 4), masks[v], zero])
                        val = b.fadd(val, rv)
                    if act == 1:  # Relu (NaN stays NaN, as np.maximum)
                        val = b.select(b.fcmp_ordered("<", val, zero), zero, val)
                    elif act == 2:  # Clip(a0, a1)
                        val = b.select(b.fcmp_ordered("<", val, A0), A0, val)
                        val = b.select(b.fcmp_ordered(">", val, A1), A1, val)
                    elif act == 3:  # LeakyRelu(alpha = a0)
                        val = b.select(b.fcmp_ordered(">=", val, zero), val, b.fmul(val, A0))
                    if crop:
                        b.call(cstore, [val, b.gep(y, [at]), masks[v]])
                    elif masks[v] is None:
                        b.store(val, b.bitcast(b.gep(y, [at]), vp), align=4)
                    else:
                        b.call(mstore, [val, b.bitcast(b.gep(y, [at]), vp), ir.Constant(i32, 4), masks[v]])

    def group(gi):
        nonlocal x, w, y, rp, bp
        yoff = b.add(yo, b.mul(gi, yg))
        x, w = b.gep(x0, [b.add(xo, b.mul(gi, xg))]), b.gep(w0, [b.add(wo, b.mul(gi, wg))])
        y, rp, bp = b.gep(y0, [yoff]), b.gep(r0, [yoff]), b.gep(b0, [b.add(bo, b.mul(gi, bg))])
        loop(p0, p1, CL, chunk)

    loop(c64(0), ng, 1, group)
    b.ret_void()
    return str(mod)


#: the integer parameters of one pack-copy call (``_build_copy_ir``), in the order of its row
COPY_PRM = ("c0", "c1", "nseg", "xc", "qc", "xr", "qr", "segs", "sw")


def _build_copy_ir(SW: int, VW: int) -> str:
    """The IR module of ``copy``, the interior copy of ``jit.pack`` for channels [c0, c1):

    void copy(i64 *row, float *x, float *q, float *, float *, float *, float, float)

    (the unit signature of ``native.SpinPool``). ``row`` holds ``COPY_PRM``: per channel, x moves
    on by xc and q by qc; each of the nseg segments at ``segs`` (i64 quadruples: offset in q, rows,
    columns, offset in x) copies ``rows`` rows (x row pitch xr, q row pitch qr) of ``columns``
    elements, element j of a row reading x at j * SW (SW = 0: at j * sw, from the row). SW 1 and 2
    copy whole vectors of VW floats (SW 2: two loads and one permute per vector of output), where
    numpy's strided copy moves one element at a time."""
    import llvmlite.ir as ir

    f32, i64, i32 = ir.FloatType(), ir.IntType(64), ir.IntType(32)
    fp, lp = f32.as_pointer(), i64.as_pointer()
    vt, it, lt = ir.VectorType(f32, VW), ir.VectorType(i32, VW), ir.VectorType(i64, VW)
    vp, mt = vt.as_pointer(), ir.VectorType(ir.IntType(1), VW)
    mod = ir.Module(name="hetero_pack")
    mload = ir.Function(mod, ir.FunctionType(vt, [vp, i32, mt, vt]), name=f"llvm.masked.load.v{VW}f32.p0")
    mstore = ir.Function(mod, ir.FunctionType(ir.VoidType(), [vt, vp, i32, mt]), name=f"llvm.masked.store.v{VW}f32.p0")
    zero = ir.Constant(vt, [0.0] * VW)
    iota = ir.Constant(lt, list(range(VW)))
    fn = ir.Function(mod, ir.FunctionType(ir.VoidType(), [lp, fp, fp, fp, fp, fp, f32, f32]), name="copy")
    row, x0, q0 = fn.args[:3]
    x0.add_attribute("noalias")
    q0.add_attribute("noalias")
    entry = fn.append_basic_block("entry")
    b = ir.IRBuilder(entry)
    c = lambda v: ir.Constant(i64, v)  # noqa: E731
    c0, c1, nseg, xc, qc, xr, qr, sa, swr = (b.load(b.gep(row, [c(i)])) for i in range(len(COPY_PRM)))
    segs = b.inttoptr(sa, lp)
    sw = c(SW) if SW else swr

    def splat(n):
        return native.ir_splat(b, n, lt)

    def loop(lo, hi, body):
        native.ir_loop(b, lo, hi, body)

    def channel(ch):
        def segment(k):
            qo, rows, cols, xo = (b.load(b.gep(segs, [b.add(b.mul(k, c(4)), c(i))])) for i in range(4))
            qb = b.gep(q0, [b.add(b.mul(ch, qc), qo)])
            xb = b.gep(x0, [b.add(b.mul(ch, xc), xo)])

            def line(r):
                qp, xp = b.gep(qb, [b.mul(r, qr)]), b.gep(xb, [b.mul(r, xr)])
                if SW:  # whole vectors, leaving at least one element (SW 2 reads 2 * VW - 1 ahead)
                    nv = b.udiv(b.sub(cols, c(1)), c(VW)) if SW == 2 else b.udiv(cols, c(VW))

                    def vec(v):
                        at = b.mul(v, c(VW))
                        lo = b.load(b.bitcast(b.gep(xp, [b.mul(at, c(SW))]), vp), align=4)
                        if SW == 2:
                            hi = b.load(b.bitcast(b.gep(xp, [b.add(b.mul(at, c(2)), c(VW))]), vp), align=4)
                            lo = b.shuffle_vector(lo, hi, ir.Constant(it, list(range(0, 2 * VW, 2))))
                        b.store(lo, b.bitcast(b.gep(qp, [at]), vp), align=4)
                    loop(c(0), nv, vec)
                    # the tail, 1..VW elements (SW 1: 0..VW-1): masked loads and store
                    at = b.mul(nv, c(VW))
                    rem = b.sub(cols, at)
                    lanes = lambda n: b.icmp_signed("<", iota, splat(n))  # noqa: E731
                    xa = b.bitcast(b.gep(xp, [b.mul(at, c(SW))]), vp)
                    v = b.call(mload, [xa, ir.Constant(i32, 4), lanes(b.sub(b.mul(rem, c(SW)), c(SW - 1))), zero])
                    if SW == 2:
                        hi = b.call(mload, [b.bitcast(b.gep(xp, [b.add(b.mul(at, c(2)), c(VW))]), vp), ir.Constant(i32, 4),
                                            lanes(b.sub(b.mul(rem, c(2)), c(VW + 1))), zero])
                        v = b.shuffle_vector(v, hi, ir.Constant(it, list(range(0, 2 * VW, 2))))
                    b.call(mstore, [v, b.bitcast(b.gep(qp, [at]), vp), ir.Constant(i32, 4), lanes(rem)])
                else:
                    loop(c(0), cols, lambda j: b.store(b.load(b.gep(xp, [b.mul(j, sw)])), b.gep(qp, [j])))
            loop(c(0), rows, line)
        loop(c(0), nseg, segment)

    loop(c0, c1, channel)
    b.ret_void()
    # "no-builtins": LLVM would otherwise turn each short row into a call to memcpy (3808 calls
    # for 136 channels of 28 rows: 90 us, against 15 us of vector moves)
    return str(mod).replace(')\n{', ') #0\n{', 1) + '\nattributes #0 = { "no-builtins" }\n'



class _Engine:
    """The compiled variants for the host (``native.machine()``'s target machine keeps their code)."""

    def __init__(self):
        self.machine = native.machine()
        if self.machine is None:
            raise RuntimeError(native._state.get("why", "no LLVM target machine"))
        self.VW, self.NV, self.MR = _shape_for(self.machine.features)
        self.TILE = self.VW * self.NV
        self.fns: dict = {}

    def get(self, act: int, bias: bool, res: bool, crop: bool, MR: int):
        """(ctypes function, its address) of one conv variant (MR output channels per block, at most
        ``self.MR``), compiled on first use."""
        return self.variant(("conv", act, bias, res, crop, MR),
                             lambda: _build_ir(self.VW, self.NV, MR, act, bias, res, crop), "conv")

    def copy(self, SW: int):
        """(ctypes function, its address) of the pack copy for column stride SW (0: any)."""
        return self.variant(("copy", SW), lambda: _build_copy_ir(SW, self.VW), "copy")

    def variant(self, key, build, name):
        f = self.fns.get(key)
        if f is None:
            with _lock:
                f = self.fns.get(key)
                if f is None:
                    at, = self.machine.compile(build(), name)
                    P, F = ctypes.c_void_p, ctypes.c_float
                    f = self.fns[key] = ctypes.CFUNCTYPE(None, *([P] * 6 + [F, F]))(at), at
        return f


_ENV = getattr(os.environ, "_data", None)  # the raw (encoded) environment behind os.environ
_FLAG_KEYS = tuple(os.environ.encodekey(k) for k in ("HETERO_JIT", "HETERO_DIRECT")) if _ENV is not None else ()


def _flags() -> tuple:
    """The raw values of HETERO_JIT and HETERO_DIRECT: read from os.environ's own dict (two
    ``os.environ.get`` calls cost 2-4 us a conv here, re-encoding each key)."""
    if _ENV is None:
        return (os.environ.get("HETERO_JIT"), os.environ.get("HETERO_DIRECT"))
    return (_ENV.get(_FLAG_KEYS[0]), _ENV.get(_FLAG_KEYS[1]))


def engine() -> _Engine | None:
    """The compiler, or None (llvmlite missing or broken, HETERO_JIT=0 or HETERO_DIRECT=0): the
    callers use BLAS. Called once per conv, so the environment is read raw and its parse memoised."""
    flags = _flags()
    e = _state.get(flags, _state)
    if e is not _state:
        return e
    with _lock:
        off = {"0", "false", "off", "no"}
        if any((os.environ.decodevalue(f) if isinstance(f, bytes) else (f or "")).strip().lower() in off
               for f in flags):
            _state[flags] = None
            return None
        if "engine" not in _state:
            try:
                eng = _Engine()
                eng.get(1, True, False, True, eng.MR)  # compile one variant now: fail here, not mid-conv
                _state["engine"] = eng
            except Exception as ex:  # noqa: BLE001 - no llvmlite, or it cannot target this CPU
                _state["engine"] = None
                _state["why"] = f"{type(ex).__name__}: {ex}"
        _state[flags] = _state["engine"]
    return _state[flags]


# ---- the conv ------------------------------------------------------------------------------------------

def _packed(w, bias, g, MR):
    """(wp, its address, bias, its address): w (M, Cg, kh, kw) packed to (g, blocks, Cg*kh*kw, MR)
    float32, block b holding output channels b*MR .. b*MR + MR - 1 of its group, (channel, tap)
    major, zero rows past the group's end; cached per (weight, bias) pair (``nn.per_weight``)."""
    def make():
        M = w.shape[0]
        Mg, J = M // g, int(np.prod(w.shape[1:]))
        nb = -(-Mg // MR)
        wp = np.zeros((g, nb * MR, J), np.float32)
        wp[:, :Mg] = w.reshape(g, Mg, J)
        wp = np.ascontiguousarray(wp.reshape(g, nb, MR, J).transpose(0, 1, 3, 2))
        b1 = np.zeros(1, np.float32) if bias is None else np.ascontiguousarray(bias, dtype=np.float32).reshape(-1)
        return wp, wp.ctypes.data, b1, b1.ctypes.data
    return per_weight(("direct", MR, g), (w,) if bias is None else (w, bias), make)


class _Plan:
    """Everything of a conv that depends only on its geometry: the (channel, tap) offset table, the
    crop tables, and one ``prm`` row per unit of work, built once per thread and geometry."""

    __slots__ = ("pack", "S", "MR", "rows", "tables", "crop", "xs", "strides", "T", "Wq", "copy", "buf",
                 "buf_at", "fns")

    def __init__(self, eng, xs, ws, g, strides, dilations, pb, ys, T):
        N, C, H, W = xs
        M, Cg, kh, kw = ws
        self.xs, self.strides, self.T, self.copy, self.buf, self.buf_at = xs, tuple(strides), T, None, None, 0
        self.fns: dict = {}  # (act, bias, residual) -> the kernel variant (eng.get)
        OH, OW = ys[2:]
        Mg = M // g
        VW, TILE = eng.VW, eng.TILE
        self.MR = MR = min(eng.MR, Mg)  # (depthwise: one channel per block, not 1 of 6 rows used)
        self.pack = not ((kh, kw) == (1, 1) and tuple(strides) == (1, 1) and not any(pb) and (OH, OW) == (H, W))
        if self.pack:
            offs, Hq, Wq = jit.plan((OH, OW), (kh, kw), strides, dilations)
            S = strides[0] * strides[1] * Hq * Wq
        else:
            offs, Wq, S = np.zeros(1, np.int64), W, H * W
        self.S, self.Wq = S, Wq
        J = Cg * offs.size
        L = OH * Wq
        Lt = -(-L // TILE) * TILE
        table = (np.arange(Cg, dtype=np.int64)[:, None] * S + offs[None, :]).reshape(-1)
        if Wq != OW:
            q = np.arange(Lt)
            valid = (q < L) & (q % Wq < OW)
            mask = valid.astype(np.int32)
            dst = np.concatenate([[0], np.cumsum(valid)])[:Lt:VW].astype(np.int64)
        else:
            mask, dst = np.zeros(1, np.int32), np.zeros(1, np.int64)
        self.tables = (table, mask, dst)  # kept alive: prm holds their addresses
        nb = -(-Mg // MR)
        ntiles = Lt // TILE
        # units (n, group range, tile range, block range): about two per thread, claimed by
        # whichever thread is free. Many groups: cut the groups of each image (a unit runs its
        # groups one after another). Few: cut each group's tiles when there are enough of them
        # (each unit then streams the weights once), else its channel blocks
        # chunks of CL wide positions whose input (every channel of the group, every phase read) fits
        # CHUNK_BYTES: each channel block runs over a whole chunk before the next block starts
        nph = min(strides[0] * strides[1], kh * kw) if self.pack else 1
        CL = max(1, CHUNK_BYTES // (4 * Cg * nph * TILE)) * TILE
        units = 2 * T if T > 1 else 1
        gparts = min(g, max(1, units // N))
        parts = max(1, units // (N * g))
        rows = []
        ldy = OH * OW
        for n in range(N):
            for g0, g1 in parallel.split(g, gparts):
                if parts == 1:
                    cuts = [(0, ntiles, 0, nb)]
                elif ntiles >= 2 * parts or ntiles >= nb:
                    cuts = [(t0, t1, 0, nb) for t0, t1 in parallel.split(ntiles, parts)]
                else:
                    cuts = [(0, ntiles, b0, b1) for b0, b1 in parallel.split(nb, parts)]
                for t0, t1, b0, b1 in cuts:
                    rows.append([(n * C + g0 * Cg) * S, g0 * nb * J * MR, (n * M + g0 * Mg) * ldy, g0 * Mg,
                                 J, ldy, b0, b1, t0 * TILE, t1 * TILE, L, Mg,
                                 table.ctypes.data, mask.ctypes.data, dst.ctypes.data,
                                 g1 - g0, Cg * S, nb * J * MR, Mg * ldy, Mg, CL])
        self.rows = parallel.UnitRows(rows)
        self.crop = Wq != OW


_tls = threading.local()

#: a thread's plans are dropped when their wide input buffers hold more than this many bytes
MAX_PLAN_BYTES = 256 << 20
#: a chunk of wide positions reads at most this many bytes of input (``_Plan``)
CHUNK_BYTES = 512 << 10
#: below this many multiply-adds a direct conv runs on the calling thread only
MIN_PARALLEL_MACS = 500_000
#: the pack copy of an input smaller than this (bytes) and of fewer rows runs on the calling
#: thread only
MIN_PARALLEL_COPY = 512 << 10
MIN_PARALLEL_COPY_ROWS = 2048


def _plan(eng, x, w, g, strides, dilations, pb, y, T) -> _Plan:
    plans = getattr(_tls, "plans", None)
    if plans is None:
        plans = _tls.plans = {}
    key = (x.shape, w.shape, g, tuple(strides), tuple(dilations), tuple(pb), y.shape, T)
    p = plans.get(key)
    if p is None:
        if len(plans) > 512 or sum(q.buf.nbytes for q in plans.values() if q.buf is not None) > MAX_PLAN_BYTES:
            plans.clear()
        p = plans[key] = _Plan(eng, x.shape, w.shape, g, strides, dilations, pb, y.shape, T)
    return p


def _copy(eng, plan, x, flat, segs) -> None:
    """``jit.pack``'s interior copy of x into ``flat`` through the compiled copy (``_build_copy_ir``),
    its channels cut across the threads like the conv's units. The segments are the same on every
    call of a plan (they follow from its geometry): their table and rows are built on the first,
    later calls pass None."""
    if plan.copy is None:
        N, C, H, W = plan.xs
        sh, sw = plan.strides
        table = np.array(segs, np.int64).reshape(-1)
        # (a small input is copied on one thread: 16 x 55x55, 194 KB in 880 rows, took 13 us alone
        # and 15 us split, while 64 x 56x56, 800 KB, went 51 -> 30 us; short rows cost ~15 ns each:
        # 136 x 28x28, 426 KB in 3808 rows, took 65 us alone, the depthwise conv 0.157 -> 0.107 ms)
        big = x.nbytes >= MIN_PARALLEL_COPY or N * C * H >= MIN_PARALLEL_COPY_ROWS
        parts = 2 * plan.T if plan.T > 1 and big else 1
        rows = parallel.UnitRows([[c0, c1, len(segs), H * W, plan.S, W * sh, plan.Wq, table.ctypes.data, sw]
                                  for c0, c1 in parallel.split(N * C, parts)])
        plan.copy = (rows, table, eng.copy(sw if sw in (1, 2) else 0))  # (the rows hold table's address)
    rows, _, (fn, fn_at) = plan.copy
    rows.run(fn, fn_at, (native.address(x), plan.buf_at if flat is plan.buf else native.address(flat), 0, 0, 0))


def conv2d(x, w, y, g, strides, dilations, pb, bias, residual, act, a0, a1) -> bool:
    """y (N, M, OH, OW) = conv(x (N, C, H, W), w (M, C/g, kh, kw)) + bias + residual, then the
    activation code ``act`` (``jit.ACT_CODES``; a0, a1 its parameters), all float32 and
    C-contiguous (pads pb at the start; the ends follow from y's shape). False (nothing written)
    when the direct kernel is unavailable."""
    eng = engine()
    if eng is None or min(pb) < 0:
        return False
    work = y.size * (w.size // w.shape[0])
    T = parallel.threads() if work >= MIN_PARALLEL_MACS else 1
    plan = _plan(eng, x, w, g, strides, dilations, pb, y, T)
    if plan.pack:
        # the plan's own wide buffer: its padding is written once, each call copies the interior
        if plan.buf is None:
            plan.buf = jit.pack(x, w.shape[2:], strides, dilations, pb, y.shape[2:], 0.0,
                                copy=lambda flat, segs: _copy(eng, plan, x, flat, segs), own=True)[0]
            plan.buf_at = native.address(plan.buf)
        else:
            _copy(eng, plan, x, plan.buf, None)
        x = plan.buf
        xa = plan.buf_at
    else:
        xa = native.address(x)
    packed = _packed(w, bias, g, plan.MR)  # (held until the calls return: they read its arrays)
    wa, ba = packed[1], packed[3]
    key = (act, bias is not None, residual is not None)
    f = plan.fns.get(key)
    if f is None:
        f = plan.fns[key] = eng.get(act, bias is not None, residual is not None, plan.crop, plan.MR)
    fn, fn_at = f
    ya = native.address(y)
    ra = ya if residual is None else native.address(residual)
    # x (maybe the pack workspace), y and residual outlive the calls: this frame holds them
    plan.rows.run(fn, fn_at, (xa, wa, ya, ba, ra), a0, a1)
    return True
