"""Broadcasting elementwise ops: one table row per op, one OpenCL kernel (cl/elementwise.cl) for all.

A row gives the op's arity, its OpenCL C expression over compute-type values ``x, y, z`` (and the
kernel arguments ``p0, p1`` filled from attributes), the element kinds it accepts ("f" float32/16,
"i" integers, "u" unsigned, "b" bool) and whether it yields bool; an expression may have variants
picked by an attribute (``variant``). Rows of one *family* (unary, rarer unary, binary, unary->bool,
binary->bool, cast, where) are compiled together: the program for a (family, element types, broadcast pattern)
holds one loop per expression of the family behind a switch on the op code (``-DEW_OPS=EW(0,(x+y))
EW(1,(x-y))...``), so a model -- or the test suite -- builds a handful of elementwise programs
instead of one per op.

Broadcasting: the output shape and each input's (numpy-broadcast) strides are collapsed -- adjacent
axes merge when every operand is contiguous or broadcast across both -- to at most 5 outer axes plus
one inner axis on which every input has stride 1 or 0 (traced: [2,3,4,5] + [1,3,1,1] -> outer (2, 3)
inner 20, strides a (60, 20 | 1), b (0, 1 | 0)).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..plan import CL_TYPES, FLOATS, BufRef, NodeBuilder, Unsupported, chunks_for, planner, prod

Expr = str | Callable[[NodeBuilder], str]


@dataclass(frozen=True)
class EW:
    op: str
    arity: int            # 1, 2, 3, or -1 (variadic, folded pairwise)
    expr: dict            # kind ("f", "i", "u", "b") -> expression, or {variant: expression}
    bool_out: bool = False
    params: Callable[[NodeBuilder], tuple[float, float]] | None = None
    variant: Callable[[NodeBuilder], str] | None = None  # picks the expression variant from attributes


def _p(*names_defaults):
    def get(nb: NodeBuilder):
        vals = [float(nb.attr(n, d)) for n, d in names_defaults]
        return tuple(vals + [0.0] * (2 - len(vals)))
    return get


_GELU = {"none": "0.5f*x*(1.0f+erf(x*0.7071067811865476f))",
         "tanh": "0.5f*x*(1.0f+tanh(0.7978845608028654f*(x+0.044715f*x*x*x)))"}
# C's % truncates (ONNX fmod=1); fmod=0 takes the divisor's sign (Python). x % 0 -> 0, never a trap.
_MOD_INT = {"fmod1": "(y==0?0:x%y)", "fmod0": "(y==0?0:((x%y!=0&&((x<0)!=(y<0)))?x%y+y:x%y))"}
# shifting by the type width or more is undefined in C; numpy gives 0
_SHIFT = {"LEFT": "(y>=sizeof(x)*8?0:(x<<y))", "RIGHT": "(y>=sizeof(x)*8?0:(x>>y))"}


def _gelu_variant(nb: NodeBuilder) -> str:
    v = nb.attr("approximate", "none")
    if v not in _GELU:
        raise Unsupported(f"Gelu: approximate {v!r} not supported")
    return v


def _mod_variant(nb: NodeBuilder) -> str:
    return "fmod1" if int(nb.attr("fmod", 0)) else "fmod0"


def _shift_variant(nb: NodeBuilder) -> str:
    d = nb.attr("direction")
    d = d.decode() if isinstance(d, bytes) else d
    if d not in _SHIFT:
        raise Unsupported(f"BitShift: direction {d!r}")
    return d


F = "f"
_MAXF = "((x>y||isnan(x))?x:y)"
_MINF = "((x<y||isnan(x))?x:y)"

TABLE: dict[str, EW] = {r.op: r for r in [
    # binary arithmetic
    EW("Add", 2, {"f": "x+y", "i": "x+y"}),
    EW("Sub", 2, {"f": "x-y", "i": "x-y"}),
    EW("Mul", 2, {"f": "x*y", "i": "x*y"}),
    EW("Div", 2, {"f": "x/y"}),
    EW("Pow", 2, {"f": "pow(x,y)"}),
    EW("PRelu", 2, {"f": "(x<0.0f?x*y:x)"}),
    EW("Mod", 2, {"f": "fmod(x,y)", "i": _MOD_INT}, variant=_mod_variant),
    EW("BitShift", 2, {"u": _SHIFT}, variant=_shift_variant),
    # variadic
    EW("Sum", -1, {"f": "x+y", "i": "x+y"}),
    EW("Mean", -1, {"f": "x+y"}),
    EW("Max", -1, {"f": _MAXF, "i": "(x>y?x:y)"}),
    EW("Min", -1, {"f": _MINF, "i": "(x<y?x:y)"}),
    # comparisons and logic (bool results)
    EW("Equal", 2, {"f": "x==y", "i": "x==y", "b": "x==y"}, bool_out=True),
    EW("Less", 2, {"f": "x<y", "i": "x<y"}, bool_out=True),
    EW("Greater", 2, {"f": "x>y", "i": "x>y"}, bool_out=True),
    EW("LessOrEqual", 2, {"f": "x<=y", "i": "x<=y"}, bool_out=True),
    EW("GreaterOrEqual", 2, {"f": "x>=y", "i": "x>=y"}, bool_out=True),
    EW("And", 2, {"b": "(x&&y)"}, bool_out=True),
    EW("Or", 2, {"b": "(x||y)"}, bool_out=True),
    EW("Xor", 2, {"b": "((x!=0)!=(y!=0))"}, bool_out=True),
    EW("Not", 1, {"b": "(x==0)"}, bool_out=True),
    EW("IsNaN", 1, {"f": "isnan(x)"}, bool_out=True),
    EW("IsInf", 1, {"f": "(isinf(x)&&((x>0&&p0!=0)||(x<0&&p1!=0)))"}, bool_out=True,
       params=_p(("detect_positive", 1), ("detect_negative", 1))),
    # unary math
    EW("Relu", 1, {"f": "(x<0.0f?0.0f:x)", "i": "(x<0?0:x)"}),
    EW("Neg", 1, {"f": "-x", "i": "-x"}),
    EW("Abs", 1, {"f": "fabs(x)", "i": "(x<0?-x:x)"}),
    EW("Sign", 1, {"f": "(x>0.0f?1.0f:(x<0.0f?-1.0f:x))", "i": "(x>0?1:(x<0?-1:0))"}),
    EW("Exp", 1, {F: "exp(x)"}),
    EW("Log", 1, {F: "log(x)"}),
    EW("Sqrt", 1, {F: "sqrt(x)"}),
    EW("Reciprocal", 1, {F: "1.0f/x"}),
    EW("Floor", 1, {F: "floor(x)"}),
    EW("Ceil", 1, {F: "ceil(x)"}),
    EW("Round", 1, {F: "rint(x)"}),
    EW("Erf", 1, {F: "erf(x)"}),
    EW("Sin", 1, {F: "sin(x)"}),
    EW("Cos", 1, {F: "cos(x)"}),
    EW("Tan", 1, {F: "tan(x)"}),
    EW("Asin", 1, {F: "asin(x)"}),
    EW("Acos", 1, {F: "acos(x)"}),
    EW("Atan", 1, {F: "atan(x)"}),
    EW("Sinh", 1, {F: "sinh(x)"}),
    EW("Cosh", 1, {F: "cosh(x)"}),
    EW("Asinh", 1, {F: "asinh(x)"}),
    EW("Acosh", 1, {F: "acosh(x)"}),
    EW("Atanh", 1, {F: "atanh(x)"}),
    EW("Sigmoid", 1, {F: "1.0f/(1.0f+exp(-x))"}),
    EW("Tanh", 1, {F: "tanh(x)"}),
    EW("Softplus", 1, {F: "log(exp(x)+1.0f)"}),
    EW("Softsign", 1, {F: "x/(1.0f+fabs(x))"}),
    EW("Mish", 1, {F: "x*tanh(log1p(exp(x)))"}),
    EW("Gelu", 1, {F: _GELU}, variant=_gelu_variant),
    EW("Elu", 1, {F: "(x<0.0f?p0*(exp(x)-1.0f):x)"}, params=_p(("alpha", 1.0))),
    EW("Selu", 1, {F: "(x<=0.0f?p1*(p0*exp(x)-p0):p1*x)"},
       params=_p(("alpha", 1.67326319217681884765625), ("gamma", 1.05070102214813232421875))),
    EW("Celu", 1, {F: "(fmax(0.0f,x)+fmin(0.0f,p0*(exp(x/p0)-1.0f)))"}, params=_p(("alpha", 1.0))),
    EW("LeakyRelu", 1, {F: "(x<0.0f?p0*x:x)"}, params=_p(("alpha", 0.01))),
    EW("ThresholdedRelu", 1, {F: "(x>p0?x:0.0f)"}, params=_p(("alpha", 1.0))),
    EW("HardSigmoid", 1, {F: "fmax(0.0f,fmin(1.0f,p0*x+p1))"}, params=_p(("alpha", 0.2), ("beta", 0.5))),
    EW("HardSwish", 1, {F: "x*fmax(0.0f,fmin(1.0f,x*(1.0f/6.0f)+0.5f))"}),
]}

# expressions the planners use besides the table rows: (family, name) -> {kind: expression}
_EXTRA = {
    ("binary", "MeanLast"): {"f": "(x+y)*p0"},
    ("unary", "Clip"): {"f": "(x<p0?p0:(x>p1?p1:x))"},
    ("cast", "Copy"): {"f": "x", "i": "x", "u": "x", "b": "x"},
    ("cast", "ToBool"): {"f": "(x!=0)", "i": "(x!=0)", "u": "(x!=0)", "b": "(x!=0)"},
    ("where", "Where"): {"f": "(x!=0?y:z)", "i": "(x!=0?y:z)", "u": "(x!=0?y:z)"},
}


# HALF_MATH (a device with cl_khr_fp16, half storage): entries computed in half. They are exact in half
# or round once, as the store would; every other float entry (exp, log, erf, ... whose intermediates can
# leave half's range, e.g. Softplus's exp(12)) computes in float (EWF in cl/elementwise.cl).
HALF_MATH_ENTRIES = {"Add", "Sub", "Mul", "Div", "PRelu", "Sum", "Mean", "MeanLast", "Max", "Min", "Equal", "Less",
                     "Greater", "LessOrEqual", "GreaterOrEqual", "IsNaN", "IsInf", "Relu", "Neg", "Abs", "Sign",
                     "Floor", "Ceil", "Round", "LeakyRelu", "ThresholdedRelu", "Clip", "Where"}
_FLOAT_LITERAL = re.compile(r"(?<![\w.])(\d+\.\d*f)")


def _half_expr(expr: str) -> str:
    """An entry's expression with its float literals as half constants (x < 0.0f would compare in float)."""
    return _FLOAT_LITERAL.sub(r"((half)\1)", expr)


# unary ops kept out of the common unary program (smaller to build for the usual models)
_RARE = {"Sin", "Cos", "Tan", "Asin", "Acos", "Atan", "Sinh", "Cosh", "Asinh", "Acosh", "Atanh", "Selu", "Celu",
         "Mish", "Softsign", "ThresholdedRelu", "Erf"}


def family_of(row: EW) -> str:
    if row.arity == 1:
        return "unary_bool" if row.bool_out else ("unary_rare" if row.op in _RARE else "unary")
    return "binary_bool" if row.bool_out else "binary"


def _kind_exprs(exprs: dict, kind: str) -> dict | str | None:
    """A row's expression(s) for a kind; unsigned integers fall back to the integer expressions."""
    if kind in exprs:
        return exprs[kind]
    return exprs.get("i") if kind == "u" else None


def _build_entries() -> dict[tuple[str, str], list[tuple[str, str]]]:
    """(family, kind) -> [(entry name, expression)]: the op codes are the list positions."""
    out: dict[tuple[str, str], list[tuple[str, str]]] = {}
    rows = [(family_of(r), r.op, r.expr) for r in TABLE.values()] + [(f, n, e) for (f, n), e in _EXTRA.items()]
    for family, name, exprs in rows:
        for kind in ("f", "i", "u", "b"):
            e = _kind_exprs(exprs, kind)
            if e is None:
                continue
            items = sorted(e.items()) if isinstance(e, dict) else [("", e)]
            for variant, expr in items:
                out.setdefault((family, kind), []).append((f"{name}:{variant}" if variant else name, expr))
    return out


ENTRIES = _build_entries()


INT_CT = {np.dtype(np.int8): "int", np.dtype(np.int16): "int", np.dtype(np.int32): "int",
          np.dtype(np.int64): "long", np.dtype(np.uint8): "uint", np.dtype(np.uint16): "uint",
          np.dtype(np.uint32): "uint", np.dtype(np.uint64): "ulong"}


def kind_of(dtype: np.dtype) -> str:
    """f (float32/16), b (bool), i (signed ints), u (unsigned ints: also accepted where "i" is)."""
    dtype = np.dtype(dtype)
    if dtype in FLOATS:
        return "f"
    if dtype == np.bool_:
        return "b"
    if dtype in INT_CT:
        return "u" if dtype.kind == "u" else "i"
    return "?"


def compute_type(dtype: np.dtype) -> str:
    k = kind_of(dtype)
    return {"f": "float", "b": "uchar"}.get(k) or INT_CT[np.dtype(dtype)]


# ---- broadcasting layout -----------------------------------------------------------------------

def broadcast_layout(out_shape, in_shapes) -> tuple[list[int], list[list[int]]]:
    """(dims, strides per input) after dropping size-1 output axes and merging compatible ones."""
    rank = len(out_shape)
    strides_all = []
    for s in in_shapes:
        s = (1,) * (rank - len(s)) + tuple(s)
        st, acc = [0] * rank, 1
        for d in range(rank - 1, -1, -1):
            st[d] = 0 if (s[d] == 1 and out_shape[d] != 1) else acc
            acc *= s[d]
        strides_all.append(st)
    keep = [d for d in range(rank) if out_shape[d] != 1]
    dims = [int(out_shape[d]) for d in keep]
    strides = [[st[d] for d in keep] for st in strides_all]
    if not dims:
        return [1], [[0] for _ in in_shapes]
    i = len(dims) - 2
    while i >= 0:
        if all(st[i] == st[i + 1] * dims[i + 1] for st in strides):
            dims[i] = dims[i] * dims[i + 1]
            del dims[i + 1]
            for st in strides:
                st[i] = st[i + 1]
                del st[i + 1]
        i -= 1
    return dims, strides


def ew_launch(nb: NodeBuilder, family: str, kind: str, name: str, ins: list[tuple[int, tuple, np.dtype]],
              out: tuple[int, tuple, np.dtype], ct: str, p0: float = 0.0, p1: float = 0.0) -> None:
    """One elementwise launch of entry ``name`` of ``family`` for element ``kind``: ``ins`` are (buf,
    shape, device dtype), ``out`` likewise."""
    entries = ENTRIES[(family, kind)]
    code = next(i for i, (n, _) in enumerate(entries) if n == name)
    obuf, oshape, odt = out
    # half arithmetic: a float program whose float operands (Where's: its last two) are all half
    # storage, on a device with half_math; casts keep their one float -> half rounding
    floats = ins[1:] if family == "where" else ins
    half_math = (nb.caps.half_math and kind == "f" and ct == "float" and family != "cast"
                 and all(np.dtype(dt) == np.float16 for _, _, dt in floats)
                 and (np.dtype(odt) == np.float16 or family.endswith("_bool")))
    if half_math:
        ct = "half"
        ops = "".join(f"EW({i},({_half_expr(e)}))" if n.split(":")[0] in HALF_MATH_ENTRIES else f"EWF({i},({e}))"
                      for i, (n, e) in enumerate((n, e.replace(' ', '')) for n, e in entries))
    else:
        ops = "".join(f"EW({i},({e.replace(' ', '')}))" for i, (_, e) in enumerate(entries))
    dims, strides = broadcast_layout(oshape, [s for _, s, _ in ins])
    if len(dims) > 6:
        raise Unsupported(f"{nb.op}: broadcast over more than 6 independent axes")
    inner = dims[-1]
    outer = [1] * (6 - len(dims)) + dims[:-1]
    defines = nb.base_defines() + [("EW_OPS", ops), ("CT", ct), ("ARITY", len(ins))] + (["HALF_MATH"] if half_math else [])
    args = [BufRef(obuf), 0]
    role_strides = []
    for k, role in enumerate("ABC"):
        if k < len(ins):
            b, _, dt = ins[k]
            st = strides[k]
            defines.append((f"{role}_IS", st[-1]))  # 0 or 1 (see the module doc)
            defines.append((f"T{role}", CL_TYPES[np.dtype(dt)]))
            if np.dtype(dt) == np.float16 and not half_math:
                defines.append(f"{role}_HALF")
            role_strides.append([0] * (6 - len(st)) + st[:-1])  # 5 outer strides
        else:  # unused operand: any buffer, never read
            b = ins[0][0]
            defines.append((f"T{role}", "float"))
            role_strides.append([0] * 5)
        args += [BufRef(b), 0]
    defines.append(("TO", CL_TYPES[np.dtype(odt)]))
    if np.dtype(odt) == np.float16 and not half_math:
        defines.append("O_HALF")
    rows = prod(outer)
    if nb.caps.is_cpu:
        chunks = max(1, chunks_for(rows * inner, nb.caps) // max(rows, 1))
    else:
        chunks = 1024
    chunks = min(chunks, inner)
    args += [inner] + outer[1:]
    for st in role_strides:
        args += st
    args += [float(p0), float(p1), code]
    nb.launch("elementwise.cl", "ew", defines, (chunks, rows), None, args,
              reads=[b for b, _, _ in ins], writes=[obuf])


def _kinds_check(nb: NodeBuilder, row: EW, dtypes: list[np.dtype]) -> str:
    if len(set(dtypes)) > 1:
        raise Unsupported(f"{nb.op}: mixed element types {sorted(map(str, set(dtypes)))} not supported")
    k = kind_of(dtypes[0])
    if _kind_exprs(row.expr, k) is None:
        raise Unsupported(f"{nb.op}: {dtypes[0]} not supported")
    return k


def _entry(nb: NodeBuilder, row: EW, kind: str) -> str:
    e = _kind_exprs(row.expr, kind)
    if isinstance(e, dict):
        v = row.variant(nb)
        if v not in e:
            raise Unsupported(f"{nb.op}: {v} not supported for {kind!r} elements")
        return f"{row.op}:{v}"
    return row.op


@planner(*TABLE)
def plan_elementwise(nb: NodeBuilder) -> None:
    row = TABLE[nb.op]
    if nb.op == "Mod" and int(nb.attr("fmod", 0)) != 1 and kind_of(nb.dtype(0)) == "f":
        raise Unsupported("Mod: fmod=0 on floats (ONNX requires fmod=1)")
    n = nb.n_in
    idx = [i for i in range(n) if nb.has_input(i)]
    if row.arity > 0 and len(idx) != row.arity:
        raise Unsupported(f"{nb.op}: expected {row.arity} inputs, got {len(idx)}")
    dtypes = [nb.dtype(i) for i in idx]
    k = _kinds_check(nb, row, dtypes)
    name = _entry(nb, row, k)
    family = family_of(row)
    ct = compute_type(dtypes[0])
    p0, p1 = row.params(nb) if row.params else (0.0, 0.0)
    out_dt = nb.dev_dtype(nb.out_dtype(0))
    if row.bool_out and nb.out_dtype(0) != np.bool_:
        raise Unsupported(f"{nb.op}: output type {nb.out_dtype(0)} not supported")
    if not row.bool_out and nb.out_dtype(0) != dtypes[0]:
        raise Unsupported(f"{nb.op}: output type {nb.out_dtype(0)} differs from input {dtypes[0]}")
    oshape = nb.out_shape(0)
    ins = [(nb.buf(i), nb.shape(i), nb.dev_dtype(nb.dtype(i))) for i in idx]
    if row.arity != -1:
        ew_launch(nb, family, k, name, ins, (nb.out_buf(0), oshape, out_dt), ct, p0, p1)
        return
    # variadic: fold pairwise into the output buffer
    if len(ins) == 1:
        if tuple(ins[0][1]) != tuple(oshape):
            raise Unsupported(f"{nb.op}: single input of another shape")
        nb.alias(0, idx[0])
        return
    out = nb.out_buf(0)
    mean = nb.op == "Mean"
    for j in range(1, len(ins)):
        first = ins[0] if j == 1 else (out, oshape, out_dt)
        last = j == len(ins) - 1
        e = "MeanLast" if (mean and last) else name
        ew_launch(nb, family, k, e, [first, ins[j]], (out, oshape, out_dt), ct, 1.0 / len(ins) if mean else 0.0)


@planner("Clip")
def plan_clip(nb: NodeBuilder) -> None:
    dt = nb.dtype(0)
    k = kind_of(dt)
    if k != "f":
        raise Unsupported(f"Clip: {dt} not supported")
    if nb.opset < 11:
        lo, hi = float(nb.attr("min", -np.inf)), float(nb.attr("max", np.inf))
    else:
        lo = float(nb.require_host(1, "min").ravel()[0]) if nb.has_input(1) else -np.inf
        hi = float(nb.require_host(2, "max").ravel()[0]) if nb.has_input(2) else np.inf
    lo32, hi32 = np.float32(lo), np.float32(hi)
    if np.isnan(lo32) or np.isnan(hi32):
        raise Unsupported("Clip: NaN bounds not supported")
    ew_launch(nb, "unary", "f", "Clip", [(nb.buf(0), nb.shape(0), nb.dev_dtype(dt))],
              (nb.out_buf(0), nb.out_shape(0), nb.dev_dtype(nb.out_dtype(0))), "float", float(lo32), float(hi32))


@planner("Where")
def plan_where(nb: NodeBuilder) -> None:
    if nb.dtype(0) != np.bool_:
        raise Unsupported(f"Where: condition {nb.dtype(0)} not supported")
    dts = [nb.dtype(1), nb.dtype(2)]
    if dts[0] != dts[1]:
        raise Unsupported("Where: mixed element types")
    k = kind_of(dts[0])
    if k not in "fiu":
        raise Unsupported(f"Where: {dts[0]} not supported")
    ct = compute_type(dts[0])
    ins = [(nb.buf(i), nb.shape(i), nb.dev_dtype(nb.dtype(i))) for i in range(3)]
    ew_launch(nb, "where", k, "Where", ins, (nb.out_buf(0), nb.out_shape(0), nb.dev_dtype(nb.out_dtype(0))), ct)


_CASTABLE = set(FLOATS) | set(INT_CT) | {np.dtype(np.bool_)}


def convert_launch(nb: NodeBuilder, src: tuple[int, tuple, np.dtype], dst: tuple[int, tuple, np.dtype]) -> None:
    """Copy with element type conversion (Cast, and mixed-precision half <-> float copies)."""
    sdt, ddt = np.dtype(src[2]), np.dtype(dst[2])
    k = kind_of(sdt)
    ct = "float" if k == "f" else compute_type(sdt)
    ew_launch(nb, "cast", k, "ToBool" if ddt == np.bool_ else "Copy", [src], dst, ct)


@planner("Cast", "CastLike")
def plan_cast(nb: NodeBuilder) -> None:
    src, dst = nb.dtype(0), nb.out_dtype(0)
    for d in (src, dst):
        if d not in _CASTABLE:
            raise Unsupported(f"Cast: {d} not supported")
    if nb.dev_dtype(src) == nb.dev_dtype(dst):
        nb.alias(0, 0)
        nb.kind = "alias"
        return
    # a bool output is stored as uchar: ToBool maps nonzero to 1
    out_dt = np.dtype(np.bool_) if dst == np.bool_ else nb.dev_dtype(dst)
    convert_launch(nb, (nb.buf(0), nb.shape(0), nb.dev_dtype(src)), (nb.out_buf(0), nb.out_shape(0), out_dt))
