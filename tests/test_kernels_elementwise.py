"""CPU elementwise, activation and Cast kernels, checked against onnx.reference (or a numpy formula)
through hetero.compile_model on tiny single-node models, plus a few direct kernel calls."""
from __future__ import annotations

import math
import warnings

import ml_dtypes
import numpy as np
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

import hetero
from hetero.devices.cpu.kernels import cast as cast_k
from hetero.devices.cpu.kernels import elementwise as ew

rng = np.random.default_rng(7)


def F(*s, dtype=np.float32):
    return rng.standard_normal(s).astype(dtype)


def _tt(a: np.ndarray) -> int:
    return TensorProto.STRING if a.dtype == object else helper.np_dtype_to_tensor_dtype(a.dtype)


def _model(op, inputs, attrs, opset, outs=None, domain=""):
    names = [f"i{k}" if v is not None else "" for k, v in enumerate(inputs)]
    while names and names[-1] == "":
        names.pop()
    node = helper.make_node(op, names, ["o0"], domain=domain, **attrs)
    gin = [helper.make_tensor_value_info(n, _tt(v), v.shape) for n, v in zip(names, inputs) if n]
    if outs is None:
        gout = [helper.make_tensor_value_info("o0", TensorProto.UNDEFINED, None)]
    else:
        gout = [helper.make_tensor_value_info("o0", _tt(outs), outs.shape)]
    imports = [helper.make_opsetid("", opset)]
    if domain:
        imports.append(helper.make_opsetid(domain, 1))
    return helper.make_model(helper.make_graph([node], "g", gin, gout), opset_imports=imports)


def run_hetero(op, inputs, attrs=None, opset=21, like=None, domain=""):
    feeds = {f"i{k}": v for k, v in enumerate(inputs) if v is not None}
    res = hetero.compile_model(_model(op, inputs, attrs or {}, opset, like, domain), "CPU")(feeds)
    return np.asarray(res[0])


def reference(op, inputs, attrs=None, opset=21, domain=""):
    feeds = {f"i{k}": v for k, v in enumerate(inputs) if v is not None}
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return np.asarray(ReferenceEvaluator(_model(op, inputs, attrs or {}, opset, None, domain))
                          .run(None, feeds)[0])


def check(op, inputs, attrs=None, opset=21, expected=None, rtol=1e-5, atol=1e-6):
    exp = np.asarray(expected) if expected is not None else reference(op, inputs, attrs, opset)
    got = run_hetero(op, inputs, attrs, opset, like=exp)
    assert got.shape == exp.shape
    if exp.dtype == object or exp.dtype.kind == "U":
        assert got.dtype == object
        np.testing.assert_array_equal(got.astype(str), exp.astype(str))
        return got
    assert got.dtype == exp.dtype, (got.dtype, exp.dtype)
    if exp.dtype.kind == "V":
        got, exp = got.astype(np.float32), exp.astype(np.float32)
    np.testing.assert_allclose(got, exp, rtol=rtol, atol=atol)
    return got


SPECIALS = np.array([0.0, -0.0, 0.5, -0.5, 1.5, 2.5, -2.5, 1e-8, 3.0, -3.0, 20.0, -20.0, 100.0, -100.0,
                     np.inf, -np.inf, np.nan], np.float32)


# ---- unary -------------------------------------------------------------------------------------

@pytest.mark.parametrize("op", ["Abs", "Neg", "Exp", "Log", "Sqrt", "Reciprocal", "Floor", "Ceil", "Round",
                                "Sign", "Sin", "Cos", "Atan", "Sinh", "Asinh", "Tanh", "Erf", "IsNaN",
                                "Relu", "Sigmoid", "Softplus", "HardSwish", "Mish", "Elu", "Selu", "Celu",
                                "HardSigmoid", "LeakyRelu", "ThresholdedRelu", "Shrink", "Gelu"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_unary_float_specials(op, dtype):
    x = np.concatenate([SPECIALS, F(23) * 3]).astype(dtype).reshape(5, 8)
    check(op, [x], opset=24, rtol=2e-5)


@pytest.mark.parametrize("op", ["Exp", "Sigmoid", "Relu", "Gelu", "Erf", "Abs", "Celu"])
def test_unary_scalar_and_empty(op):
    check(op, [np.array(0.7, np.float32)], opset=24)
    got = run_hetero(op, [np.zeros((0, 3), np.float32)], opset=24, like=np.zeros((0, 3), np.float32))
    assert got.shape == (0, 3) and got.dtype == np.float32


def test_round_half_to_even():
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 2.4, 2.6], np.float32)
    check("Round", [x], expected=np.array([0, 2, 2, -0, -2, -2, 2, 3], np.float32))


def test_erf_accuracy_near_zero_and_tails():
    x = np.concatenate([np.logspace(-30, 0, 200), np.linspace(-6, 6, 2001)]).astype(np.float64)
    want = np.array([math.erf(v) for v in x])
    np.testing.assert_allclose(ew._erf(x), want, rtol=2e-7, atol=0)
    np.testing.assert_allclose(ew._erf(x.astype(np.float32)), want.astype(np.float32), rtol=1e-6, atol=0)


@pytest.mark.parametrize("approx", ["none", "tanh"])
def test_gelu_against_formula(approx):
    x = np.linspace(-8, 8, 1601).astype(np.float64)
    if approx == "none":
        want = np.array([0.5 * v * math.erfc(-v / math.sqrt(2)) for v in x])
    else:
        want = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    got = run_hetero("Gelu", [x.astype(np.float32)], {"approximate": approx}, opset=20,
                     like=want.astype(np.float32))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_sigmoid_is_stable_and_float32():
    x = np.array([-1000, -100, -30, -17, 0, 17, 30, 100, 1000], np.float32)
    want = np.array([1 / (1 + math.exp(-v)) if v > -700 else 0.0 for v in x.astype(np.float64)])
    got = run_hetero("Sigmoid", [x], like=want.astype(np.float32))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-42)


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64])
@pytest.mark.parametrize("op", ["Abs", "Neg", "Sign", "Relu"])
def test_unary_ints(op, dtype):
    check(op, [np.array([-5, 0, 3, 100], dtype)])


def test_float16_and_bfloat16_keep_dtype():
    x = F(3, 4).astype(np.float16)
    for op in ["Sigmoid", "Gelu", "HardSigmoid", "Relu", "Exp", "Tanh"]:
        assert run_hetero(op, [x], opset=22, like=x).dtype == np.float16
    xb = F(6).astype(ml_dtypes.bfloat16)
    for fn in (ew.relu, ew.sigmoid, ew.gelu, ew.leaky_relu, ew.elu):
        r = fn(xb)
        assert r.dtype == xb.dtype
    r = ew.sigmoid(xb).astype(np.float32)
    np.testing.assert_allclose(r, 1 / (1 + np.exp(-xb.astype(np.float32))), rtol=1e-2)


@pytest.mark.parametrize("pos,neg", [(1, 1), (1, 0), (0, 1), (0, 0)])
def test_isinf(pos, neg):
    check("IsInf", [SPECIALS], {"detect_positive": pos, "detect_negative": neg})


def test_binarizer_ml_domain():
    x = F(3, 4)
    got = run_hetero("Binarizer", [x], {"threshold": 0.25}, opset=21, like=x, domain="ai.onnx.ml")
    np.testing.assert_array_equal(got, (x > 0.25).astype(np.float32))


# ---- binary ------------------------------------------------------------------------------------

SHAPES = [((3, 4), (3, 4)), ((2, 3, 4), (4,)), ((2, 1, 4), (3, 1)), ((), (3,)), ((0, 3), (3,))]


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div", "Max", "Min", "Equal", "Less", "GreaterOrEqual"])
@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.uint8])
@pytest.mark.parametrize("shapes", SHAPES, ids=str)
def test_binary_broadcast(op, dtype, shapes):
    sa, sb = shapes
    if np.dtype(dtype).kind == "f":
        a, b = F(*sa) * 5, F(*sb) * 5
    else:
        a = rng.integers(0 if dtype == np.uint8 else -20, 20, sa).astype(dtype)
        b = rng.integers(1, 20, sb).astype(dtype)
    check(op, [a, b])


def test_int_div_truncates_toward_zero():
    a = np.array([-7, 7, -7, 7, -1, 0, -(2 ** 62) - 1], np.int64)
    b = np.array([2, -2, -2, 2, 3, 5, 2], np.int64)
    check("Div", [a, b], expected=np.array([-3, -3, 3, 3, 0, 0, -(2 ** 61)], np.int64))
    check("Div", [a[:6].astype(np.int8), b[:6].astype(np.int8)],
          expected=np.array([-3, -3, 3, 3, 0, 0], np.int8))


@pytest.mark.parametrize("fmod", [0, 1])
@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.int8])
def test_mod_signs(fmod, dtype):
    a = np.array([-7, 7, -7, 7, 5], dtype)
    b = np.array([3, -3, -3, 3, 7], dtype)
    check("Mod", [a, b], {"fmod": fmod})


def test_mod_float_fmod():
    check("Mod", [np.array([-7.5, 7.5, 4.0], np.float32), np.array([2.0, -2.0, 3.0], np.float32)], {"fmod": 1})


@pytest.mark.parametrize("bt", [np.float32, np.int32, np.int64, np.float16])
@pytest.mark.parametrize("et", [np.float32, np.int64, np.float64, np.uint8])
def test_pow_mixed_dtypes_keep_base(bt, et):
    x = np.array([1, 2, 3, 4], bt)
    y = np.array([2, 3, 1, 0], et)
    got = check("Pow", [x, y], rtol=1e-3)
    assert got.dtype == np.dtype(bt)


def test_pow_fast_paths_keep_broadcast_shape():
    x = np.abs(F(4))
    for e in (2.0, 0.5, 1.0, 3.0):
        check("Pow", [x, np.array([[[e]]], np.float32)])
        check("Pow", [x, np.array(e, np.float32)])


def test_pow_int_negative_exponent():
    got = ew._pow(np.array([2, 1, -1, 2], np.int64), np.array([-1, -2, -3, 3], np.int64))
    np.testing.assert_array_equal(got, [0, 1, -1, 8])
    assert got.dtype == np.int64


@pytest.mark.parametrize("direction", ["LEFT", "RIGHT"])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint32, np.uint64])
def test_bitshift(direction, dtype):
    check("BitShift", [np.array([16, 4, 1], dtype), np.array([1, 2, 3], dtype)], {"direction": direction})


@pytest.mark.parametrize("op", ["BitwiseAnd", "BitwiseOr", "BitwiseXor"])
def test_bitwise(op):
    check(op, [np.array([[1, 6, -3]], np.int32), np.array([3, 5, 7], np.int32)], opset=18)
    check("BitwiseNot", [np.array([0, 1, 255], np.uint8)], opset=18)


@pytest.mark.parametrize("op", ["And", "Or", "Xor"])
def test_logic(op):
    check(op, [rng.random((3, 4)) > 0.5, rng.random((4,)) > 0.5])
    check("Not", [np.array([[True, False]])])


def test_string_equal_broadcast():
    a = np.array([["a", "b"], ["c", "d"]], dtype=object)
    b = np.array(["a", "d"], dtype=object)
    check("Equal", [a, b], opset=19, expected=np.array([[True, False], [False, True]]))


def test_legacy_broadcast_axis():
    a = np.zeros((2, 3, 4, 5), np.float32)
    b = np.arange(12, dtype=np.float32).reshape(3, 4)
    got = run_hetero("Add", [a, b], {"broadcast": 1, "axis": 1}, opset=6, like=a)
    np.testing.assert_array_equal(got, np.broadcast_to(b[None, :, :, None], a.shape))


# ---- variadic / Where / Clip -------------------------------------------------------------------

@pytest.mark.parametrize("op", ["Max", "Min", "Sum"])
def test_variadic(op):
    check(op, [F(2, 1, 4), F(3, 1), F(4)])
    check(op, [F(3, 4)])


def test_mean_broadcast():
    xs = [F(2, 1, 4), F(3, 1), F(4)]
    check("Mean", xs, expected=(xs[0] + xs[1] + xs[2]) / 3)


def test_where_dtypes():
    check("Where", [rng.random((3, 1)) > 0.5, F(3, 4), F(4)])
    check("Where", [np.array([True, False]), np.array(["a", "b"], dtype=object),
                    np.array(["c", "d"], dtype=object)])
    check("Where", [np.array([True, False]), np.array([1, 2], np.int64), np.array([3, 4], np.int64)])


def test_clip_variants():
    x = F(3, 4)
    lo, hi = np.array(-0.5, np.float32), np.array(0.5, np.float32)
    check("Clip", [x, lo, hi], opset=13)
    check("Clip", [x, lo, None], opset=13)
    check("Clip", [x, None, hi], opset=13)
    check("Clip", [x], opset=13)
    check("Clip", [np.arange(-5, 5).astype(np.int32), np.array(-2, np.int32), np.array(3, np.int32)], opset=13)
    check("Clip", [x, hi, lo], opset=13, expected=np.full_like(x, -0.5))  # min > max: all max
    check("Clip", [x], {"min": -0.3, "max": 0.2}, opset=6)


def test_prelu_and_leaky():
    check("PRelu", [F(2, 3, 4, 5), F(3, 1, 1)])
    check("PRelu", [np.arange(-5, 5).astype(np.int32), np.array([2], np.int32)], opset=16)
    check("LeakyRelu", [F(10)], {"alpha": -1.5})
    check("LeakyRelu", [F(10)], {"alpha": 0.1})


def test_identity_passes_sequences_through():
    seq = [F(2), F(3)]
    assert ew.identity(seq) is seq
    assert ew.identity(None) is None


# ---- Cast --------------------------------------------------------------------------------------

F8 = ["FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ"]
CAST_VALS = np.array([0.478, 1e6, 1e-7, np.nan, np.inf, -np.inf, -1e-7, -1e6, 0.0, -0.0, 448, 449, 464,
                      57344, 60000, -3.5, 2.5], np.float32)


@pytest.mark.parametrize("to", F8)
@pytest.mark.parametrize("saturate", [0, 1])
@pytest.mark.parametrize("src", [np.float32, np.float16])
def test_cast_float8_saturate(to, saturate, src):
    with np.errstate(over="ignore"):
        x = CAST_VALS.astype(src)
    dt = helper.tensor_dtype_to_np_dtype(getattr(TensorProto, to))
    if saturate:
        m = float(ml_dtypes.finfo(dt).max)
        want = np.clip(x.astype(np.float32), -m, m).astype(dt)
    else:
        want = x.astype(dt)
    got = cast_k.cast(x, to=getattr(TensorProto, to), saturate=saturate)
    assert got.dtype == dt
    np.testing.assert_array_equal(got.astype(np.float32), want.astype(np.float32))


@pytest.mark.parametrize("to", ["INT4", "UINT4", "INT2", "UINT2", "FLOAT4E2M1", "BFLOAT16"])
def test_cast_small_types_roundtrip(to):
    x = np.arange(-3, 4).astype(np.float32)
    check("Cast", [x], {"to": getattr(TensorProto, to)}, opset=25, rtol=0, atol=0)
    back = cast_k.cast(cast_k.cast(x, to=getattr(TensorProto, to)), to=TensorProto.FLOAT)
    assert back.dtype == np.float32


def test_cast_e8m0_modes():
    x = np.array([0.0, 0.124, 0.25, 0.5, 1.1, 2.0, 1.5, 3.0, np.inf, np.nan], np.float32)
    up = cast_k.cast(x, to=TensorProto.FLOAT8E8M0).astype(np.float32)
    np.testing.assert_array_equal(up[1:8], [0.125, 0.25, 0.5, 2.0, 2.0, 2.0, 4.0])
    assert up[0] == 2.0 ** -127 and up[8] == 2.0 ** 127 and np.isnan(up[9])
    down = cast_k.cast(x, to=TensorProto.FLOAT8E8M0, round_mode="down").astype(np.float32)
    np.testing.assert_array_equal(down[1:8], [0.0625, 0.25, 0.5, 1.0, 2.0, 1.0, 2.0])
    near = cast_k.cast(x, to=TensorProto.FLOAT8E8M0, round_mode="nearest").astype(np.float32)
    np.testing.assert_array_equal(near[1:8], [0.125, 0.25, 0.5, 1.0, 2.0, 2.0, 4.0])
    nosat = cast_k.cast(x, to=TensorProto.FLOAT8E8M0, saturate=0).astype(np.float32)
    assert np.isnan(nosat[0]) and np.isnan(nosat[8])


@pytest.mark.parametrize("to", ["INT8", "INT32", "INT64", "UINT8", "BOOL", "FLOAT16", "DOUBLE"])
def test_cast_numeric(to):
    check("Cast", [np.array([-2.7, -0.5, 0.0, 0.5, 2.7, 3.5], np.float32)], {"to": getattr(TensorProto, to)},
          opset=25, rtol=0, atol=0)
    check("Cast", [np.array([-3, 0, 1, 200, 70000], np.int64)], {"to": getattr(TensorProto, to)},
          opset=25, rtol=0, atol=0)


def test_cast_strings():
    s = np.array(["1.5", "-2", "INF", "-INF", "NaN", "1e-5", "1E8", "+INF", "inf", "100"], dtype=object)
    want = np.array([1.5, -2, np.inf, -np.inf, np.nan, 1e-5, 1e8, np.inf, np.inf, 100], np.float32)
    got = run_hetero("Cast", [s], {"to": TensorProto.FLOAT}, opset=25, like=want)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)
    got = cast_k.cast(np.array(["1", "-2", "100"], dtype=object), to=TensorProto.INT64)
    np.testing.assert_array_equal(got, [1, -2, 100])
    got = cast_k.cast(np.array([1.5, -2.0, 0.1], np.float32), to=TensorProto.STRING)
    assert got.dtype == object and list(got) == ["1.5", "-2.0", "0.1"]
    got = cast_k.cast(np.array([b"2.5"], dtype=object), to=TensorProto.DOUBLE)
    np.testing.assert_array_equal(got, [2.5])


def test_castlike_and_legacy_string_to():
    check("CastLike", [np.array([1.7, -2.2], np.float32), np.array([1], np.int32)], opset=21)
    got = cast_k.cast(np.array([1.7], np.float32), to="INT32")
    assert got.dtype == np.int32 and got[0] == 1


def test_bitcast():
    x = np.array([1.0, -2.0], np.float32)
    got = cast_k.bit_cast(x, to=TensorProto.INT32)
    np.testing.assert_array_equal(got, x.view(np.int32))
    s = cast_k.bit_cast(np.array(1.0, np.float32), to=TensorProto.UINT32)
    assert s.shape == () and s == 0x3F800000
    with pytest.raises(ValueError):
        cast_k.bit_cast(x, to=TensorProto.INT64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, np.int8, np.int64, np.bool_,
                                   ml_dtypes.bfloat16])
def test_where_large_bit_select_matches_np_where(dtype):
    # above the size threshold Where uses a bitwise select: check it bit-exactly, with broadcasting
    c = rng.random((8, 1, 700)) > 0.5
    a = (F(8, 3, 700) * 10).astype(dtype)
    b = (F(3, 1) * 10).astype(dtype)
    if np.dtype(dtype).kind == "f":
        a.reshape(-1)[:4] = np.array([np.nan, -0.0, np.inf, -np.inf], dtype)
    got = ew.where(c, a, b)
    want = np.where(c, a, b)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))
    got = ew.where(c, b, a)
    np.testing.assert_array_equal(got.view(np.uint8), np.where(c, b, a).view(np.uint8))


def test_large_activations_match_reference():
    x = np.concatenate([SPECIALS, F(20000) * 4]).astype(np.float32)
    for op, attrs in [("ThresholdedRelu", {"alpha": 0.5}), ("Elu", {}), ("Selu", {}), ("Softplus", {}),
                      ("Mish", {}), ("Sigmoid", {}), ("Gelu", {}), ("LeakyRelu", {"alpha": 3.0})]:
        check(op, [x], attrs, opset=22, rtol=1e-5, atol=1e-6)
