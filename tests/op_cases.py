"""The shared op-case table: small single-node cases every device is checked against.

Each :class:`OpCase` is one ONNX node (op, attributes, input shapes/dtypes, which inputs are
constants). ``tests/test_op_cases.py`` runs every case on every device present (CPU, GPU.0, ...) and
compares with ``onnx.reference.ReferenceEvaluator``. Fused ops of domain "hetero" (what the transforms
produce) have no ONNX reference: their case gives ``expand``, the equivalent standard-ONNX nodes, and
the reference runs those.

Adding an op to a device: add a row here; it then runs on every device that claims it. ``required``
names the device families that must claim the case (a family not listed skips it when its query says
no, with the reason).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

F32 = np.float32


@dataclass(frozen=True)
class Inp:
    shape: tuple[int, ...]
    dtype: Any = F32
    const: bool = False          # an initializer (e.g. Reshape's shape, Pad's pads, Conv weights)
    value: Any = None            # explicit value (else random in [low, high))
    low: float = -2.0
    high: float = 2.0


@dataclass(frozen=True)
class OpCase:
    id: str
    op: str
    inputs: tuple[Inp | None, ...]
    attrs: dict = field(default_factory=dict)
    n_outputs: int = 1
    opset: int = 17
    domain: str = ""
    rtol: float = 1e-4
    atol: float = 1e-5
    # for domain "hetero": the standard-ONNX nodes computing the same thing, over inputs named
    # in0, in1, ... and the output named out0 (intermediate names are free)
    expand: Callable[[dict], list] | None = None
    # a numpy formula used instead of onnx.reference where that is wrong (see _lrn_ref)
    numpy_ref: Callable[..., list] | None = None
    required: tuple[str, ...] = ("GPU",)

    def __str__(self) -> str:
        return self.id


def C(value, dtype=None) -> Inp:
    """A constant input with this value."""
    a = np.asarray(value, dtype=dtype)
    return Inp(tuple(a.shape), a.dtype, True, a)


def _case(id, op, inputs, attrs=None, **kw) -> OpCase:
    return OpCase(id, op, tuple(inputs), dict(attrs or {}), **kw)


def _lrn_ref(x, size, alpha, beta, bias):
    """The spec's LRN. (onnx.reference's LRN loops over the batch axis instead of the channels, so
    channels beyond the batch size get no normalisation.)"""
    sq = np.zeros_like(x)
    lo, hi = (size - 1) // 2, -(-(size - 1) // 2)
    for c in range(x.shape[1]):
        sq[:, c] = (x[:, max(0, c - lo):c + hi + 1] ** 2).sum(axis=1)
    return [(x / (bias + alpha / size * sq) ** beta).astype(x.dtype)]


def _convtranspose_ref(x, w, group, stride=1):
    """ConvTranspose without pads, by scattering each tap (onnx.reference fails on group > 1)."""
    n, c, h, wd = x.shape
    cg, mg, kh, kw = c // group, w.shape[1], w.shape[2], w.shape[3]
    y = np.zeros((n, mg * group, (h - 1) * stride + kh, (wd - 1) * stride + kw), np.float64)
    for g in range(group):
        xg, wg = x[:, g * cg:(g + 1) * cg], w[g * cg:(g + 1) * cg]
        for a in range(kh):
            for b in range(kw):
                y[:, g * mg:(g + 1) * mg, a:a + (h - 1) * stride + 1:stride, b:b + (wd - 1) * stride + 1:stride] += \
                    np.einsum("nchw,cm->nmhw", xg, wg[:, :, a, b])
    return [y.astype(x.dtype)]


def _softmax2d_ref(x, axis):
    """Softmax before opset 13: the input is coerced to 2-D at ``axis`` (onnx.reference ignores that)."""
    x2 = x.reshape(int(np.prod(x.shape[:axis])), -1)
    e = np.exp(x2 - x2.max(axis=1, keepdims=True))
    return [(e / e.sum(axis=1, keepdims=True)).reshape(x.shape).astype(x.dtype)]


X4 = Inp((2, 3, 5, 6))
POS = Inp((2, 3, 4), low=0.1, high=3.0)
UNIT = Inp((2, 3, 4), low=-0.9, high=0.9)


def _unary(op, inp=Inp((2, 3, 4)), attrs=None, **kw):
    return _case(f"{op}", op, [inp], attrs, **kw)


CASES: list[OpCase] = [
    # ---- binary / variadic elementwise, with broadcasting ----
    _case("Add_broadcast", "Add", [Inp((2, 3, 4, 5)), Inp((3, 1, 1))]),
    _case("Add_scalar", "Add", [Inp((3, 7)), Inp(())]),
    _case("Add_int64", "Add", [Inp((3, 4), np.int64, low=-50, high=50), Inp((4,), np.int64, low=-50, high=50)]),
    _case("Sub_rows", "Sub", [Inp((4, 1)), Inp((1, 5))]),
    _case("Mul_lastaxis", "Mul", [Inp((2, 3, 4)), Inp((4,))]),
    _case("Div", "Div", [Inp((2, 3, 4)), Inp((2, 3, 4), low=0.5, high=2.0)]),
    _case("Pow", "Pow", [POS, Inp((3, 4), low=-1.5, high=1.5)]),
    _case("PRelu", "PRelu", [Inp((1, 3, 4, 4)), Inp((3, 1, 1), const=True)]),
    _case("Mod_fmod", "Mod", [Inp((3, 4), low=-5, high=5), Inp((3, 4), low=0.5, high=2.0)], {"fmod": 1}),
    _case("Max_3", "Max", [Inp((2, 3, 4)), Inp((3, 4)), Inp((4,))]),
    _case("Min_2", "Min", [Inp((2, 3, 4)), Inp((2, 1, 4))]),
    _case("Sum_3", "Sum", [Inp((2, 3, 4)), Inp((3, 4)), Inp((2, 3, 4))]),
    _case("Mean_3", "Mean", [Inp((2, 3, 4)), Inp((2, 3, 4)), Inp((1, 4))]),
    _case("Sum_1", "Sum", [Inp((2, 3))]),
    _case("Mod_int", "Mod", [Inp((3, 4), np.int64, low=-9, high=9), Inp((3, 4), np.int64, low=1, high=5)]),
    _case("Mod_int_fmod", "Mod", [Inp((3, 4), np.int32, low=-9, high=9), Inp((4,), np.int32, low=1, high=5)],
          {"fmod": 1}),
    _case("BitShift_left", "BitShift", [Inp((3, 4), np.uint32, low=0, high=99), Inp((3, 4), np.uint32, low=0, high=5)],
          {"direction": "LEFT"}),
    _case("BitShift_right", "BitShift", [Inp((3, 4), np.uint8, low=0, high=255), Inp((4,), np.uint8, low=0, high=8)],
          {"direction": "RIGHT"}),
    _case("Equal_int", "Equal", [Inp((3, 4), np.int64, low=0, high=3), Inp((4,), np.int64, low=0, high=3)]),
    _case("Less", "Less", [Inp((3, 4)), Inp((3, 4))]),
    _case("Greater", "Greater", [Inp((3, 4)), Inp((1, 4))]),
    _case("GreaterOrEqual_int32", "GreaterOrEqual", [Inp((3, 4), np.int32, low=0, high=3),
                                                     Inp((3, 4), np.int32, low=0, high=3)]),
    _case("LessOrEqual", "LessOrEqual", [Inp((3, 4)), Inp((3, 4))]),
    _case("And", "And", [Inp((3, 4), np.bool_), Inp((3, 4), np.bool_)]),
    _case("Or", "Or", [Inp((3, 4), np.bool_), Inp((4,), np.bool_)]),
    _case("Xor", "Xor", [Inp((3, 4), np.bool_), Inp((3, 4), np.bool_)]),
    _case("Not", "Not", [Inp((3, 4), np.bool_)]),
    _case("Where", "Where", [Inp((3, 4), np.bool_), Inp((3, 4)), Inp((4,))]),
    # ---- unary ----
    _unary("Relu"), _unary("Sigmoid"), _unary("Tanh"), _unary("Abs"), _unary("Neg"), _unary("Exp"),
    _unary("Log", POS), _unary("Sqrt", POS), _unary("Reciprocal", POS), _unary("Floor"), _unary("Ceil"),
    _unary("Round"), _unary("Sign"), _unary("Erf"), _unary("Sin"), _unary("Cos"), _unary("Tan", UNIT),
    _unary("Asin", UNIT), _unary("Acos", UNIT), _unary("Atan"), _unary("Sinh"), _unary("Cosh"),
    _unary("Asinh"), _unary("Acosh", Inp((2, 3, 4), low=1.1, high=3.0)), _unary("Atanh", UNIT),
    _unary("Softplus"), _unary("Softsign"), _unary("Elu", attrs={"alpha": 0.7}), _unary("Selu"),
    _unary("Celu", attrs={"alpha": 1.3}), _unary("LeakyRelu", attrs={"alpha": 0.2}),
    _unary("ThresholdedRelu", attrs={"alpha": 0.5}), _unary("HardSigmoid", attrs={"alpha": 0.3, "beta": 0.4}),
    _unary("HardSwish"), _unary("Mish", opset=18), _unary("IsNaN"),
    _case("Neg_int", "Neg", [Inp((3, 4), np.int64, low=-9, high=9)]),
    _case("Gelu", "Gelu", [Inp((2, 3, 4))], opset=20),
    _case("Gelu_tanh", "Gelu", [Inp((2, 3, 4))], {"approximate": "tanh"}, opset=20),
    _case("Clip_consts", "Clip", [Inp((3, 4)), C(np.float32(-0.5)), C(np.float32(0.7))], opset=13),
    _case("Clip_min_only", "Clip", [Inp((3, 4)), C(np.float32(0.1))], opset=13),
    _case("Clip_attrs", "Clip", [Inp((3, 4))], {"min": -0.3, "max": 0.3}, opset=6),
    _case("Cast_f32_i64", "Cast", [Inp((3, 4), low=-9, high=9)], {"to": TensorProto.INT64}),
    _case("Cast_i64_f32", "Cast", [Inp((3, 4), np.int64, low=-9, high=9)], {"to": TensorProto.FLOAT}),
    _case("CastLike_f32_f16", "CastLike", [Inp((3, 4)), Inp((1,), np.float16)], opset=19),
    _case("Cast_f32_bool", "Cast", [Inp((3, 4), value=np.array([[0, 1, -2, 0.5]] * 3, F32))], {"to": TensorProto.BOOL}),
    # ---- Gemm / MatMul ----
    _case("Gemm_transB_bias", "Gemm", [Inp((5, 7)), Inp((9, 7), const=True), Inp((9,), const=True)], {"transB": 1}),
    _case("Gemm_transA_alpha_beta", "Gemm", [Inp((7, 5)), Inp((7, 9)), Inp((5, 9))],
          {"transA": 1, "alpha": 0.5, "beta": 2.0}),
    _case("Gemm_nobias_colbias", "Gemm", [Inp((4, 33)), Inp((33, 40)), Inp((4, 1))]),
    _case("Gemm_transB_runtime", "Gemm", [Inp((3, 6)), Inp((10, 6))], {"transB": 1}),
    _case("MatMul_2d_odd", "MatMul", [Inp((37, 29)), Inp((29, 41))]),
    _case("MatMul_batch_fold", "MatMul", [Inp((2, 3, 5, 7)), Inp((7, 4), const=True)]),
    _case("MatMul_broadcast", "MatMul", [Inp((2, 1, 5, 7)), Inp((3, 7, 4))]),
    _case("MatMul_4batch", "MatMul", [Inp((2, 3, 2, 5, 7)), Inp((2, 3, 2, 7, 4))]),
    _case("MatMul_wide_runtime_B", "MatMul", [Inp((20, 40)), Inp((40, 600))]),
    _case("MatMul_vec_mat", "MatMul", [Inp((7,)), Inp((7, 4))]),
    _case("MatMul_mat_vec", "MatMul", [Inp((3, 7)), Inp((7,))]),
    # ---- Conv ----
    _case("Conv_3x3_pad", "Conv", [Inp((1, 3, 8, 9)), Inp((4, 3, 3, 3), const=True), Inp((4,), const=True)],
          {"pads": [1, 1, 1, 1]}),
    _case("Conv_stride2_nobias", "Conv", [Inp((2, 4, 9, 9)), Inp((6, 4, 3, 3), const=True)], {"strides": [2, 2]}),
    _case("Conv_1x1", "Conv", [Inp((2, 8, 5, 7)), Inp((5, 8, 1, 1), const=True), Inp((5,), const=True)]),
    _case("Conv_1x1_wide", "Conv", [Inp((2, 8, 24, 25)), Inp((16, 8, 1, 1), const=True), Inp((16,), const=True)]),
    _case("Conv_1x1_groups", "Conv", [Inp((2, 6, 5, 5)), Inp((9, 2, 1, 1), const=True), Inp((9,), const=True)],
          {"group": 3}),
    _case("Conv_1x1_groups_wide", "Conv", [Inp((1, 4, 24, 24)), Inp((32, 2, 1, 1), const=True)], {"group": 2}),
    _case("Conv_groups", "Conv", [Inp((1, 4, 6, 6)), Inp((6, 2, 3, 3), const=True), Inp((6,), const=True)],
          {"group": 2, "pads": [1, 1, 1, 1]}),
    _case("Conv_depthwise", "Conv", [Inp((2, 4, 7, 7)), Inp((4, 1, 3, 3), const=True), Inp((4,), const=True)],
          {"group": 4, "pads": [1, 1, 1, 1], "strides": [2, 2]}),
    _case("Conv_depthwise_mult2", "Conv", [Inp((1, 3, 6, 6)), Inp((6, 1, 3, 3), const=True)], {"group": 3}),
    _case("Conv_dilated", "Conv", [Inp((1, 2, 9, 9)), Inp((3, 2, 3, 3), const=True)],
          {"dilations": [2, 2], "pads": [2, 1, 2, 1]}),
    _case("Conv_same_upper", "Conv", [Inp((1, 2, 7, 8)), Inp((3, 2, 4, 3), const=True)],
          {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    _case("Conv_asym_pads", "Conv", [Inp((1, 2, 6, 6)), Inp((2, 2, 3, 3), const=True)], {"pads": [0, 1, 2, 0]}),
    _case("Conv_1d", "Conv", [Inp((2, 3, 11)), Inp((4, 3, 3), const=True), Inp((4,), const=True)],
          {"pads": [1, 1], "strides": [2]}),
    _case("Conv_runtime_weights", "Conv", [Inp((1, 3, 5, 5)), Inp((2, 3, 3, 3))]),
    _case("ConvTranspose_s2", "ConvTranspose",
          [Inp((1, 2, 3, 3)), Inp((2, 4, 3, 3), const=True), Inp((4,), const=True)],
          {"strides": [2, 2]}),
    _case("ConvTranspose_pads_outpad", "ConvTranspose", [Inp((2, 3, 4, 5)), Inp((3, 2, 3, 2), const=True)],
          {"strides": [2, 3], "pads": [1, 0, 1, 1], "output_padding": [1, 2]}),
    _case("ConvTranspose_groups", "ConvTranspose", [Inp((1, 4, 5, 5)), Inp((4, 3, 2, 2), const=True)], {"group": 2},
          numpy_ref=lambda x, w: _convtranspose_ref(x, w, 2)),
    _case("ConvTranspose_dilated", "ConvTranspose", [Inp((1, 2, 4, 4)), Inp((2, 3, 3, 3), const=True)],
          {"dilations": [2, 2], "strides": [2, 2]}),
    _case("ConvTranspose_1d_same", "ConvTranspose", [Inp((1, 2, 6)), Inp((2, 3, 3), const=True)],
          {"strides": [2], "auto_pad": "SAME_UPPER"}),
    # ---- pooling ----
    _case("MaxPool_3x3_s2_p1", "MaxPool", [X4], {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    _case("MaxPool_ceil", "MaxPool", [Inp((1, 2, 7, 7))], {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1}),
    _case("MaxPool_dilated", "MaxPool", [Inp((1, 2, 8, 8))], {"kernel_shape": [2, 2], "dilations": [2, 2]}),
    _case("MaxPool_1d", "MaxPool", [Inp((2, 3, 10))], {"kernel_shape": [3], "strides": [2]}),
    _case("AveragePool_incl_pad", "AveragePool", [X4],
          {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 1}),
    _case("AveragePool_excl_pad", "AveragePool", [X4],
          {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    _case("AveragePool_asym", "AveragePool", [Inp((1, 1, 7, 7))],
          {"kernel_shape": [7, 7], "pads": [0, 0, 1, 1], "count_include_pad": 0}),
    _case("LpPool", "LpPool", [Inp((1, 2, 6, 6))], {"kernel_shape": [3, 3], "strides": [2, 2], "p": 3,
                                                  "pads": [1, 1, 1, 1]}, opset=18),
    _case("GlobalAveragePool", "GlobalAveragePool", [X4]),
    _case("GlobalMaxPool", "GlobalMaxPool", [X4]),
    # ---- normalisation ----
    _case("BatchNormalization", "BatchNormalization",
          [X4, Inp((3,), const=True), Inp((3,), const=True), Inp((3,), const=True),
           Inp((3,), const=True, low=0.5, high=2)],
          {"epsilon": 1e-3}),
    _case("LRN", "LRN", [Inp((1, 6, 4, 4))], {"size": 5, "alpha": 1e-2, "beta": 0.75, "bias": 1.0},
          numpy_ref=lambda x: _lrn_ref(x, 5, 1e-2, 0.75, 1.0)),
    _case("LRN_even", "LRN", [Inp((2, 5, 3, 3))], {"size": 4, "alpha": 2e-2, "beta": 0.5, "bias": 2.0},
          numpy_ref=lambda x: _lrn_ref(x, 4, 2e-2, 0.5, 2.0)),
    _case("LayerNormalization", "LayerNormalization", [Inp((2, 3, 8)), Inp((8,), const=True), Inp((8,), const=True)]),
    _case("LayerNormalization_axis1", "LayerNormalization", [Inp((2, 3, 4)), Inp((3, 4)), Inp((3, 4))], {"axis": 1}),
    _case("LayerNormalization_stats", "LayerNormalization", [Inp((2, 3, 8)), Inp((8,), const=True)],
          {"axis": -1}, n_outputs=3),
    _case("InstanceNormalization", "InstanceNormalization", [X4, Inp((3,), const=True), Inp((3,), const=True)]),
    _case("Softmax_axis1", "Softmax", [Inp((2, 4, 3))], {"axis": 1}, opset=13),
    _case("Softmax_opset11", "Softmax", [Inp((2, 4, 3))], {"axis": 1}, opset=11,
          numpy_ref=lambda x: _softmax2d_ref(x, 1)),
    _case("LogSoftmax", "LogSoftmax", [Inp((3, 10))], opset=13),
    _case("Hardmax", "Hardmax", [Inp((3, 10))], opset=13),
    # ---- reductions ----
    _case("ReduceMean_axis1", "ReduceMean", [Inp((2, 3, 4))], {"axes": [1]}, opset=13),
    _case("ReduceSum_input_axes", "ReduceSum", [Inp((2, 3, 4)), C(np.array([2], np.int64))], {"keepdims": 0}, opset=13),
    _case("ReduceMax_02", "ReduceMax", [Inp((2, 3, 4))], {"axes": [0, 2]}, opset=13),
    _case("ReduceMin_all", "ReduceMin", [Inp((2, 3, 4))], {"keepdims": 0}, opset=13),
    _case("ReduceProd", "ReduceProd", [Inp((2, 3, 4), low=0.5, high=1.5)], {"axes": [-1]}, opset=13),
    _case("ReduceL1", "ReduceL1", [Inp((2, 3, 4))], {"axes": [1]}, opset=13),
    _case("ReduceL2", "ReduceL2", [Inp((2, 3, 4))], {"axes": [1, 2]}, opset=13),
    _case("ReduceSumSquare", "ReduceSumSquare", [Inp((2, 3, 4))], {"axes": [0]}, opset=13),
    _case("ReduceLogSum", "ReduceLogSum", [Inp((2, 3, 4), low=0.1, high=2)], {"axes": [2]}, opset=13),
    _case("ReduceLogSumExp", "ReduceLogSumExp", [Inp((2, 3, 4))], {"axes": [1]}, opset=13),
    _case("ReduceMean_opset18", "ReduceMean", [Inp((2, 3, 4)), C(np.array([0, 2], np.int64))], opset=18),
    _case("CumSum", "CumSum", [Inp((2, 5, 3)), C(np.array(1, np.int64))]),
    _case("CumSum_excl_rev", "CumSum", [Inp((4, 6)), C(np.array(-1, np.int32))], {"exclusive": 1, "reverse": 1}),
    _case("ArgMax", "ArgMax", [Inp((3, 5, 2))], {"axis": 1}),
    _case("ArgMin_last", "ArgMin", [Inp((3, 5), value=np.array([[1, 0, 0, 2, 3]] * 3, F32))],
          {"axis": 1, "select_last_index": 1, "keepdims": 0}),
    # ---- data movement and views ----
    _case("Transpose", "Transpose", [Inp((2, 3, 4, 5))], {"perm": [0, 2, 3, 1]}),
    _case("Transpose_default", "Transpose", [Inp((3, 4, 5))]),
    _case("Transpose_5d", "Transpose", [Inp((1, 2, 3, 2, 4))], {"perm": [0, 2, 1, 3, 4]}),
    _case("Concat_axis1", "Concat", [Inp((2, 3, 4)), Inp((2, 1, 4)), Inp((2, 2, 4))], {"axis": 1}),
    _case("Concat_int64_axis0", "Concat", [Inp((2, 3), np.int64, low=0, high=9), Inp((1, 3), np.int64, low=0, high=9)],
          {"axis": 0}),
    _case("Split_3", "Split", [Inp((2, 7, 3)), C(np.array([2, 4, 1], np.int64))], {"axis": 1}, n_outputs=3, opset=13),
    _case("Split_equal", "Split", [Inp((6, 4))], {"axis": 0}, n_outputs=2, opset=13),
    _case("Slice_steps", "Slice", [Inp((5, 6, 7)), C(np.array([1, -1], np.int64)), C(np.array([5, -7], np.int64)),
                                   C(np.array([0, 2], np.int64)), C(np.array([2, -2], np.int64))]),
    _case("Slice_simple", "Slice", [Inp((4, 8)), C(np.array([0, 2], np.int64)), C(np.array([3, 100], np.int64))]),
    _case("Pad_constant", "Pad", [Inp((2, 3, 4)), C(np.array([0, 1, 2, 0, 2, 1], np.int64)), C(np.float32(1.5))]),
    _case("Pad_reflect", "Pad", [Inp((1, 2, 4, 5)), C(np.array([0, 0, 2, 1, 0, 0, 1, 3], np.int64))],
          {"mode": "reflect"}),
    _case("Pad_edge", "Pad", [Inp((2, 3)), C(np.array([2, 1, 0, 3], np.int64))], {"mode": "edge"}),
    _case("Pad_wrap", "Pad", [Inp((2, 4)), C(np.array([1, 2, 1, 3], np.int64))], {"mode": "wrap"}, opset=19),
    _case("Gather_axis0", "Gather", [Inp((5, 4)), C(np.array([[0, 4], [-1, 2]], np.int64))]),
    _case("Gather_axis1_runtime", "Gather", [Inp((3, 5, 2)), Inp((4,), np.int64, low=0, high=5)], {"axis": 1}),
    _case("GatherElements", "GatherElements", [Inp((3, 4, 2)), Inp((3, 2, 2), np.int64, low=-4, high=4)], {"axis": 1}),
    _case("GatherElements_axis0", "GatherElements", [Inp((4, 3)), C(np.array([[0, 3, -1], [2, 1, 0]], np.int64))]),
    _case("Trilu_upper", "Trilu", [Inp((2, 4, 5)), C(np.array(1, np.int64))], opset=14),
    _case("Trilu_lower_int", "Trilu", [Inp((5, 4), np.int64, low=-9, high=9), C(np.array(-1, np.int64))],
          {"upper": 0}, opset=14),
    _case("Expand", "Expand", [Inp((3, 1)), C(np.array([2, 3, 4], np.int64))]),
    _case("Tile", "Tile", [Inp((2, 3)), C(np.array([2, 3], np.int64))]),
    _case("Reshape", "Reshape", [Inp((2, 3, 4)), C(np.array([4, 0, -1], np.int64))]),
    _case("Flatten", "Flatten", [Inp((2, 3, 4, 5))], {"axis": 2}),
    _case("Squeeze", "Squeeze", [Inp((2, 1, 4, 1)), C(np.array([1, 3], np.int64))], opset=13),
    _case("Unsqueeze", "Unsqueeze", [Inp((2, 4)), C(np.array([0, 3], np.int64))], opset=13),
    _case("Identity", "Identity", [Inp((2, 3))]),
    _case("Dropout", "Dropout", [Inp((2, 3))], {"ratio": 0.5}, opset=10),
    _case("DepthToSpace_DCR", "DepthToSpace", [Inp((1, 8, 2, 3))], {"blocksize": 2}),
    _case("DepthToSpace_CRD", "DepthToSpace", [Inp((2, 8, 2, 3))], {"blocksize": 2, "mode": "CRD"}),
    _case("SpaceToDepth", "SpaceToDepth", [Inp((1, 2, 4, 6))], {"blocksize": 2}),
    _case("SpaceToDepth_CRD", "SpaceToDepth", [Inp((2, 3, 4, 6))], {"blocksize": 2, "mode": "CRD"}, opset=28,
          required=()),
    _case("Resize_nearest_scales", "Resize", [Inp((1, 2, 3, 4)), None, C(np.array([1, 1, 2, 1.5], F32))],
          {"mode": "nearest"}, opset=13),
    _case("Resize_linear_sizes", "Resize", [Inp((1, 2, 4, 4)), None, None, C(np.array([1, 2, 7, 3], np.int64))],
          {"mode": "linear"}, opset=13),
    _case("Resize_linear_align", "Resize", [Inp((1, 1, 3, 5)), None, C(np.array([1, 1, 2, 2], F32))],
          {"mode": "linear", "coordinate_transformation_mode": "align_corners"}, opset=13),
    _case("Resize_cubic", "Resize", [Inp((1, 1, 4, 4)), None, C(np.array([1, 1, 1.5, 2], F32))],
          {"mode": "cubic", "coordinate_transformation_mode": "asymmetric"}, opset=13),
    _case("Resize_nearest_ceil", "Resize", [Inp((1, 1, 5, 5)), None, C(np.array([1, 1, 0.6, 1.7], F32))],
          {"mode": "nearest", "nearest_mode": "ceil", "coordinate_transformation_mode": "half_pixel"}, opset=13),
]


# ---- fused ops of domain "hetero" -------------------------------------------------------------

def _act_nodes(act: str, params: list[float], x: str, out: str) -> list:
    if not act:
        return [helper.make_node("Identity", [x], [out])]
    if act == "Clip":
        lo, hi = (params + [-np.inf, np.inf])[:2]
        return [helper.make_node("Constant", [], [out + "_lo"], value=numpy_helper.from_array(np.float32(lo))),
                helper.make_node("Constant", [], [out + "_hi"], value=numpy_helper.from_array(np.float32(hi))),
                helper.make_node("Clip", [x, out + "_lo", out + "_hi"], [out])]
    kw = {}
    if act == "LeakyRelu" and params:
        kw["alpha"] = params[0]
    if act == "HardSigmoid" and params:
        kw = {"alpha": params[0], "beta": params[1]}
    return [helper.make_node(act, [x], [out], **kw)]


def _fused(op: str, base: str, n_base_inputs: int, act: str, params: list[float], base_attrs=None, residual=False):
    def expand(names):
        nodes = [helper.make_node(base, [names[f"in{i}"] for i in range(n_base_inputs) if f"in{i}" in names],
                                  ["t0"], **(base_attrs or {}))]
        x = "t0"
        if residual:
            nodes.append(helper.make_node("Add", ["t0", names["in3"]], ["t1"]))
            x = "t1"
        nodes += _act_nodes(act, params, x, "out0")
        return nodes
    return expand


def _fused_case(id, op, base, inputs, act, params=(), attrs=None, residual=False, n_base=None):
    attrs = dict(attrs or {})
    fattrs = dict(attrs, activation=act)
    if params:
        fattrs["activation_params"] = list(params)
    return OpCase(id, op, tuple(inputs), fattrs, domain="hetero",
                  expand=_fused(op, base, n_base or len(inputs), act, list(params), attrs, residual))


CASES += [
    _fused_case("FusedConv_relu_residual", "FusedConv", "Conv",
                [Inp((1, 3, 6, 6)), Inp((4, 3, 3, 3), const=True), Inp((4,), const=True), Inp((1, 4, 6, 6))],
                "Relu", attrs={"pads": [1, 1, 1, 1]}, residual=True, n_base=3),
    _fused_case("FusedConv_clip", "FusedConv", "Conv", [Inp((1, 4, 5, 5)), Inp((4, 4, 1, 1), const=True)],
                "Clip", (0.0, 6.0)),
    _fused_case("FusedConv_hardswish_s2", "FusedConv", "Conv",
                [Inp((1, 2, 7, 7)), Inp((3, 2, 3, 3), const=True), Inp((3,), const=True)], "HardSwish",
                attrs={"strides": [2, 2]}),
    _fused_case("FusedConv_dw_leaky", "FusedConv", "Conv",
                [Inp((1, 3, 6, 6)), Inp((3, 1, 3, 3), const=True), Inp((3,), const=True)], "LeakyRelu", (0.1,),
                attrs={"group": 3, "pads": [1, 1, 1, 1]}),
    _fused_case("FusedConv_hardsigmoid", "FusedConv", "Conv", [Inp((1, 2, 4, 4)), Inp((2, 2, 3, 3), const=True)],
                "HardSigmoid", (0.3, 0.4)),
    _fused_case("FusedConv_noact_residual", "FusedConv", "Conv",
                [Inp((1, 2, 4, 4)), Inp((2, 2, 1, 1), const=True), Inp((2,), const=True), Inp((1, 2, 4, 4))], "",
                residual=True, n_base=3),
    _fused_case("FusedConv_fulltile_residual_clip", "FusedConv", "Conv",
                [Inp((2, 5, 8, 8)), Inp((16, 5, 3, 3), const=True), Inp((16,), const=True), Inp((2, 16, 8, 8))],
                "Clip", (-0.5, 1.0), attrs={"pads": [1, 1, 1, 1]}, residual=True, n_base=3),
    _fused_case("FusedGemm_fulltile_rowbias", "FusedGemm", "Gemm",
                [Inp((16, 20)), Inp((20, 64), const=True), Inp((16, 1), const=True)], "LeakyRelu", (0.1,)),
    _fused_case("FusedGemm_fulltile_fullbias", "FusedGemm", "Gemm",
                [Inp((16, 20)), Inp((64, 20), const=True), Inp((16, 64))], "Tanh", attrs={"transB": 1, "beta": 0.5}),
    _fused_case("FusedMatMul_fulltile_hardswish", "FusedMatMul", "MatMul", [Inp((24, 9)), Inp((9, 96))], "HardSwish"),
    _fused_case("FusedGemm_sigmoid", "FusedGemm", "Gemm", [Inp((3, 6)), Inp((5, 6), const=True), Inp((5,), const=True)],
                "Sigmoid", attrs={"transB": 1}),
    _fused_case("FusedMatMul_tanh", "FusedMatMul", "MatMul", [Inp((2, 3, 6)), Inp((6, 5), const=True)], "Tanh"),
    # DenseNet's pre-activation BN + Relu (var: positive), and activations the compiled pass
    # applies (Clip) or leaves to numpy (Sigmoid)
    _fused_case("FusedBatchNormalization_relu", "FusedBatchNormalization", "BatchNormalization",
                [Inp((2, 3, 5, 4)), Inp((3,), const=True), Inp((3,), const=True), Inp((3,), const=True),
                 Inp((3,), const=True, low=0.5, high=2)], "Relu", attrs={"epsilon": 1e-3}),
    _fused_case("FusedBatchNormalization_clip", "FusedBatchNormalization", "BatchNormalization",
                [Inp((1, 4, 6)), Inp((4,), const=True), Inp((4,), const=True), Inp((4,), const=True),
                 Inp((4,), const=True, low=0.5, high=2)], "Clip", [-0.5, 1.0]),
    _fused_case("FusedBatchNormalization_sigmoid", "FusedBatchNormalization", "BatchNormalization",
                [Inp((2, 3, 3, 3)), Inp((3,), const=True), Inp((3,), const=True), Inp((3,), const=True),
                 Inp((3,), const=True, low=0.5, high=2)], "Sigmoid"),
]


# ---- building and checking ----------------------------------------------------------------------

def make_values(case: OpCase, seed: int = 0) -> list[np.ndarray | None]:
    rng = np.random.default_rng(seed)
    vals = []
    for inp in case.inputs:
        if inp is None:
            vals.append(None)
            continue
        if inp.value is not None:
            vals.append(np.asarray(inp.value, dtype=inp.dtype))
            continue
        dt = np.dtype(inp.dtype)
        if dt == np.bool_:
            vals.append(rng.random(inp.shape) < 0.5)
        elif dt.kind in "iu":
            vals.append(rng.integers(int(inp.low), int(inp.high), size=inp.shape).astype(dt))
        else:
            vals.append(rng.uniform(inp.low, inp.high, size=inp.shape).astype(dt))
    return vals


def _reference_model(case: OpCase, vals) -> tuple[onnx.ModelProto, dict]:
    """The standard-ONNX model of a case (the expansion for fused ops), plus its runtime feeds."""
    names, inputs, inits, feeds = {}, [], [], {}
    for i, (inp, v) in enumerate(zip(case.inputs, vals)):
        if inp is None:
            continue
        name = f"in{i}"
        names[name] = name
        if inp.const:
            inits.append(numpy_helper.from_array(v, name))
        else:
            inputs.append(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape))
            feeds[name] = v
    if case.expand is not None:
        nodes = case.expand(names)
    else:
        ins = [f"in{i}" if inp is not None else "" for i, inp in enumerate(case.inputs)]
        while ins and not ins[-1]:
            ins.pop()
        nodes = [helper.make_node(case.op, ins, [f"out{k}" for k in range(case.n_outputs)], name="node0",
                                  **case.attrs)]
    outs = [helper.make_tensor_value_info(f"out{k}", TensorProto.UNDEFINED, None) for k in range(case.n_outputs)]
    graph = helper.make_graph(nodes, case.id, inputs, outs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", case.opset)])
    model.ir_version = 8
    return model, feeds


def reference(case: OpCase, vals) -> list[np.ndarray]:
    from onnx.reference import ReferenceEvaluator

    if case.numpy_ref is not None:
        return [np.asarray(o) for o in case.numpy_ref(*[v for v in vals if v is not None])]
    model, feeds = _reference_model(case, vals)
    return [np.asarray(o) for o in ReferenceEvaluator(model).run(None, feeds)]


def device_model(case: OpCase, vals, expected: list[np.ndarray]):
    """What the devices compile: an onnx model (typed outputs), or a hetero Graph for fused ops."""
    model, feeds = _reference_model(case, vals)
    del model.graph.output[:]
    for k, e in enumerate(expected):
        model.graph.output.append(helper.make_tensor_value_info(f"out{k}", helper.np_dtype_to_tensor_dtype(e.dtype),
                                                                e.shape))
    if case.domain != "hetero":
        return model, feeds
    import hetero
    from hetero.ir import Node

    g = hetero.read_model(model)
    ins = tuple(f"in{i}" if inp is not None else "" for i, inp in enumerate(case.inputs))
    node = Node("fused0", case.op, ins, ("out0",), dict(case.attrs), domain="hetero",
                fused=tuple(n.name for n in g.nodes))
    keep = {k: v for k, v in g.value_info.items() if k in ins or k == "out0"}
    g2 = g.replace(nodes=(node,), value_info=keep, opsets={**dict(g.opsets), "hetero": 1})
    return g2, feeds


def compare(case: OpCase, got: list, expected: list, rtol: float | None = None, atol: float | None = None) -> None:
    assert len(got) == len(expected), f"{case.id}: {len(got)} outputs, expected {len(expected)}"
    for k, (g, e) in enumerate(zip(got, expected)):
        g = np.asarray(g)
        assert g.shape == e.shape, f"{case.id} output {k}: shape {g.shape} != {e.shape}"
        assert g.dtype == e.dtype, f"{case.id} output {k}: dtype {g.dtype} != {e.dtype}"
        if e.dtype.kind in "f":
            np.testing.assert_allclose(g, e, rtol=case.rtol if rtol is None else rtol,
                                       atol=case.atol if atol is None else atol, err_msg=f"{case.id} output {k}")
        else:
            np.testing.assert_array_equal(g, e, err_msg=f"{case.id} output {k}")
