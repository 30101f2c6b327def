"""CPU kernels of reductions and shape/indexing ops, checked against onnx.reference (or numpy) through
hetero.compile_model on tiny single-node models."""
from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

import hetero

rng = np.random.default_rng(1234)


def F(*s, dtype=np.float32):
    return rng.standard_normal(s).astype(dtype)


def _tt(a: np.ndarray) -> int:
    return TensorProto.STRING if a.dtype == object else helper.np_dtype_to_tensor_dtype(a.dtype)


def _model(op, inputs, attrs, opset, n_out, outs=None):
    names = [f"i{k}" if v is not None else "" for k, v in enumerate(inputs)]
    while names and names[-1] == "":
        names.pop()
    onames = [f"o{k}" for k in range(n_out)]
    node = helper.make_node(op, names, onames, **attrs)
    gin = [helper.make_tensor_value_info(n, _tt(v), v.shape) for n, v in zip(names, inputs) if n]
    if outs is None:
        gout = [helper.make_tensor_value_info(o, TensorProto.UNDEFINED, None) for o in onames]
    else:
        gout = [helper.make_tensor_value_info(o, _tt(r), r.shape) for o, r in zip(onames, outs)]
    return helper.make_model(helper.make_graph([node], "g", gin, gout),
                             opset_imports=[helper.make_opsetid("", opset)])


def run_hetero(op, inputs, attrs=None, opset=18, n_out=1, like=None):
    """Run one node on hetero's CPU; ``like`` (expected outputs) gives the graph outputs' types."""
    feeds = {f"i{k}": v for k, v in enumerate(inputs) if v is not None}
    res = hetero.compile_model(_model(op, inputs, attrs or {}, opset, n_out, like), "CPU")(feeds)
    return [np.asarray(res[k]) for k in range(n_out)]


def reference(op, inputs, attrs=None, opset=18, n_out=1):
    feeds = {f"i{k}": v for k, v in enumerate(inputs) if v is not None}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [np.asarray(r) for r in
                ReferenceEvaluator(_model(op, inputs, attrs or {}, opset, n_out)).run(None, feeds)]


def check(op, inputs, attrs=None, opset=18, n_out=1, expected=None, rtol=1e-5, atol=1e-6):
    exp = expected if expected is not None else reference(op, inputs, attrs, opset, n_out)
    exp = [np.asarray(e) for e in exp]
    got = run_hetero(op, inputs, attrs, opset, n_out, like=exp)
    for g, e in zip(got, exp):
        assert g.dtype == e.dtype, (g.dtype, e.dtype)
        assert g.shape == e.shape, (g.shape, e.shape)
        if e.dtype.kind == "f":
            np.testing.assert_allclose(g, e, rtol=rtol, atol=atol, equal_nan=True)
        else:
            np.testing.assert_array_equal(g, e)
    return got


# ---------------------------------------------------------------------------------------------------
# reductions

REDUCE_OPS = ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
              "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"]


@pytest.mark.parametrize("op", REDUCE_OPS)
@pytest.mark.parametrize("keepdims", [0, 1])
def test_reduce_axes_input_and_attribute(op, keepdims):
    x = np.abs(F(2, 3, 4)) + 0.1
    check(op, [x, np.array([-1, 0])], {"keepdims": keepdims}, opset=18)
    check(op, [x], {"keepdims": keepdims}, opset=18)  # all axes
    check(op, [x], {"keepdims": keepdims, "axes": [1]}, opset=11)


@pytest.mark.parametrize("op", REDUCE_OPS)
def test_reduce_noop_and_empty(op):
    x = np.abs(F(2, 3)) + 0.5
    # noop_with_empty_axes: each element reduced over a singleton set
    check(op, [x, np.array([], np.int64)], {"noop_with_empty_axes": 1}, opset=18)
    empty = np.zeros((2, 0, 3), np.float32)
    check(op, [empty, np.array([1])], {"keepdims": 0}, opset=18)


@pytest.mark.parametrize("op,sel", [("ArgMax", 0), ("ArgMax", 1), ("ArgMin", 0), ("ArgMin", 1)])
def test_argmax_argmin_ties(op, sel):
    x = rng.integers(0, 3, (3, 4, 5)).astype(np.int32)
    for kd in (0, 1):
        check(op, [x], {"axis": -2, "keepdims": kd, "select_last_index": sel}, opset=13)


@pytest.mark.parametrize("op", ["CumSum", "CumProd"])
@pytest.mark.parametrize("exclusive,reverse", [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_cumulative(op, exclusive, reverse):
    x = F(3, 4)
    fn = np.cumsum if op == "CumSum" else np.cumprod
    ident = 0 if op == "CumSum" else 1
    y = x[:, ::-1] if reverse else x
    r = fn(y, axis=1)
    if exclusive:
        r = np.concatenate([np.full((3, 1), ident, np.float32), r[:, :-1]], axis=1)
    r = r[:, ::-1] if reverse else r
    check(op, [x, np.array(-1)], {"exclusive": exclusive, "reverse": reverse},
          opset=14 if op == "CumSum" else 26, expected=[r.astype(np.float32)])


@pytest.mark.parametrize("largest", [0, 1])
def test_topk_ties_lower_index_first(largest):
    x = np.array([[3, 1, 3, 2, 3, 1], [0, 0, 0, 0, 0, 0]], np.float32)
    v, i = check("TopK", [x, np.array([4])], {"largest": largest}, opset=11, n_out=2)
    if largest:
        np.testing.assert_array_equal(i[0], [0, 2, 4, 3])
    else:
        np.testing.assert_array_equal(i[0], [1, 5, 3, 0])
    np.testing.assert_array_equal(i[1], [0, 1, 2, 3])
    check("TopK", [x.T.copy(), np.array([0])], {"axis": 0}, opset=11, n_out=2)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax", "Hardmax"])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_softmax_family_opset_semantics(op, axis):
    x = F(2, 3, 4)
    check(op, [x], {"axis": axis}, opset=13)
    # opset < 13: coerce to 2-D at `axis`, normalise over the flattened tail
    a = axis % 3
    x2 = x.reshape(int(np.prod(x.shape[:a])), -1)
    if op == "Hardmax":
        e = np.zeros_like(x2)
        e[np.arange(x2.shape[0]), x2.argmax(1)] = 1
    else:
        s = x2 - x2.max(1, keepdims=True)
        e = s - np.log(np.exp(s).sum(1, keepdims=True)) if op == "LogSoftmax" else \
            np.exp(s) / np.exp(s).sum(1, keepdims=True)
    check(op, [x], {"axis": axis}, opset=11, expected=[e.reshape(x.shape).astype(np.float32)])


def test_lp_normalization_and_det_einsum():
    x = np.array([[1, -2, 3], [-4, 5, 6], [0, 0, 0]], np.float32)
    n1 = np.abs(x).sum(1, keepdims=True)
    e = np.where(n1 == 0, 0, x / np.where(n1 == 0, 1, n1)).astype(np.float32)
    check("LpNormalization", [x], {"axis": 1, "p": 1}, opset=1, expected=[e])
    check("LpNormalization", [x], {"axis": 0, "p": 2}, opset=1)
    check("Det", [F(2, 3, 3)], opset=11, rtol=1e-4, atol=1e-5)
    check("Einsum", [F(2, 3), F(3, 4)], {"equation": "ij,jk->ik"}, opset=12, rtol=1e-5, atol=1e-5)
    check("Einsum", [F(2, 3, 3)], {"equation": "...ii->...i"}, opset=12)


# ---------------------------------------------------------------------------------------------------
# shape ops


def test_reshape_flatten_squeeze_unsqueeze_transpose():
    x = F(2, 3, 4)
    check("Reshape", [x, np.array([0, -1])], opset=14)
    check("Reshape", [x, np.array([4, 0, 2])], opset=14)
    check("Reshape", [np.zeros((0, 3), np.float32), np.array([3, 0])], {"allowzero": 1}, opset=14)
    for ax in (0, 2, 3, -1):
        check("Flatten", [x], {"axis": ax}, opset=13)
    check("Squeeze", [F(1, 3, 1)], opset=13)
    check("Squeeze", [F(1, 3, 1), np.array([-1])], opset=13)
    check("Squeeze", [F(1, 3, 1)], {"axes": [0]}, opset=11)
    check("Unsqueeze", [F(3, 4), np.array([-1, 0])], opset=13)
    check("Unsqueeze", [F(3, 4)], {"axes": [1, 3]}, opset=11)
    check("Transpose", [x], opset=13)
    check("Transpose", [x], {"perm": [1, 2, 0]}, opset=13)


def test_reshape_is_a_view():
    from hetero.devices.cpu.kernels import shape as k

    x = F(2, 3, 4)
    assert np.shares_memory(k.reshape(x, np.array([6, -1])), x)
    assert np.shares_memory(k.slice_(x, np.array([1]), np.array([3]), np.array([2])), x)
    assert np.shares_memory(k.transpose(x, perm=[2, 0, 1]), x)
    assert np.shares_memory(k.gather(x, np.array(1), axis=1), x)


def test_concat_split():
    check("Concat", [F(2, 3), F(2, 0), F(2, 1)], {"axis": -1}, opset=13)
    check("Concat", [np.array(["a", "b"], object), np.array(["c"], object)], {"axis": 0}, opset=13)
    check("Split", [F(7, 2)], {"num_outputs": 3}, opset=18, n_out=3)  # uneven last chunk
    check("Split", [F(6, 2)], {"axis": 0}, opset=18, n_out=3)
    check("Split", [F(6, 2), np.array([1, 5])], {"axis": 0}, opset=13, n_out=2)
    check("Split", [F(6, 2)], {"axis": 0, "split": [2, 4]}, opset=11, n_out=2)


@pytest.mark.parametrize("st,en,ax,sp", [
    ([1], [4], [0], [1]), ([-1], [-1000], [1], [-1]), ([4], [0], [2], [-2]),
    ([0, 1], [2**63 - 1, -1], [2, 0], [3, 1]), ([-100], [100], [0], [1]), ([10], [-10], [2], [-1]),
    ([0], [0], [0], [1]), ([5], [-8], [1], [-3])])
def test_slice(st, en, ax, sp):
    x = F(5, 6, 7)
    check("Slice", [x, np.array(st), np.array(en), np.array(ax), np.array(sp)], opset=13)


def test_slice_v1_attributes():
    check("Slice", [F(5, 6, 7)], {"starts": [1, 0], "ends": [3, 100], "axes": [0, 2]}, opset=9)


def test_gather_family():
    x = F(5, 6, 7)
    check("Gather", [x, np.array([[0, -1], [2, 1]])], {"axis": 1}, opset=13)
    check("Gather", [x, np.array(-2)], {"axis": 2}, opset=13)
    check("GatherElements", [F(3, 4), np.array([[0, -1, 2, 1]])], {"axis": 0}, opset=13)
    d = F(2, 3, 4, 5)
    check("GatherND", [d, np.array([[0, 1], [1, -1]])], opset=13)
    check("GatherND", [d, np.array([[[1, 2]], [[0, 3]]])], {"batch_dims": 1}, opset=13)
    check("GatherND", [d, rng.integers(0, 3, (2, 3, 2, 1))], {"batch_dims": 2}, opset=13)


@pytest.mark.parametrize("red", ["none", "add", "mul", "max", "min"])
def test_scatter_reductions(red):
    check("ScatterElements", [F(3, 4), np.array([[0, 1, -1, 0], [0, 1, 1, 0]]), F(2, 4)],
          {"axis": 0, "reduction": red}, opset=18)
    check("ScatterND", [F(3, 4, 2), np.array([[0, 1], [2, 3], [0, 1]]), F(3, 2)], {"reduction": red}, opset=18)
    check("ScatterND", [F(3, 4, 2), np.array([[0], [-1]]), F(2, 4, 2)], {"reduction": red}, opset=18)


def test_scatter_deprecated_and_tensor_scatter():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    e = x.copy()
    e[0, 1] = e[0, 0] = e[1, 2] = e[1, 3] = -1
    check("Scatter", [x, np.array([[1, 0], [2, 3]]), -np.ones((2, 2), np.float32)], {"axis": 1}, opset=10,
          expected=[e])
    if "TensorScatter" in {s.name for s in onnx.defs.get_all_schemas()}:
        check("TensorScatter", [F(2, 3, 8, 4), F(2, 3, 3, 4), np.array([1, 5])], opset=24)
        check("TensorScatter", [F(2, 3, 8, 4), F(2, 3, 3, 4), np.array([1, 6])], {"mode": "circular"},
              opset=24)


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
def test_pad_modes(mode):
    check("Pad", [F(3, 4), np.array([1, 2, 2, 1])], {"mode": mode}, opset=19)
    check("Pad", [F(2, 3, 4), np.array([1, 3]), None, np.array([-1])], {"mode": mode}, opset=19)
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    exp = np.pad(x[:, 1:], [(2, 1), (0, 2)], mode=mode)  # negative pads crop
    check("Pad", [x, np.array([2, -1, 1, 2])], {"mode": mode}, opset=19, expected=[exp])


def test_pad_constant_value_and_v2():
    check("Pad", [rng.integers(0, 9, (3, 4)), np.array([1, 1, 1, 1]), np.array(7)], opset=19)
    x = F(3, 4)
    check("Pad", [x], {"pads": [1, 1, 1, 1], "value": 2.0}, opset=2,
          expected=[np.pad(x, 1, constant_values=2.0)])


def test_tile_expand_shape_size_range():
    check("Tile", [F(2, 3), np.array([2, 1])], opset=13)
    check("Expand", [F(3, 1), np.array([2, 1, 4])], opset=13)
    x = F(2, 3, 4)
    for a in ({"start": 1}, {"start": -1}, {"start": 0, "end": -1}, {"start": -10, "end": 10}):
        check("Shape", [x], a, opset=15)
    check("Size", [x], opset=13)
    check("Range", [np.array(10), np.array(1), np.array(-3)], opset=11)
    check("Range", [np.array(0.5, np.float32), np.array(3.1, np.float32), np.array(0.7, np.float32)], opset=11)


def test_onehot_nonzero_unique():
    check("OneHot", [np.array([[1, -1], [5, 0]]), np.array(4), np.array([0, 1], np.float32)], {"axis": 0},
          opset=11)
    check("NonZero", [rng.integers(-1, 2, (3, 4))], opset=13)
    x = np.array([2, 1, 1, 3, 4, 3])
    for s in (0, 1):
        check("Unique", [x], {"sorted": s}, opset=11, n_out=4)
    xu = np.array([[1, 3, 3], [2, 1, 1], [1, 3, 3]], np.float32)
    check("Unique", [xu], {"axis": 0}, opset=11, n_out=4)
    # (onnx.reference ignores a negative axis here; onnxruntime agrees with this)
    check("Unique", [xu], {"sorted": 0, "axis": -1}, opset=11, n_out=4,
          expected=[np.array([[1, 3], [2, 1], [1, 3]], np.float32), np.array([0, 1]), np.array([0, 1, 1]),
                    np.array([1, 2])])


def test_depth_space_compress_trilu_eyelike():
    for m in ("DCR", "CRD"):
        check("DepthToSpace", [F(2, 8, 2, 3)], {"blocksize": 2, "mode": m}, opset=13)
    check("SpaceToDepth", [F(2, 3, 4, 6)], {"blocksize": 2}, opset=13)
    check("Compress", [F(3, 4), np.array([True, False, True])], {"axis": 0}, opset=11)
    check("Compress", [F(3, 4), np.array([1, 0, 1, 1, 0], bool)], opset=11)
    for up in (0, 1):
        check("Trilu", [F(2, 3, 5), np.array(-1)], {"upper": up}, opset=14)
        check("Trilu", [rng.integers(0, 9, (4, 3))], {"upper": up}, opset=14)
    check("EyeLike", [F(3, 4)], {"k": 1}, opset=9)
    check("EyeLike", [F(3, 4)], {"k": -1, "dtype": TensorProto.INT32}, opset=9)


def test_constants():
    check("ConstantOfShape", [np.array([2, 3])], opset=9)
    check("ConstantOfShape", [np.array([], np.int64)], {"value": helper.make_tensor("v", TensorProto.INT32, [1], [7])},
          opset=9)
    check("Constant", [], {"value_floats": [1.0, 2.0]}, opset=13)
    check("Constant", [], {"value_int": 3}, opset=13)
    sp = helper.make_sparse_tensor(helper.make_tensor("v", TensorProto.INT64, [2], [5, 6]),
                                   helper.make_tensor("i", TensorProto.INT64, [2], [1, 3]), [4])
    check("Constant", [], {"sparse_value": sp}, opset=13, expected=[np.array([0, 5, 0, 6])])
    check("Constant", [], {"value_strings": ["ab", "c"]}, opset=13,
          expected=[np.array(["ab", "c"], dtype=object)])


def test_reverse_sequence_center_crop_pad():
    check("ReverseSequence", [F(4, 3, 2), np.array([4, 1, 2])], {"time_axis": 0, "batch_axis": 1}, opset=10)
    check("ReverseSequence", [F(3, 5), np.array([5, 0, 3])], {"time_axis": 1, "batch_axis": 0}, opset=10)
    check("CenterCropPad", [F(5, 6, 3), np.array([3, 9])], {"axes": [0, 1]}, opset=18)
    check("CenterCropPad", [F(5, 6, 3), np.array([2, 4])], {"axes": [-1, -3]}, opset=18)


def test_bad_inputs_raise():
    with pytest.raises(Exception, match="Reshape"):
        run_hetero("Reshape", [F(2, 3), np.array([4, -1])], opset=14,
                   like=[np.zeros((4, 2), np.float32)])
