"""Compile-time graph passes (hetero.transforms): exact resulting structure per pass on small fixture
graphs, and outputs equal to the un-optimized model's (onnx.reference.ReferenceEvaluator on the
original ONNX model vs hetero.compile_model on CPU, which runs the passes).

Models use opset 15 by default: onnx.reference's BatchNormalization-9..13 applies its default momentum
as if training (batch statistics), so it is no oracle for inference BatchNormalization below opset 14."""
from __future__ import annotations

import collections
import os
import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import hetero
from hetero.onnx_import import read_model
from hetero.transforms import (PASSES, fold_batchnorm, fold_constants, fuse_activations, optimize,
                               remove_dead_nodes, remove_identity)

F32 = TensorProto.FLOAT
rng = np.random.default_rng(11)
LIGHT = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")


# ---- helpers ----------------------------------------------------------------------------------

def rand(*shape, lo=None, hi=None):
    if lo is not None:
        return rng.uniform(lo, hi, shape).astype(np.float32)
    return rng.standard_normal(shape).astype(np.float32)


def vi(name, shape, elem=F32):
    return helper.make_tensor_value_info(name, elem, shape)


def model(nodes, inputs, outputs, inits=None, opset=15):
    g = helper.make_graph(nodes, "g", inputs, outputs,
                          [numpy_helper.from_array(v, k) for k, v in (inits or {}).items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(m)
    return m


def ops(graph):
    return [n.op_type for n in graph.nodes]


def names(graph):
    return [n.name for n in graph.nodes]


def same_outputs(m, feeds, rtol=1e-5, atol=1e-5):
    """hetero (optimizing) on CPU gives the reference outputs of the original model."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = ReferenceEvaluator(m).run(None, feeds)
    got = hetero.compile_model(m, "CPU")(feeds)
    assert len(got) == len(want)
    for k, (g, w) in enumerate(zip(got.to_tuple(), want)):
        g = np.asarray(g)
        assert g.dtype == w.dtype and g.shape == w.shape, f"output {k}: {g.dtype}{g.shape} vs {w.dtype}{w.shape}"
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)


def structure(graph):
    return [(n.op_type, tuple(n.inputs), tuple(n.outputs)) for n in graph.nodes]


# ---- constant folding ---------------------------------------------------------------------------

#   x f32[2,3,4] ──────────────────────────────────────────────┐
#    └─Shape─▶ s ─Gather(0)─▶ b ─Unsqueeze(0)─▶ bu ─Concat([-1])─▶ shp ─Reshape(x, shp)─▶ y
#  expected: one node, Reshape(x, shp) with shp = [2, -1] an initializer
def flatten_model():
    nodes = [helper.make_node("Shape", ["x"], ["s"], name="shape"),
             helper.make_node("Gather", ["s", "zero"], ["b"], name="gather", axis=0),
             helper.make_node("Unsqueeze", ["b", "axes0"], ["bu"], name="unsq"),
             helper.make_node("Concat", ["bu", "minus1"], ["shp"], name="concat", axis=0),
             helper.make_node("Reshape", ["x", "shp"], ["y"], name="reshape")]
    inits = {"zero": np.array(0, np.int64), "axes0": np.array([0], np.int64),
             "minus1": np.array([-1], np.int64)}
    return model(nodes, [vi("x", [2, 3, 4])], [vi("y", [2, 12])], inits)


def test_fold_shape_chain_to_constant_reshape():
    g = optimize(read_model(flatten_model()))
    assert structure(g) == [("Reshape", ("x", "shp"), ("y",))]
    np.testing.assert_array_equal(g.initializers["shp"], [2, -1])
    assert g.initializers["shp"].dtype == np.int64
    assert set(g.initializers) == {"shp"}  # zero / axes0 / minus1 are dead now
    assert [n for n, _ in g.optimized_out] == ["shape", "gather", "unsq", "concat"]
    same_outputs(flatten_model(), {"x": rand(2, 3, 4)})


#   x f32["N",3] ─Shape─▶ s ─Reshape(x... (symbolic batch: Shape(x) must NOT fold)
def test_shape_of_symbolic_dim_is_not_folded():
    nodes = [helper.make_node("Shape", ["x"], ["s"], name="shape"),
             helper.make_node("Reshape", ["x", "s"], ["y"], name="reshape")]
    m = model(nodes, [vi("x", ["N", 3])], [vi("y", ["N", 3])])
    g = optimize(read_model(m))
    assert ops(g) == ["Shape", "Reshape"]
    same_outputs(m, {"x": rand(5, 3)})


#   Constant(c) ─┐
#   x ───────────Add─▶ y          Constant becomes an initializer: [Add]
#   RandomNormal ─▶ r ─Add(y)─▶ z   random: never folded
#   ConstantOfShape([5000,1000]) (20 MB) ─▶ big ─ReduceSum─▶ t   too big: not folded
#   ConstantOfShape([2,3]) ─▶ small ─Mul(x)─▶ u                  folded
def test_fold_constant_nodes_random_and_size_limit():
    big_shape = np.array([5000, 1000], np.int64)
    nodes = [helper.make_node("Constant", [], ["c"], name="const", value=numpy_helper.from_array(rand(2, 3))),
             helper.make_node("Add", ["x", "c"], ["y"], name="add"),
             helper.make_node("RandomNormal", [], ["r"], name="rand", shape=[2, 3]),
             helper.make_node("Add", ["y", "r"], ["z"], name="add_r"),
             helper.make_node("ConstantOfShape", ["big_shape"], ["big"], name="cos_big"),
             helper.make_node("ReduceSum", ["big"], ["t"], name="sum_big", keepdims=0),
             helper.make_node("ConstantOfShape", ["small_shape"], ["small"], name="cos_small",
                              value=numpy_helper.from_array(np.array([2.5], np.float32))),
             helper.make_node("Mul", ["x", "small"], ["u"], name="mul")]
    m = model(nodes, [vi("x", [2, 3])], [vi("z", [2, 3]), vi("t", []), vi("u", [2, 3])],
              {"big_shape": big_shape, "small_shape": np.array([2, 3], np.int64)})
    g = optimize(read_model(m))
    assert names(g) == ["add", "rand", "add_r", "cos_big", "sum_big", "mul"]
    assert dict(g.optimized_out) == {"const": "Constant", "cos_small": "ConstantOfShape"}
    np.testing.assert_array_equal(g.initializers["small"], np.full((2, 3), 2.5, np.float32))
    assert "big" not in g.initializers
    x = rand(2, 3)
    out = hetero.compile_model(m, "CPU")({"x": x})
    assert float(out["t"]) == 0.0
    np.testing.assert_allclose(out["u"], x * 2.5)


#   ConstantOfShape([1000,5000]) (20 MB) ─▶ w ─MatMul(x, w)─▶ y      read only as a weight: folded
#   ConstantOfShape([1000,5000]) (20 MB) ─▶ v ─┬MatMul(x, v)─▶ p
#                                              └ReduceSum───▶ q        also read as data: not folded
def test_fold_large_fill_read_only_as_weight():
    shp = np.array([1000, 5000], np.int64)
    nodes = [helper.make_node("ConstantOfShape", ["shp"], ["w"], name="cos_w",
                              value=numpy_helper.from_array(np.array([0.5], np.float32))),
             helper.make_node("MatMul", ["x", "w"], ["y"], name="mm"),
             helper.make_node("ConstantOfShape", ["shp"], ["v"], name="cos_v",
                              value=numpy_helper.from_array(np.array([0.25], np.float32))),
             helper.make_node("MatMul", ["x", "v"], ["p"], name="mm_v"),
             helper.make_node("ReduceSum", ["v"], ["q"], name="sum_v", keepdims=0)]
    m = model(nodes, [vi("x", [2, 1000])], [vi("y", [2, 5000]), vi("p", [2, 5000]), vi("q", [])],
              {"shp": shp})
    g = optimize(read_model(m))
    assert names(g) == ["mm", "cos_v", "mm_v", "sum_v"]
    assert dict(g.optimized_out) == {"cos_w": "ConstantOfShape"}
    np.testing.assert_array_equal(g.initializers["w"], np.full((1000, 5000), 0.5, np.float32))
    x = rand(2, 1000)
    out = hetero.compile_model(m, "CPU")({"x": x})
    np.testing.assert_allclose(out["y"], np.repeat(x.sum(1, keepdims=True) * 0.5, 5000, 1), rtol=1e-4)
    assert float(out["q"]) == 0.25 * 5e6


#   Constant ─▶ y (graph output)      a graph output stays produced by a node
def test_constant_graph_output_is_kept():
    m = model([helper.make_node("Constant", [], ["y"], name="c", value_float=3.0)], [], [vi("y", [])])
    g = optimize(read_model(m))
    assert ops(g) == ["Constant"] and g.optimized_out == ()


# ---- Identity / Dropout ----------------------------------------------------------------------------

#   x ─Relu─▶ a ─Identity─▶ b ─Sigmoid─▶ y      =>   Relu(x)->a, Sigmoid(a)->y
def test_identity_in_the_middle():
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="relu"),
             helper.make_node("Identity", ["a"], ["b"], name="id"),
             helper.make_node("Sigmoid", ["b"], ["y"], name="sig")]
    m = model(nodes, [vi("x", [4])], [vi("y", [4])])
    g = optimize(read_model(m))
    assert structure(g) == [("Relu", ("x",), ("a",)), ("Sigmoid", ("a",), ("y",))]
    assert g.optimized_out == (("id", "Identity"),)
    same_outputs(m, {"x": rand(4)})


#   x ─Relu─▶ a ─Identity─▶ b ─Dropout─▶ y (graph output)   =>   Relu(x) -> y
def test_identity_and_dropout_feeding_graph_output():
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="relu"),
             helper.make_node("Identity", ["a"], ["b"], name="id"),
             helper.make_node("Dropout", ["b", "ratio"], ["y"], name="drop")]
    m = model(nodes, [vi("x", [4])], [vi("y", [4])], {"ratio": np.array(0.3, np.float32)})
    g = optimize(read_model(m))
    assert structure(g) == [("Relu", ("x",), ("y",))]
    assert g.output_names == ("y",)
    assert dict(g.optimized_out) == {"id": "Identity", "drop": "Dropout"}
    same_outputs(m, {"x": rand(4)})


#   x ─Relu─▶ a ─Identity─▶ y (graph output)
#             └─Neg─▶ z (graph output)          Relu writes y, and Neg reads y
def test_identity_output_rename_updates_other_readers():
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="relu"),
             helper.make_node("Identity", ["a"], ["y"], name="id"),
             helper.make_node("Neg", ["a"], ["z"], name="neg")]
    m = model(nodes, [vi("x", [4])], [vi("y", [4]), vi("z", [4])])
    g = optimize(read_model(m))
    assert structure(g) == [("Relu", ("x",), ("y",)), ("Neg", ("y",), ("z",))]
    same_outputs(m, {"x": rand(4)})


#   x ─Identity─▶ y            input straight to output: kept (no producer to rename)
#   x ─Relu─▶ a (output) ─Identity─▶ b (output)     both are outputs: kept
def test_identity_kept_between_graph_input_or_outputs():
    m1 = model([helper.make_node("Identity", ["x"], ["y"], name="id")], [vi("x", [3])], [vi("y", [3])])
    assert ops(optimize(read_model(m1))) == ["Identity"]
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="relu"),
             helper.make_node("Identity", ["a"], ["b"], name="id")]
    m2 = model(nodes, [vi("x", [3])], [vi("a", [3]), vi("b", [3])])
    g = optimize(read_model(m2))
    assert structure(g) == [("Relu", ("x",), ("a",)), ("Identity", ("a",), ("b",))]
    same_outputs(m2, {"x": rand(3)})


#   x ─Dropout(ratio, training_mode=t)─▶ y     t a graph input: training possible, kept
#   x ─Dropout─▶ y, mask (graph output)       mask used: kept
#   x ─Dropout(opset 7, inference)─▶ y ─Relu─▶ z   removed
def test_dropout_rules():
    nodes = [helper.make_node("Dropout", ["x", "ratio", "t"], ["y"], name="drop")]
    m = model(nodes, [vi("x", [3]), vi("t", [], TensorProto.BOOL)], [vi("y", [3])],
              {"ratio": np.array(0.5, np.float32)})
    assert ops(optimize(read_model(m))) == ["Dropout"]
    nodes = [helper.make_node("Dropout", ["x"], ["y", "mask"], name="drop"),
             helper.make_node("Relu", ["y"], ["z"], name="relu")]
    m = model(nodes, [vi("x", [3])], [vi("z", [3]), vi("mask", [3], TensorProto.BOOL)])
    assert ops(optimize(read_model(m))) == ["Dropout", "Relu"]
    nodes = [helper.make_node("Dropout", ["x"], ["y"], name="drop", ratio=0.4),
             helper.make_node("Relu", ["y"], ["z"], name="relu")]
    m = model(nodes, [vi("x", [3])], [vi("z", [3])], opset=7)
    g = optimize(read_model(m))
    assert structure(g) == [("Relu", ("x",), ("z",))]
    same_outputs(m, {"x": rand(3)})


#   x ─Relu─▶ a ─Identity─▶ b ──────────────┐ (read inside the If branches)
#   cond ─If{then: Add(b, one) ; else: Neg(b)}─▶ y
#   b is read by a subgraph: its name is baked in, so the Identity stays
def test_identity_read_by_subgraph_is_kept():
    then_g = helper.make_graph([helper.make_node("Add", ["b", "one"], ["t_out"])], "then", [],
                               [vi("t_out", [3])])
    else_g = helper.make_graph([helper.make_node("Neg", ["b"], ["e_out"])], "else", [], [vi("e_out", [3])])
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="relu"),
             helper.make_node("Identity", ["a"], ["b"], name="id"),
             helper.make_node("If", ["cond"], ["y"], name="if", then_branch=then_g, else_branch=else_g)]
    m = model(nodes, [vi("x", [3]), vi("cond", [], TensorProto.BOOL)], [vi("y", [3])],
              {"one": np.ones(3, np.float32)})
    g = optimize(read_model(m))
    assert ops(g) == ["Relu", "Identity", "If"]
    x = rand(3)
    same_outputs(m, {"x": x, "cond": np.array(True)})
    same_outputs(m, {"x": x, "cond": np.array(False)})


# ---- BatchNormalization folding ------------------------------------------------------------------

def bn_inits(c, prefix="bn"):
    return {f"{prefix}_scale": rand(c, lo=0.5, hi=2.0), f"{prefix}_bias": rand(c),
            f"{prefix}_mean": rand(c), f"{prefix}_var": rand(c, lo=0.2, hi=3.0)}


def bn_node(x, y, name="bn", prefix="bn", eps=1e-3):
    return helper.make_node("BatchNormalization", [x, f"{prefix}_scale", f"{prefix}_bias", f"{prefix}_mean",
                                                   f"{prefix}_var"], [y], name=name, epsilon=eps)


#   x f32[1,3,8,8] ─Conv(W[4,3,3,3], B[4])─▶ c ─BatchNormalization─▶ y
#   expected: Conv(x, W', B') -> y, W' = W * s, B' = (B - mean) * s + beta
def test_batchnorm_folds_into_conv_numerics():
    W, B = rand(4, 3, 3, 3), rand(4)
    inits = {"W": W, "B": B, **bn_inits(4)}
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], name="conv", pads=[1, 1, 1, 1]), bn_node("c", "y")]
    m = model(nodes, [vi("x", [1, 3, 8, 8])], [vi("y", [1, 4, 8, 8])], inits)
    g = fold_batchnorm(read_model(m))
    (conv,) = g.nodes
    assert (conv.name, conv.op_type, conv.outputs, conv.fused) == ("conv", "Conv", ("y",), ("bn",))
    assert g.optimized_out == (("bn", "BatchNormalization"),)
    w2, b2 = g.initializers[conv.inputs[1]], g.initializers[conv.inputs[2]]
    s = inits["bn_scale"].astype(np.float64) / np.sqrt(inits["bn_var"].astype(np.float64) + 1e-3)
    assert w2.dtype == np.float32 and b2.dtype == np.float32
    np.testing.assert_allclose(w2, W * s[:, None, None, None], rtol=1e-6)
    np.testing.assert_allclose(b2, (B - inits["bn_mean"]) * s + inits["bn_bias"], rtol=1e-5, atol=1e-6)
    assert np.array_equal(g.initializers["W"], W)  # the original weights are not modified in place
    same_outputs(m, {"x": rand(1, 3, 8, 8)}, rtol=1e-4, atol=1e-5)


#   x ─Conv(no bias)─▶ c ─BN─▶ n ─Mul(k[1,4,1,1])─▶ m ─Add(t[4,1,1])─▶ y
#   the whole per-channel affine chain folds: [Conv] with fused (bn, mul, add)
def test_conv_bn_mul_add_chain_folds():
    inits = {"W": rand(4, 3, 1, 1), "k": rand(1, 4, 1, 1), "t": rand(4, 1, 1), **bn_inits(4)}
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], name="conv"), bn_node("c", "n"),
             helper.make_node("Mul", ["n", "k"], ["m"], name="mul"),
             helper.make_node("Add", ["t", "m"], ["y"], name="add")]
    m = model(nodes, [vi("x", [2, 3, 5, 5])], [vi("y", [2, 4, 5, 5])], inits)
    g = optimize(read_model(m))
    assert ops(g) == ["Conv"] and g.nodes[0].fused == ("bn", "mul", "add")
    same_outputs(m, {"x": rand(2, 3, 5, 5)}, rtol=1e-4, atol=1e-5)


#   x ─MaxPool─▶ p ─BN─▶ n ─Mul(k)─▶ m ─Relu─▶ y      (DenseNet's pre-activation block)
#   BN absorbs the Mul, then the Relu fuses: [MaxPool, FusedBatchNormalization(activation=Relu)]
def test_bn_absorbs_following_scale():
    inits = {"k": rand(3, 1, 1), **bn_inits(3)}
    nodes = [helper.make_node("MaxPool", ["x"], ["p"], name="pool", kernel_shape=[2, 2]), bn_node("p", "n"),
             helper.make_node("Mul", ["n", "k"], ["m"], name="mul"),
             helper.make_node("Relu", ["m"], ["y"], name="relu")]
    m = model(nodes, [vi("x", [1, 3, 6, 6])], [vi("y", [1, 3, 5, 5])], inits)
    assert ops(fold_batchnorm(read_model(m))) == ["MaxPool", "BatchNormalization", "Relu"]
    g = optimize(read_model(m))
    assert ops(g) == ["MaxPool", "FusedBatchNormalization"]
    bn = g.nodes[1]
    assert (bn.name, bn.domain, bn.fused, bn.outputs) == ("bn", "hetero", ("mul", "relu"), ("y",))
    assert bn.attrs["activation"] == "Relu" and bn.attrs["epsilon"] == pytest.approx(1e-3)
    assert [x for x, _ in g.optimized_out] == ["mul", "relu"]
    same_outputs(m, {"x": rand(1, 3, 6, 6)}, rtol=1e-4, atol=1e-5)


#   x ─BN(training_mode=1)─▶ n ─Relu─▶ y       training BN: nothing fuses
#   x ─BN─▶ n ─Relu─▶ y, n also a graph output: nothing fuses
def test_bn_activation_not_fused_in_training_or_when_shared():
    inits = bn_inits(3)
    train = helper.make_node("BatchNormalization", ["x", "bn_scale", "bn_bias", "bn_mean", "bn_var"], ["n"],
                             name="bn", training_mode=1)
    m = model([train, helper.make_node("Relu", ["n"], ["y"], name="relu")], [vi("x", [2, 3, 4])],
              [vi("y", [2, 3, 4])], inits)
    assert ops(optimize(read_model(m))) == ["BatchNormalization", "Relu"]
    m = model([bn_node("x", "n"), helper.make_node("Relu", ["n"], ["y"], name="relu")], [vi("x", [2, 3, 4])],
              [vi("y", [2, 3, 4]), vi("n", [2, 3, 4])], inits)
    assert ops(optimize(read_model(m))) == ["BatchNormalization", "Relu"]


#   a f32[5,6] ─Gemm(B, C, transB)─▶ g ─BN─▶ y      for transB in (0, 1): folds into [Gemm]
@pytest.mark.parametrize("trans_b", [0, 1])
def test_batchnorm_folds_into_gemm(trans_b):
    Bm = rand(4, 6) if trans_b else rand(6, 4)
    inits = {"Bm": Bm, "C": rand(4), **bn_inits(4)}
    nodes = [helper.make_node("Gemm", ["a", "Bm", "C"], ["g"], name="gemm", transB=trans_b, alpha=0.5, beta=2.0),
             bn_node("g", "y")]
    m = model(nodes, [vi("a", [5, 6])], [vi("y", [5, 4])], inits)
    g = fold_batchnorm(read_model(m))
    assert ops(g) == ["Gemm"] and g.nodes[0].attrs["beta"] == 1.0 and g.nodes[0].attrs["transB"] == trans_b
    same_outputs(m, {"a": rand(5, 6)}, rtol=1e-4, atol=1e-5)


#   x ─Conv─▶ c ─BN─▶ y
#             └──────Relu─▶ z       c has two readers: nothing folds
def test_batchnorm_not_folded_when_conv_output_shared():
    inits = {"W": rand(2, 1, 1, 1), **bn_inits(2)}
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], name="conv"), bn_node("c", "y"),
             helper.make_node("Relu", ["c"], ["z"], name="relu")]
    m = model(nodes, [vi("x", [1, 1, 2, 2])], [vi("y", [1, 2, 2, 2]), vi("z", [1, 2, 2, 2])], inits)
    assert ops(fold_batchnorm(read_model(m))) == ["Conv", "BatchNormalization", "Relu"]
    assert ops(optimize(read_model(m))) == ["Conv", "BatchNormalization", "Relu"]


# ---- activation / residual fusion -----------------------------------------------------------------

#   x f32[1,3,8,8] ─Conv─▶ c ─Relu─▶ y     =>   FusedConv(x, W, B; activation=Relu) -> y
def test_conv_relu_fusion():
    inits = {"W": rand(4, 3, 3, 3), "B": rand(4)}
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"], name="relu")]
    m = model(nodes, [vi("x", [1, 3, 8, 8])], [vi("y", [1, 4, 8, 8])], inits)
    g = optimize(read_model(m))
    (n,) = g.nodes
    assert (n.name, n.domain, n.op_type, n.inputs, n.outputs) == \
        ("conv", "hetero", "FusedConv", ("x", "W", "B"), ("y",))
    assert n.attrs["activation"] == "Relu" and n.attrs["activation_params"] == [] and n.attrs["pads"] == [1, 1, 1, 1]
    assert n.fused == ("relu",) and g.optimized_out == (("relu", "Relu"),)
    assert g.opsets["hetero"] == 1
    same_outputs(m, {"x": rand(1, 3, 8, 8)}, rtol=1e-4, atol=1e-5)


#   x ─Conv(W1)─▶ r ──────────────┐           (shortcut, same shape as c)
#   x ─Conv(W2)─▶ c ─Add(c, r)─▶ s ─Relu─▶ y
#   => Conv(x, W1) -> r ; FusedConv(x, W2, "", r; Relu) -> y     (the later conv takes the Add)
def test_conv_add_relu_residual_fusion():
    inits = {"W1": rand(4, 3, 1, 1), "W2": rand(4, 3, 3, 3)}
    nodes = [helper.make_node("Conv", ["x", "W1"], ["r"], name="short"),
             helper.make_node("Conv", ["x", "W2"], ["c"], name="main", pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c", "r"], ["s"], name="add"),
             helper.make_node("Relu", ["s"], ["y"], name="relu")]
    m = model(nodes, [vi("x", [1, 3, 6, 6])], [vi("y", [1, 4, 6, 6])], inits)
    g = optimize(read_model(m))
    assert structure(g) == [("Conv", ("x", "W1"), ("r",)), ("FusedConv", ("x", "W2", "", "r"), ("y",))]
    assert g.nodes[1].attrs["activation"] == "Relu" and g.nodes[1].fused == ("add", "relu")
    assert dict(g.optimized_out) == {"add": "Add", "relu": "Relu"}
    same_outputs(m, {"x": rand(1, 3, 6, 6)}, rtol=1e-4, atol=1e-5)


#   x ─Conv─▶ c ─Add(c, bias[1,4,1,1])─▶ s ─Relu─▶ y    Add broadcasts: no residual fusion, but ...
#   the per-channel Add folds into the Conv bias, then Conv+Relu fuses: [FusedConv] (3 inputs)
#   x ─Conv─▶ c ─Sum(c, z f32[1,4,3,3] graph input)─▶ y    no activation: FusedConv(x, W, "", z)
def test_residual_needs_equal_shapes():
    inits = {"W": rand(4, 2, 1, 1), "bias": rand(1, 4, 1, 1)}
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], name="conv"),
             helper.make_node("Add", ["c", "bias"], ["s"], name="add"),
             helper.make_node("Relu", ["s"], ["y"], name="relu")]
    m = model(nodes, [vi("x", [1, 2, 3, 3])], [vi("y", [1, 4, 3, 3])], inits)
    g = optimize(read_model(m))
    assert ops(g) == ["FusedConv"] and len(g.nodes[0].inputs) == 3 and g.nodes[0].fused == ("add", "relu")
    same_outputs(m, {"x": rand(1, 2, 3, 3)}, rtol=1e-4, atol=1e-5)

    # an Add with a runtime operand that broadcasts ([1,4,1,1] vs [1,4,3,3]) stays an Add
    nodes[1] = helper.make_node("Add", ["c", "z"], ["s"], name="add")
    m = model(nodes, [vi("x", [1, 2, 3, 3]), vi("z", [1, 4, 1, 1])], [vi("y", [1, 4, 3, 3])], {"W": inits["W"]})
    assert ops(optimize(read_model(m))) == ["Conv", "Add", "Relu"]

    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], name="conv"),
             helper.make_node("Sum", ["c", "z"], ["y"], name="sum")]
    m = model(nodes, [vi("x", [1, 2, 3, 3]), vi("z", [1, 4, 3, 3])], [vi("y", [1, 4, 3, 3])], {"W": inits["W"]})
    g = optimize(read_model(m))
    assert structure(g) == [("FusedConv", ("x", "W", "", "z"), ("y",))] and "activation" not in g.nodes[0].attrs
    same_outputs(m, {"x": rand(1, 2, 3, 3), "z": rand(1, 4, 3, 3)}, rtol=1e-4, atol=1e-5)


#   a f32[3,5] ─Gemm(B, C, transB=1)─▶ g ─Sigmoid─▶ y   =>   FusedGemm(a, B, C; Sigmoid)
def test_gemm_sigmoid_fusion():
    inits = {"Bm": rand(4, 5), "C": rand(4)}
    nodes = [helper.make_node("Gemm", ["a", "Bm", "C"], ["g"], name="gemm", transB=1, alpha=0.7),
             helper.make_node("Sigmoid", ["g"], ["y"], name="sig")]
    m = model(nodes, [vi("a", [3, 5])], [vi("y", [3, 4])], inits)
    g = optimize(read_model(m))
    (n,) = g.nodes
    assert (n.op_type, n.domain, n.attrs["activation"], n.attrs["transB"], n.attrs["alpha"]) == \
        ("FusedGemm", "hetero", "Sigmoid", 1, pytest.approx(0.7))
    same_outputs(m, {"a": rand(3, 5)})


#   a ─MatMul(B)─▶ p ─Clip(min=0, max=6 constants)─▶ y    =>  FusedMatMul(a, B; Clip [0, 6])
#   a ─MatMul(B)─▶ p ─Clip(min=lo graph input)─▶ y       bound unknown at compile time: not fused
#   a ─MatMul(B)─▶ p ─LeakyRelu(0.2)─▶ y                 =>  FusedMatMul(a, B; LeakyRelu [0.2])
def test_clip_constant_bounds_and_leaky_relu_fusion():
    inits = {"Bm": rand(5, 4), "lo": np.array(0.0, np.float32), "hi": np.array(0.5, np.float32)}
    nodes = [helper.make_node("MatMul", ["a", "Bm"], ["p"], name="mm"),
             helper.make_node("Clip", ["p", "lo", "hi"], ["y"], name="clip")]
    m = model(nodes, [vi("a", [3, 5])], [vi("y", [3, 4])], inits)
    g = optimize(read_model(m))
    (n,) = g.nodes
    assert (n.op_type, n.inputs, n.attrs["activation"], n.attrs["activation_params"]) == \
        ("FusedMatMul", ("a", "Bm"), "Clip", [0.0, 0.5])
    same_outputs(m, {"a": rand(3, 5)})

    nodes = [helper.make_node("MatMul", ["a", "Bm"], ["p"], name="mm"),
             helper.make_node("Clip", ["p", "lo2"], ["y"], name="clip")]
    m = model(nodes, [vi("a", [3, 5]), vi("lo2", [])], [vi("y", [3, 4])], {"Bm": inits["Bm"]})
    assert ops(optimize(read_model(m))) == ["MatMul", "Clip"]

    nodes = [helper.make_node("MatMul", ["a", "Bm"], ["p"], name="mm"),
             helper.make_node("LeakyRelu", ["p"], ["y"], name="lrelu", alpha=0.2)]
    m = model(nodes, [vi("a", [3, 5])], [vi("y", [3, 4])], {"Bm": inits["Bm"]})
    (n,) = optimize(read_model(m)).nodes
    assert n.attrs["activation"] == "LeakyRelu" and n.attrs["activation_params"] == [pytest.approx(0.2)]
    same_outputs(m, {"a": rand(3, 5)})


#   a ─Gemm-6(B, C, broadcast=1)─▶ g ─Relu─▶ y    the legacy flag is dropped: FusedGemm has none
def test_gemm6_broadcast_flag_dropped_on_fusion():
    nodes = [helper.make_node("Gemm", ["a", "Bm", "C"], ["g"], name="gemm", broadcast=1),
             helper.make_node("Relu", ["g"], ["y"], name="relu")]
    m = model(nodes, [vi("a", [2, 3])], [vi("y", [2, 4])], {"Bm": rand(3, 4), "C": rand(4)}, opset=6)
    (n,) = optimize(read_model(m)).nodes
    assert n.op_type == "FusedGemm" and "broadcast" not in n.attrs
    a = rand(2, 3)
    y = hetero.compile_model(m, "CPU")({"a": a})[0]
    init = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    np.testing.assert_allclose(y, np.maximum(a @ init["Bm"] + init["C"], 0), rtol=1e-5, atol=1e-6)


#   x ─Conv─▶ c ─Div(c, k)─▶ y     k has a zero: x / 0 must stay inf/nan at run time, so no folding
def test_div_by_zero_not_folded():
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], name="conv"),
             helper.make_node("Div", ["c", "k"], ["y"], name="div")]
    m = model(nodes, [vi("x", [1, 2, 2, 2])], [vi("y", [1, 2, 2, 2])],
              {"W": rand(2, 2, 1, 1), "k": np.array([2.0, 0.0], np.float32).reshape(2, 1, 1)})
    assert ops(optimize(read_model(m))) == ["Conv", "Div"]
    k = np.array([2.0, 4.0], np.float32).reshape(2, 1, 1)
    m = model(nodes, [vi("x", [1, 2, 2, 2])], [vi("y", [1, 2, 2, 2])], {"W": rand(2, 2, 1, 1), "k": k})
    assert ops(optimize(read_model(m))) == ["Conv"]
    same_outputs(m, {"x": rand(1, 2, 2, 2)})


#   Clip-6 (attributes) after a Conv, HardSigmoid and HardSwish after Convs:
#   x ─Conv─▶ c1 ─Clip(min=-1, max=1)─▶ y1 ; x ─Conv─▶ c2 ─HardSigmoid(0.3, 0.4)─▶ y2
@pytest.mark.parametrize("act,attrs,params,opset", [
    ("Clip", {"min": -1.0, "max": 1.0}, [-1.0, 1.0], 9),
    ("HardSigmoid", {"alpha": 0.25, "beta": 0.4}, [0.25, 0.4], 15),
    ("HardSwish", {}, [], 14),
    ("Tanh", {}, [], 15),
])
def test_activation_params(act, attrs, params, opset):
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], name="conv"),
             helper.make_node(act, ["c"], ["y"], name="act", **attrs)]
    m = model(nodes, [vi("x", [1, 2, 3, 3])], [vi("y", [1, 3, 3, 3])], {"W": rand(3, 2, 1, 1)}, opset=opset)
    (n,) = optimize(read_model(m)).nodes
    assert n.attrs["activation"] == act and n.attrs["activation_params"] == pytest.approx(params)
    same_outputs(m, {"x": rand(1, 2, 3, 3)}, rtol=1e-4, atol=1e-5)


#   x ─Conv─▶ c ─Relu─▶ y1
#             └─────────── y2 (graph output)     c is a graph output: no fusion
#   x ─Conv─▶ c ─Relu─▶ y ; If reads c in a branch: c has a second reader: no fusion
def test_no_fusion_when_intermediate_visible():
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], name="conv"),
             helper.make_node("Relu", ["c"], ["y"], name="relu")]
    m = model(nodes, [vi("x", [1, 1, 2, 2])], [vi("y", [1, 1, 2, 2]), vi("c", [1, 1, 2, 2])],
              {"W": rand(1, 1, 1, 1)})
    assert ops(optimize(read_model(m))) == ["Conv", "Relu"]
    branch = helper.make_graph([helper.make_node("Neg", ["c"], ["b_out"])], "b", [], [vi("b_out", [1, 1, 2, 2])])
    nodes.append(helper.make_node("If", ["cond"], ["z"], name="if", then_branch=branch, else_branch=branch))
    m = model(nodes, [vi("x", [1, 1, 2, 2]), vi("cond", [], TensorProto.BOOL)],
              [vi("y", [1, 1, 2, 2]), vi("z", [1, 1, 2, 2])], {"W": rand(1, 1, 1, 1)})
    g = optimize(read_model(m))
    assert ops(g) == ["Conv", "Relu", "If"]
    same_outputs(m, {"x": rand(1, 1, 2, 2), "cond": np.array(True)})


# ---- pipeline --------------------------------------------------------------------------------------

#   x ─Conv─▶ c ─BN─▶ n ─Identity─▶ i ─Add(i, x)─▶ s ─Relu─▶ y      (Conv keeps the shape: residual = x)
#   => FusedConv(x, W', B', x; Relu) -> y, OPTIMIZED_OUT: bn, id, add, relu
def conv_bn_residual_model():
    inits = {"W": rand(3, 3, 3, 3), **bn_inits(3)}
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], name="conv", pads=[1, 1, 1, 1]), bn_node("c", "n"),
             helper.make_node("Identity", ["n"], ["i"], name="id"),
             helper.make_node("Add", ["i", "x"], ["s"], name="add"),
             helper.make_node("Relu", ["s"], ["y"], name="relu")]
    return model(nodes, [vi("x", [1, 3, 5, 5])], [vi("y", [1, 3, 5, 5])], inits)


def test_pipeline_order_and_idempotence():
    m = conv_bn_residual_model()
    g = optimize(read_model(m))
    (n,) = g.nodes
    assert (n.name, n.op_type, n.inputs[0], n.inputs[3], n.outputs) == ("conv", "FusedConv", "x", "x", ("y",))
    assert n.fused == ("bn", "add", "relu")
    assert [x for x, _ in g.optimized_out] == ["id", "bn", "add", "relu"]
    assert set(g.initializers) == set(n.inputs[1:3])  # W and the BN parameters are dead and dropped
    again = optimize(g)
    assert structure(again) == structure(g) and again.optimized_out == g.optimized_out
    same_outputs(m, {"x": rand(1, 3, 5, 5)}, rtol=1e-4, atol=1e-5)
    # one pass at a time, by name or function
    only = optimize(read_model(m), passes=["remove_identity", remove_dead_nodes])
    assert ops(only) == ["Conv", "BatchNormalization", "Add", "Relu"]
    with pytest.raises(ValueError, match="unknown graph pass 'fold'"):
        optimize(g, passes=["fold"])
    assert list(PASSES) == ["fold_constants", "remove_identity", "fold_batchnorm", "fuse_activations",
                            "remove_dead_nodes"]


def test_optimized_out_in_profiling_info():
    m = conv_bn_residual_model()
    compiled = hetero.compile_model(m, "CPU", {"PERF_COUNT": True})
    req = compiled.create_infer_request()
    req.infer({"x": rand(1, 3, 5, 5)})
    info = {p.node_name: (p.node_type, p.status) for p in req.get_profiling_info()}
    assert info == {"conv": ("FusedConv", "EXECUTED"), "id": ("Identity", "OPTIMIZED_OUT"),
                    "bn": ("BatchNormalization", "OPTIMIZED_OUT"), "add": ("Add", "OPTIMIZED_OUT"),
                    "relu": ("Relu", "OPTIMIZED_OUT")}


#   x ─Relu─▶ a ─Sigmoid─▶ unused        dead: removed with its now-unread initializer
#   x ─Neg─▶ y
def test_dead_nodes_and_initializers_removed():
    nodes = [helper.make_node("Add", ["x", "k"], ["a"], name="add"),
             helper.make_node("Sigmoid", ["a"], ["unused"], name="sig"),
             helper.make_node("Neg", ["x"], ["y"], name="neg")]
    m = model(nodes, [vi("x", [2])], [vi("y", [2])], {"k": rand(2)})
    g = remove_dead_nodes(read_model(m))
    assert ops(g) == ["Neg"] and g.initializers == {} and dict(g.optimized_out) == {"add": "Add", "sig": "Sigmoid"}


def test_passes_are_pure():
    m = conv_bn_residual_model()
    g = read_model(m)
    before = (structure(g), {k: v.copy() for k, v in g.initializers.items()}, g.optimized_out)
    for p in (fold_constants, remove_identity, fold_batchnorm, fuse_activations, remove_dead_nodes):
        p(g)
    assert structure(g) == before[0] and g.optimized_out == before[2]
    assert all(np.array_equal(g.initializers[k], v) for k, v in before[1].items())


# ---- real models -----------------------------------------------------------------------------------

# node count before -> after, and the op counts after, for onnx's light models (weights are
# ConstantOfShape nodes there: they fold, except the > 16 MB fully-connected weights)
LIGHT_EXPECTED = {
    # the FC weights are ConstantOfShape fills over MAX_FOLD_BYTES, read only as Gemm B: folded anyway
    "bvlc_alexnet": (40, 15, {"FusedConv": 5, "FusedGemm": 2, "Gemm": 1, "ConstantOfShape": 0}),
    "densenet121": (1746, 246, {"FusedConv": 59, "Conv": 62, "FusedBatchNormalization": 62,
                                "BatchNormalization": 0, "Relu": 0}),
    "inception_v1": (237, 85, {"FusedConv": 57, "Gemm": 1}),
    "inception_v2": (916, 95, {"FusedConv": 69, "Gemm": 1}),
    "resnet50": (415, 58, {"FusedConv": 49, "Conv": 4, "Gemm": 1}),
    "shufflenet": (446, 111, {"FusedConv": 30, "Conv": 19, "Relu": 3}),
    "squeezenet": (105, 39, {"FusedConv": 26}),
    "vgg19": (82, 26, {"FusedConv": 16, "FusedGemm": 2, "Gemm": 1, "ConstantOfShape": 0}),
    "zfnet512": (38, 15, {"FusedConv": 5, "FusedGemm": 2, "Gemm": 1, "ConstantOfShape": 0}),
}


@pytest.mark.parametrize("name", sorted(LIGHT_EXPECTED))
def test_light_models_optimize(name):
    g = read_model(os.path.join(LIGHT, f"light_{name}.onnx"))
    o = optimize(g)
    before, after, counts = LIGHT_EXPECTED[name]
    assert (len(g.nodes), len(o.nodes)) == (before, after)
    got = collections.Counter(ops(o))
    assert {k: got[k] for k in counts} == counts
    assert o.input_names == g.input_names and o.output_names == g.output_names
    assert len(o.optimized_out) + len(o.nodes) == len(g.nodes)  # every original node accounted for
    assert structure(optimize(o)) == structure(o)


def _randomized_light(name: str, seed: int = 0) -> onnx.ModelProto:
    """A light model with its ConstantOfShape weights replaced by random initializers (so the network
    computes something non-trivial) and the final Softmax dropped (compare logits)."""
    r = np.random.default_rng(seed)
    m = onnx.load(os.path.join(LIGHT, f"light_{name}.onnx"))
    m.ir_version = max(m.ir_version, 4)  # initializers need not be listed as inputs
    g = m.graph
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    keep = []
    for n in g.node:
        if n.op_type == "ConstantOfShape" and n.input[0] in inits:
            shape = tuple(int(v) for v in inits[n.input[0]])
            if len(shape) == 1:  # BN / bias parameters: positive, around 1 (variances must be > 0)
                arr = r.uniform(0.5, 1.5, shape)
            else:  # He-scaled weights keep activations O(1) through the depth
                arr = r.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))
            g.initializer.append(numpy_helper.from_array(arr.astype(np.float32), n.output[0]))
        else:
            keep.append(n)
    if keep[-1].op_type == "Softmax":
        g.output[0].name = keep.pop().input[0]
    del g.node[:]
    g.node.extend(keep)
    return m


@pytest.mark.slow
def test_resnet50_optimized_matches_unoptimized():
    from hetero.devices.cpu import CPUExecutable

    g = read_model(_randomized_light("resnet50"))
    o = optimize(g)
    assert collections.Counter(ops(o)) == {"FusedConv": 49, "Conv": 4, "MaxPool": 1, "AveragePool": 1,
                                           "Reshape": 1, "Gemm": 1}
    x = rng.standard_normal((1, 3, 224, 224)).astype(np.float32)
    want = CPUExecutable(g).run({g.input_names[0]: x})[g.output_names[0]]
    got = CPUExecutable(o).run({g.input_names[0]: x})[g.output_names[0]]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * float(np.abs(want).max()))
