"""ONNX import (issue 2, point 2): sources (path / bytes / ModelProto), every opset from 7 to the newest
the installed onnx knows, initializers incl. external-data files, shape inference, symbolic dims, and
the ModelError cases (missing file, not ONNX, checker failure, unknown domain, unsafe external-data
locations), each naming what went wrong and where, never a raw protobuf traceback."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T, helper as h, numpy_helper as nh

import hetero
from hetero.errors import HeteroError, ModelError

MAX_OPSET = onnx.defs.onnx_opset_version()
RNG = np.random.default_rng(0)
W = RNG.standard_normal((8, 4)).astype(np.float32)
B = RNG.standard_normal(4).astype(np.float32)
X = RNG.standard_normal((3, 8)).astype(np.float32)


def mlp(opset: int = 17, batch="N", w=W):
    """x[N,8] -> mm (MatMul W) -> add (+B) -> relu -> y[N,4]"""
    g = h.make_graph([h.make_node("MatMul", ["x", "W"], ["a"], name="mm"),
                      h.make_node("Add", ["a", "B"], ["b"], name="add"),
                      h.make_node("Relu", ["b"], ["y"], name="relu")],
                     "mlp", [h.make_tensor_value_info("x", T.FLOAT, [batch, 8])],
                     [h.make_tensor_value_info("y", T.FLOAT, [batch, 4])],
                     [nh.from_array(w, "W"), nh.from_array(B, "B")])
    return _model(g, opset)


def _model(g, opset: int, extra=()):
    ids = [h.make_opsetid("", opset), *extra]
    ir = h.find_min_ir_version_for(ids, ignore_unknown=True)
    if ir < 4:  # before IR 4 every initializer must also be a graph input
        g.input.extend(h.make_tensor_value_info(t.name, t.data_type, t.dims) for t in g.initializer)
    return h.make_model(g, opset_imports=ids, ir_version=ir)


def ref_mlp(x, w=W):
    return np.maximum(x @ w + B, 0)


def run(model, x=X):
    return hetero.compile_model(model, "CPU")({"x": x})[0]


def raises_model_error(model, *fragments) -> str:
    """read_model(model) raises ModelError (not a protobuf error) whose message has every fragment."""
    with pytest.raises(ModelError) as ei:
        hetero.read_model(model)
    msg = str(ei.value)
    for f in fragments:
        assert f in msg, f"{f!r} not in {msg!r}"
    # "never a raw protobuf traceback": the low-level error is not chained into the report
    e = ei.value
    assert e.__cause__ is None and (e.__context__ is None or e.__suppress_context__)
    return msg


# ---- sources -------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["path", "str", "bytes", "proto"])
def test_read_model_sources_agree(tmp_path, kind):
    m = mlp()
    onnx.save(m, tmp_path / "m.onnx")
    src = {"path": tmp_path / "m.onnx", "str": str(tmp_path / "m.onnx"), "bytes": m.SerializeToString(),
           "proto": m}[kind]
    g = hetero.read_model(src)
    assert [n.name for n in g.nodes] == ["mm", "add", "relu"]
    assert g.opset == 17
    np.testing.assert_array_equal(g.initializers["W"], W)
    np.testing.assert_allclose(run(g), ref_mlp(X), rtol=1e-6, atol=1e-6)
    # Core.read_model and compile_model straight from the source give the same thing
    np.testing.assert_allclose(run(src), ref_mlp(X), rtol=1e-6, atol=1e-6)
    assert [n.name for n in hetero.Core().read_model(src).nodes] == ["mm", "add", "relu"]


def test_read_model_does_not_mutate_the_proto():
    m = mlp()
    before = m.SerializeToString()
    hetero.read_model(m)
    assert m.SerializeToString() == before


# ---- opsets --------------------------------------------------------------------------------------

def opset_model(opset: int):
    """x[N,8] -> mm -> add -> clip[-0.5,0.5] -> rsum (ReduceSum axis 1, keepdims) -> y[N,1]
    Clip's bounds are attributes before opset 11 and inputs from 11; ReduceSum's axes an attribute
    before 13 and an input from 13: the importer must hand kernels the right opset."""
    nodes = [h.make_node("MatMul", ["x", "W"], ["a"], name="mm"), h.make_node("Add", ["a", "B"], ["b"], name="add")]
    inits = [nh.from_array(W, "W"), nh.from_array(B, "B")]
    if opset < 11:
        nodes.append(h.make_node("Clip", ["b"], ["c"], name="clip", min=-0.5, max=0.5))
    else:
        inits += [nh.from_array(np.float32(-0.5), "lo"), nh.from_array(np.float32(0.5), "hi")]
        nodes.append(h.make_node("Clip", ["b", "lo", "hi"], ["c"], name="clip"))
    if opset < 13:
        nodes.append(h.make_node("ReduceSum", ["c"], ["y"], name="rsum", axes=[1], keepdims=1))
    else:
        inits.append(nh.from_array(np.array([1], np.int64), "axes"))
        nodes.append(h.make_node("ReduceSum", ["c", "axes"], ["y"], name="rsum", keepdims=1))
    g = h.make_graph(nodes, "opsets", [h.make_tensor_value_info("x", T.FLOAT, ["N", 8])],
                     [h.make_tensor_value_info("y", T.FLOAT, ["N", 1])], inits)
    return _model(g, opset)


@pytest.mark.parametrize("opset", range(7, MAX_OPSET + 1))
def test_every_opset_from_7_to_newest(opset):
    m = opset_model(opset)
    g = hetero.read_model(m)
    assert g.opset == opset
    assert g.info("y").shape == ("N", 1)  # shape inference ran at this opset
    want = np.clip(X @ W + B, -0.5, 0.5).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(run(m), want, rtol=1e-5, atol=1e-6)


def test_opset_newer_than_onnx_knows_is_refused():
    m = mlp(opset=17)
    m.opset_import[0].version = MAX_OPSET + 1
    raises_model_error(m, "opset", str(MAX_OPSET + 1), str(MAX_OPSET))


# ---- initializers and external data ------------------------------------------------------------

def test_initializers_listed_as_inputs_are_constants_not_user_inputs():
    # pre-IR-4 models list every initializer among the graph inputs (the light models do)
    m = mlp(opset=8)
    assert [i.name for i in m.graph.input] == ["x", "W", "B"]
    g = hetero.read_model(m)
    assert [i.name for i in g.inputs] == ["x"]
    np.testing.assert_allclose(run(m), ref_mlp(X), rtol=1e-6, atol=1e-6)


def test_sparse_initializer_is_densified():
    dense = np.zeros((8, 4), np.float32)
    dense[1, 2], dense[5, 0] = 3.0, -2.0
    m = mlp()
    del m.graph.initializer[0]  # W becomes sparse
    sp = h.make_sparse_tensor(nh.from_array(np.array([3.0, -2.0], np.float32), "W"),
                              nh.from_array(np.array([6, 20], np.int64), "W_idx"), [8, 4])
    m.graph.sparse_initializer.append(sp)
    np.testing.assert_array_equal(hetero.read_model(m).initializers["W"], dense)
    np.testing.assert_allclose(run(m), ref_mlp(X, dense), rtol=1e-6, atol=1e-6)


def save_external(tmp_path: Path, sub: str = "model") -> Path:
    folder = tmp_path / sub
    folder.mkdir()
    path = folder / "m.onnx"
    onnx.save_model(mlp(), path, save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    return path


def test_external_data_beside_the_model(tmp_path):
    path = save_external(tmp_path)
    assert (path.parent / "weights.bin").stat().st_size == W.nbytes + B.nbytes
    # the weights really are outside the .onnx file
    raw = onnx.load(path, load_external_data=False)
    assert all(t.data_location == T.EXTERNAL and not t.raw_data for t in raw.graph.initializer)
    g = hetero.read_model(path)
    np.testing.assert_array_equal(g.initializers["W"], W)
    np.testing.assert_array_equal(g.initializers["B"], B)
    np.testing.assert_allclose(run(path), ref_mlp(X), rtol=1e-6, atol=1e-6)


def test_external_data_one_file_per_tensor_in_a_subfolder(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    m = mlp()
    onnx.external_data_helper.convert_model_to_external_data(m, all_tensors_to_one_file=False, size_threshold=0)
    for t in m.graph.initializer:  # put each tensor's file under data/
        for e in t.external_data:
            if e.key == "location":
                e.value = f"data/{e.value}"
    (folder / "data").mkdir()
    for t in mlp().graph.initializer:
        (folder / "data" / t.name).write_bytes(nh.to_array(t).tobytes())
    onnx.save(m, folder / "m.onnx")
    np.testing.assert_allclose(run(folder / "m.onnx"), ref_mlp(X), rtol=1e-6, atol=1e-6)


def with_location(path: Path, location: str, out: Path) -> Path:
    """Copy of the model at ``path`` whose external-data entries all point at ``location``."""
    m = onnx.load(path, load_external_data=False)
    for t in m.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = location
    onnx.save(m, out)
    return out


@pytest.mark.parametrize("location", ["../../etc/passwd", "/etc/passwd", "../weights.bin", "sub/../../weights.bin"])
def test_external_data_outside_the_model_folder_is_refused(tmp_path, location):
    path = save_external(tmp_path)
    # a real file at ../weights.bin, so the refusal is about the location, not a missing file
    (tmp_path / "weights.bin").write_bytes((path.parent / "weights.bin").read_bytes())
    bad = with_location(path, location, path.parent / "bad.onnx")
    msg = raises_model_error(bad, "'W'", repr(location), "outside", "refused")
    assert "bad.onnx" in msg


def test_external_data_symlink_escaping_the_folder_is_refused(tmp_path):
    path = save_external(tmp_path)
    (tmp_path / "secret.bin").write_bytes((path.parent / "weights.bin").read_bytes())
    (path.parent / "link.bin").symlink_to(tmp_path / "secret.bin")
    bad = with_location(path, "link.bin", path.parent / "bad.onnx")
    raises_model_error(bad, "'link.bin'", "outside")


def test_external_data_missing_file(tmp_path):
    path = save_external(tmp_path)
    bad = with_location(path, "gone.bin", path.parent / "bad.onnx")
    raises_model_error(bad, "'W'", "gone.bin", "does not exist")


def test_external_data_truncated_file(tmp_path):
    path = save_external(tmp_path)
    data = path.parent / "weights.bin"
    data.write_bytes(data.read_bytes()[:10])
    msg = raises_model_error(path, "m.onnx")
    assert "external" in msg


@pytest.mark.parametrize("as_bytes", [False, True])
def test_external_data_without_a_folder_needs_the_path(tmp_path, as_bytes):
    path = save_external(tmp_path)
    m = onnx.load(path, load_external_data=False)
    raises_model_error(m.SerializeToString() if as_bytes else m, "'W'", "external", "path")


# ---- shape inference and symbolic dims ----------------------------------------------------------

def test_shape_inference_fills_intermediate_values_and_keeps_symbolic_dims():
    m = mlp(batch="batch")
    assert not m.graph.value_info  # nothing given: everything below comes from inference
    g = hetero.read_model(m)
    assert g.inputs[0].shape == ("batch", 8)
    assert g.info("a").shape == ("batch", 4) and g.info("a").dtype == np.float32
    assert g.info("b").shape == ("batch", 4)
    assert g.outputs[0].shape == ("batch", 4)


def test_unknown_dims_stay_unknown_and_any_batch_runs():
    m = mlp(batch=None)  # a dim with neither value nor name
    g = hetero.read_model(m)
    assert g.inputs[0].shape == (None, 8)
    cm = hetero.compile_model(m, "CPU")
    for n in (1, 5):
        x = RNG.standard_normal((n, 8)).astype(np.float32)
        np.testing.assert_allclose(cm({"x": x})[0], ref_mlp(x), rtol=1e-6, atol=1e-6)


def test_symbolic_batch_runs_with_several_sizes():
    cm = hetero.compile_model(mlp(batch="N"), "CPU")
    assert cm.inputs[0].shape == ("N", 8)
    for n in (1, 2, 7):
        x = RNG.standard_normal((n, 8)).astype(np.float32)
        np.testing.assert_allclose(cm({"x": x})[0], ref_mlp(x), rtol=1e-6, atol=1e-6)


def test_model_local_function_is_inlined():
    """x -> f (custom.AddRelu: Add then Relu, a model-local function) -> y"""
    fn = h.make_function("custom", "AddRelu", ["p", "q"], ["r"],
                         [h.make_node("Add", ["p", "q"], ["s"]), h.make_node("Relu", ["s"], ["r"])],
                         opset_imports=[h.make_opsetid("", 17)])
    g = h.make_graph([h.make_node("AddRelu", ["x", "x"], ["y"], name="f", domain="custom")], "fn",
                     [h.make_tensor_value_info("x", T.FLOAT, [3, 8])], [h.make_tensor_value_info("y", T.FLOAT, [3, 8])])
    m = _model(g, 17, extra=[h.make_opsetid("custom", 1)])
    m.functions.append(fn)
    graph = hetero.read_model(m)
    assert [n.op_type for n in graph.nodes] == ["Add", "Relu"]
    np.testing.assert_allclose(run(m), np.maximum(2 * X, 0), rtol=1e-6)


# ---- errors ----------------------------------------------------------------------------------------

def test_missing_file(tmp_path):
    p = tmp_path / "nope.onnx"
    raises_model_error(p, str(p), "does not exist")


def test_directory_instead_of_file(tmp_path):
    raises_model_error(tmp_path, str(tmp_path), "directory")


@pytest.mark.parametrize("content", [b"hello, this is not a model\n", b"\xff\xfe\xfd\x00garbage", b"",
                                     nh.from_array(np.zeros(3, np.float32)).SerializeToString()],
                         ids=["text", "garbage", "empty", "tensorproto"])
def test_file_that_is_not_onnx(tmp_path, content):
    p = tmp_path / "fake.onnx"
    p.write_bytes(content)
    raises_model_error(p, str(p), "not an ONNX model")
    raises_model_error(content, "<bytes>", "not an ONNX model")


def test_wrong_argument_type():
    raises_model_error(12345, "path, bytes or onnx.ModelProto", "int")


def test_model_failing_the_checker_names_the_node():
    m = mlp()
    m.graph.node[2].input[0] = "undefined_value"  # relu reads a value nobody produces
    raises_model_error(m, "<ModelProto>", "onnx.checker", "undefined_value", "relu")


def test_model_with_an_unregistered_op_names_the_op():
    m = mlp()
    m.graph.node[0].op_type = "MatMulTypo"
    raises_model_error(m, "onnx.checker", "MatMulTypo", "mm")


def test_unknown_op_domain_names_node_and_domain(tmp_path):
    m = mlp()
    m.graph.node[2].domain = "com.example.secret"
    m.opset_import.append(h.make_opsetid("com.example.secret", 1))
    onnx.save(m, tmp_path / "dom.onnx")
    msg = raises_model_error(tmp_path / "dom.onnx", "dom.onnx", "'relu'", "Relu", "'com.example.secret'")
    assert "ai.onnx" in msg  # lists the domains it does know


def test_model_errors_are_hetero_errors():
    assert issubclass(ModelError, HeteroError)
    with pytest.raises(HeteroError):
        hetero.read_model(b"garbage")


@pytest.mark.parametrize("opset", [8, 17])  # IR 3 (initializers listed as inputs) and IR 8
def test_big_weights_stay_initializers_and_the_proto_is_untouched(opset):
    # weights of >= 64 KiB are set aside while the checker and shape inference run; they must come back
    w = RNG.standard_normal((8, 4096)).astype(np.float32)
    g = h.make_graph([h.make_node("MatMul", ["x", "W"], ["y"], name="mm")], "big",
                     [h.make_tensor_value_info("x", T.FLOAT, ["N", 8])], [h.make_tensor_value_info("y", T.FLOAT, ["N", "M"])],
                     [nh.from_array(w, "W")])
    m = _model(g, opset)
    before = m.SerializeToString()
    graph = hetero.read_model(m)
    assert m.SerializeToString() == before
    assert [i.name for i in graph.inputs] == ["x"]
    np.testing.assert_array_equal(graph.initializers["W"], w)
    assert graph.outputs[0].shape == ("N", 4096)  # inferred through the set-aside weight's shape
    np.testing.assert_allclose(run(m), X @ w, rtol=1e-5, atol=1e-5)
