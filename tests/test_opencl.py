"""The GPU (OpenCL) plugin: discovery, honest query, memory plan, precision, caching, streams, profiling.

Runs on any OpenCL platform (here PoCL, a CPU implementation); the tests that need one skip with a
reason where there is none. The per-op numerics are in test_op_cases.py (shared with every device).
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import hetero
from hetero.errors import DeviceError, UnsupportedOpError

ROOT = Path(__file__).resolve().parents[1]
CORE = hetero.Core()
GPUS = [d for d in CORE.available_devices if d.startswith("GPU")]
needs_gpu = pytest.mark.skipif(not GPUS, reason="no OpenCL platform/device (pyopencl found no GPU.N)")


def _model(nodes, inputs, outputs, inits=(), opset=17, name="m"):
    g = helper.make_graph(nodes, name, inputs, outputs, initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def _vi(name, shape, t=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, t, shape)


def _gpu():
    return CORE._registry.get("GPU")


# ---- discovery and properties -------------------------------------------------------------------

@needs_gpu
def test_gpu_means_gpu0_and_properties():
    dev = _gpu()
    assert dev.name == "GPU.0" and dev.family == "GPU"
    assert GPUS == [f"GPU.{i}" for i in range(len(GPUS))]
    for name in GPUS:
        full = CORE.get_property(name, "FULL_DEVICE_NAME")
        d = CORE._registry.get(name)
        assert full == f"{d.cl_device.name.strip()} ({d.cl_device.platform.name.strip()})"
        kind = CORE.get_property(name, "DEVICE_TYPE")
        assert kind in ("discrete", "integrated", "accelerator", "cpu-opencl")
        assert d.auto_priority == {"discrete": 30, "integrated": 20, "accelerator": 15, "cpu-opencl": 10}[kind]
        caps = CORE.get_property(name, "OPTIMIZATION_CAPABILITIES")
        assert "FP32" in caps and "FP16" in caps
        assert CORE.get_property(name, "DEVICE_MEMORY_SIZE") == int(d.cl_device.global_mem_size) > 0
        assert CORE.get_property(name, "COMPUTE_UNITS") == int(d.cl_device.max_compute_units) >= 1
        sup = CORE.get_property(name, "SUPPORTED_PROPERTIES")
        for k in ("FULL_DEVICE_NAME", "DEVICE_TYPE", "OPTIMIZATION_CAPABILITIES", "DEVICE_MEMORY_SIZE",
                  "COMPUTE_UNITS", "INFERENCE_PRECISION_HINT", "CACHE_DIR", "PERFORMANCE_HINT"):
            assert k in sup
    # real GPUs come before CPU implementations of OpenCL
    order = {"discrete": 0, "integrated": 1, "accelerator": 2, "cpu-opencl": 3}
    kinds = [order[CORE.get_property(n, "DEVICE_TYPE")] for n in GPUS]
    assert kinds == sorted(kinds)
    assert CORE.get_property("CPU", "DEVICE_TYPE") == "cpu" and CORE._registry.get("CPU").auto_priority == 0


_NO_GPU_SCRIPT = r"""
import sys
{prelude}
import hetero
from hetero.errors import DeviceError
core = hetero.Core()
assert not any(d.startswith("GPU") for d in core.available_devices), core.available_devices
try:
    core.compile_model(hetero.read_model(sys.argv[1]), "GPU")
except DeviceError as e:
    assert "CPU" in str(e) and "GPU" in str(e), str(e)
    print("OK", e)
else:
    raise SystemExit("GPU compiled without OpenCL")
"""


@pytest.mark.parametrize("how", ["no_platform", "no_pyopencl"])
def test_without_opencl_import_works_and_gpu_is_a_device_error(tmp_path, how):
    m = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x", [2])], [_vi("y", [2])])
    path = tmp_path / "m.onnx"
    onnx.save(m, path)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    prelude = ""
    if how == "no_platform":
        env["OCL_ICD_VENDORS"] = str(tmp_path / "no_vendors")  # the ICD loader finds no platform
    else:
        prelude = "sys.modules['pyopencl'] = None  # import pyopencl -> ImportError"
    r = subprocess.run([sys.executable, "-c", _NO_GPU_SCRIPT.format(prelude=prelude), str(path)],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("OK device 'GPU"), r.stdout


# ---- honest query ---------------------------------------------------------------------------------

@needs_gpu
def test_query_claims_exactly_what_runs_and_explains_the_rest():
    """
        x ─ Relu ─ TopK ─ Add ─ y        TopK: no kernel; Conv on float64: no f64 kernels;
        d(f64) ─ Conv ─ z                Add and Relu: claimed
    """
    w = numpy_helper.from_array(np.ones((1, 1, 1, 1), np.float64), "w")
    k = numpy_helper.from_array(np.array([2], np.int64), "k")
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("TopK", ["r", "k"], ["t", "ti"], name="topk"),
             helper.make_node("Add", ["t", "t"], ["y"], name="add"),
             helper.make_node("Conv", ["d", "w"], ["z"], name="conv")]
    m = _model(nodes, [_vi("x", [3, 4]), _vi("d", [1, 1, 2, 2], TensorProto.DOUBLE)],
               [_vi("y", [3, 2]), _vi("z", [1, 1, 2, 2], TensorProto.DOUBLE)], [w, k])
    g = hetero.read_model(m)
    answer = _gpu().query(g)
    assert answer == {"relu": True, "topk": "TopK: no OpenCL kernel", "add": True,
                      "conv": "Conv: float64 not supported"}
    assert CORE.query_model(m, "GPU") == {"relu": "GPU.0", "add": "GPU.0"}
    with pytest.raises(UnsupportedOpError) as ei:
        CORE.compile_model(m, "GPU")
    assert set(ei.value.nodes) == {"topk", "conv"}
    assert "TopK: no OpenCL kernel" in str(ei.value)


@needs_gpu
def test_query_reasons_for_shapes_and_attributes():
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="dyn"),
             helper.make_node("MaxPool", ["p"], ["q", "qi"], name="idx", kernel_shape=[2, 2]),
             helper.make_node("Conv", ["c", "cw"], ["cy"], name="conv3d")]
    cw = numpy_helper.from_array(np.ones((1, 1, 1, 1, 1), np.float32), "cw")
    m = _model(nodes, [_vi("x", ["N", 4]), _vi("p", [1, 1, 4, 4]), _vi("c", [1, 1, 2, 2, 2])],
               [_vi("r", ["N", 4]), _vi("q", [1, 1, 3, 3]), _vi("qi", [1, 1, 3, 3], TensorProto.INT64),
                _vi("cy", [1, 1, 2, 2, 2])], [cw])
    a = _gpu().query(hetero.read_model(m))
    assert a["dyn"].startswith("Relu: dynamic shape") and "not supported" in a["dyn"]
    assert a["idx"] == "MaxPool: Indices output not supported"
    assert a["conv3d"] == "Conv: 3-D convolution not supported (1-D and 2-D are)"


@needs_gpu
def test_query_refuses_tensors_beyond_the_largest_allocation():
    import dataclasses

    from hetero.devices.opencl.plan import build_plan

    m = _model([helper.make_node("Relu", ["x"], ["y"], name="relu")], [_vi("x", [1024, 1024])],
               [_vi("y", [1024, 1024])])
    caps = dataclasses.replace(_gpu().caps(), max_alloc=1 << 20)  # a device that allocates at most 1 MiB
    reason = build_plan(hetero.read_model(m), caps, lenient=True).reasons["relu"]
    assert reason.startswith("Relu: 'x' needs 4194304 bytes, more than the device's largest allocation")


@needs_gpu
def test_hetero_falls_back_for_unclaimed_nodes():
    """x ─ Relu(GPU) ─ TopK(CPU) ─ Neg(GPU) ─ y"""
    k = numpy_helper.from_array(np.array([3], np.int64), "k")
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("TopK", ["r", "k"], ["t", "ti"], name="topk"),
             helper.make_node("Neg", ["t"], ["y"], name="neg")]
    m = _model(nodes, [_vi("x", [2, 5])], [_vi("y", [2, 3])], [k])
    assert CORE.query_model(m, "HETERO:GPU,CPU") == {"relu": "GPU.0", "topk": "CPU", "neg": "GPU.0"}
    x = np.random.default_rng(0).standard_normal((2, 5)).astype(np.float32)
    y = CORE.compile_model(m, "HETERO:GPU,CPU")({"x": x})[0]
    np.testing.assert_allclose(y, -np.sort(np.maximum(x, 0), axis=1)[:, ::-1][:, :3])


# ---- memory plan and constants ------------------------------------------------------------------

def test_memory_plan_traced_example():
    from hetero.devices.opencl.memplan import Lifetime, plan_memory

    lts = [Lifetime(0, 400, -1, 0), Lifetime(1, 800, 0, 1), Lifetime(2, 800, 1, 2), Lifetime(3, 100, 2, 3),
           Lifetime(4, 400, 3, 1 << 60)]
    p = plan_memory(lts)
    assert dict(p.slot_of) == {0: 0, 1: 1, 2: 0, 3: 1, 4: 0}
    assert p.slot_bytes == (800, 800) and p.total_bytes == 1600 and p.naive_bytes == 2500


@needs_gpu
def test_buffers_reused_weights_folded_and_results_exact():
    """
        x ─ Relu ─ Neg ─ Exp ─ Sigmoid ─ MatMul ─ y          the chain shares two slots;
                                  Wt = Transpose(W) ─┘        Transpose of a constant runs once at compile
    """
    rng = np.random.default_rng(1)
    W = rng.standard_normal((6, 8)).astype(np.float32)
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="relu"), helper.make_node("Neg", ["a"], ["b"], name="neg"),
             helper.make_node("Exp", ["b"], ["c"], name="exp"), helper.make_node("Sigmoid", ["c"], ["d"], name="sig"),
             helper.make_node("Transpose", ["W"], ["Wt"], name="tr"),
             helper.make_node("MatMul", ["d", "Wt"], ["y"], name="mm")]
    m = _model(nodes, [_vi("x", [64, 8])], [_vi("y", [64, 6])], [numpy_helper.from_array(W, "W")])
    g = hetero.read_model(m)  # untransformed: the plugin folds the constant Transpose itself
    exe = _gpu().compile(g)
    assert exe.plan.node_kind["tr"] == "const"
    run_nodes = [exe.plan.launches[i].node for i in exe.plan.run_launches]
    assert run_nodes == ["relu", "neg", "exp", "sig", "mm"]
    mem = exe.memory
    assert mem.slot_bytes == (64 * 8 * 4, 64 * 8 * 4)  # x, a, b, c, d, y alternate between two slots
    assert mem.naive_bytes == 5 * 64 * 8 * 4 + 64 * 6 * 4
    x = rng.standard_normal((64, 8)).astype(np.float32)
    y = exe.run({"x": x})["y"]
    ref = (1 / (1 + np.exp(-np.exp(-np.maximum(x, 0))))) @ W.T
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


@needs_gpu
def test_views_share_the_buffer():
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="relu"), helper.make_node("Flatten", ["a"], ["b"], name="fl"),
             helper.make_node("Neg", ["b"], ["y"], name="neg")]
    m = _model(nodes, [_vi("x", [2, 3, 4])], [_vi("y", [2, 12])])
    exe = _gpu().compile(hetero.read_model(m))
    assert exe.plan.node_kind["fl"] == "alias" and len(exe.plan.run_launches) == 2
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4) - 10
    np.testing.assert_array_equal(exe.run({"x": x})["y"], -np.maximum(x, 0).reshape(2, 12))


@needs_gpu
def test_softmax_before_opset13_coerces_to_2d():
    m = _model([helper.make_node("Softmax", ["x"], ["y"], axis=1)], [_vi("x", [2, 3, 4])], [_vi("y", [2, 3, 4])],
               opset=11)
    x = np.random.default_rng(2).standard_normal((2, 3, 4)).astype(np.float32)
    y = CORE.compile_model(m, "GPU")({"x": x})[0]
    e = np.exp(x.reshape(2, 12) - x.reshape(2, 12).max(1, keepdims=True))
    np.testing.assert_allclose(y, (e / e.sum(1, keepdims=True)).reshape(2, 3, 4), rtol=1e-5, atol=1e-6)


@needs_gpu
def test_bad_input_shape_is_an_infer_error():
    m = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x", [2, 3])], [_vi("y", [2, 3])])
    exe = _gpu().compile(hetero.read_model(m))
    with pytest.raises(hetero.InferError, match=r"input 'x' has shape \[3, 2\], compiled for \[2, 3\]"):
        exe.run({"x": np.zeros((3, 2), np.float32)})


GPU_STYLE_CASES = ["Conv_3x3_pad", "Conv_groups", "Conv_depthwise", "Conv_1x1", "Gemm_transB_bias", "MatMul_broadcast",
                   "MatMul_2d_odd", "FusedConv_fulltile_residual_clip", "FusedGemm_fulltile_fullbias", "Add_broadcast",
                   "Where", "BatchNormalization", "LRN", "MaxPool_3x3_s2_p1", "Softmax_axis1", "ReduceMax_02",
                   "Transpose", "Pad_reflect", "Resize_cubic", "LayerNormalization"]


@needs_gpu
@pytest.mark.parametrize("case_id", GPU_STYLE_CASES)
def test_gpu_shaped_kernels(case_id, monkeypatch):
    """The kernel shapes chosen for real GPUs (local-memory GEMM tiles, grid-stride loops, vloadN),
    run here on whatever OpenCL device there is."""
    from op_cases import CASES, compare, device_model, make_values, reference

    monkeypatch.setenv("HETERO_OCL_STYLE", "gpu")
    case = next(c for c in CASES if c.id == case_id)
    vals = make_values(case)
    expected = reference(case, vals)
    model, feeds = device_model(case, vals, expected)
    compiled = CORE.compile_model(model, "GPU")
    launches = compiled._runner.plan.launches
    assert not any(("CPU_DEVICE", None) in l.program.defines for l in launches)
    if "Gemm" in case_id or "MatMul" in case_id or "Conv_3x3" in case_id:
        assert any(l.kernel == "gemm_local" for l in launches)
    got = compiled(feeds)
    compare(case, [got[i] for i in range(len(expected))], expected)


@needs_gpu
def test_upload_download_round_trip():
    dev = _gpu()
    for a in (np.arange(12, dtype=np.float32).reshape(3, 4), np.array([[True, False], [False, True]]),
              np.arange(5, dtype=np.int64) - 2, np.linspace(-1, 1, 7).astype(np.float16)):
        h = dev.upload(a)
        assert h.shape == a.shape and h.dtype == a.dtype
        b = dev.download(h)
        assert b.dtype == a.dtype
        np.testing.assert_array_equal(b, a)
    with pytest.raises(DeviceError, match="DeviceTensor"):
        dev.download(np.zeros(3))


@needs_gpu
@pytest.mark.parametrize("precision", ["f32", "f16"])
def test_run_device_keeps_tensors_on_the_device(precision):
    """x ─ Relu ─ Neg ─ y, fed and read as device tensors (what HETERO's Reorders hand over)."""
    from hetero.devices.opencl.device import DeviceTensor

    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Neg", ["a"], ["y"])]
    m = _model(nodes, [_vi("x", [3, 4])], [_vi("y", [3, 4])])
    dev = _gpu()
    exe = dev.compile(hetero.read_model(m), {"INFERENCE_PRECISION_HINT": precision})
    want = np.dtype(np.float16 if precision == "f16" else np.float32)
    assert exe.input_precision == {"x": want} and exe.output_precision == {"y": want}
    x = np.linspace(-2, 2, 12, dtype=np.float32).reshape(3, 4)
    out = exe.run_device({"x": dev.upload(x.astype(want))})["y"]
    assert isinstance(out, DeviceTensor) and out.dtype == want
    np.testing.assert_array_equal(dev.download(out), -np.maximum(x, 0).astype(want))
    with pytest.raises(hetero.InferError, match="compiled for"):
        exe.run_device({"x": dev.upload(np.zeros((4, 3), want))})


# ---- precision --------------------------------------------------------------------------------------

F16_CASES = ["Conv_3x3_pad", "Conv_groups", "Conv_depthwise", "Gemm_transB_bias", "MatMul_batch_fold", "Add_broadcast",
             "MaxPool_3x3_s2_p1", "AveragePool_incl_pad", "Softmax_axis1", "LRN", "BatchNormalization",
             "LayerNormalization", "Concat_axis1", "Transpose", "Resize_linear_sizes", "ReduceMean_axis1",
             "FusedConv_relu_residual", "Sigmoid", "Pad_reflect", "Where"]


def _f16_case(case_id):
    """(model, feeds, expected outputs) of an op case, the reference run with float warnings silenced."""
    from op_cases import CASES, device_model, make_values, reference

    case = next(c for c in CASES if c.id == case_id)
    vals = make_values(case)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        expected = reference(case, vals)
    model, feeds = device_model(case, vals, expected)
    return model, feeds, expected


def _assert_f16(got, expected, where: str) -> None:
    from hetero.devices.opencl import f16_allclose

    for k, e in enumerate(expected):
        g = got[k]
        assert g.dtype == e.dtype and g.shape == e.shape  # f32 at the boundary, half inside
        assert f16_allclose(g, e), f"{where}: max error {np.abs(g - e).max()} (max |ref| {np.abs(e).max()})"


@needs_gpu
@pytest.mark.parametrize("case_id", F16_CASES)
def test_f16_within_tolerance(case_id):
    model, feeds, expected = _f16_case(case_id)
    compiled = CORE.compile_model(model, "GPU", {"INFERENCE_PRECISION_HINT": "f16"})
    _assert_f16(compiled(feeds), expected, case_id)
    # and f16 really is lower precision than f32 (the hint is not ignored)
    exe = compiled._runner
    assert any(b.dtype == np.float16 for b in exe.plan.bufs.values())


@needs_gpu
def test_f16_keeps_float_storage_where_half_would_overflow():
    """
        x ─ Relu ─ Mul(×1000) ─ Mul(×1000) ─ Sub(1e6) ─ Mul(1e-6) ─ y      (= x - 1 for x >= 0)
            half   half (≤ 2000) └──────── float: values reach 2e6, past half's range ────┘
    """
    init = [numpy_helper.from_array(np.float32(v), n) for n, v in (("k", 1000.0), ("off", 1e6), ("s", 1e-6))]
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="relu"), helper.make_node("Mul", ["a", "k"], ["b"], name="m1"),
             helper.make_node("Mul", ["b", "k"], ["c"], name="m2"),
             helper.make_node("Sub", ["c", "off"], ["d"], name="sub"),
             helper.make_node("Mul", ["d", "s"], ["y"], name="m3")]
    m = _model(nodes, [_vi("x", [4, 8])], [_vi("y", [4, 8])], init)
    x = np.linspace(0, 2, 32, dtype=np.float32).reshape(4, 8)
    exe = _gpu().compile(hetero.read_model(m), {"INFERENCE_PRECISION_HINT": "f16"})
    assert exe.plan.half_nodes == {"relu", "m1"}
    y = exe.run({"x": x})["y"]
    from hetero.devices.opencl import f16_allclose

    assert np.all(np.isfinite(y)) and f16_allclose(y, x - 1)
    # all-half storage would have overflowed: 2e6 is not a half
    assert float(np.finfo(np.float16).max) < 2e6


def test_pip_installed_runtime_found_once_and_ordered_after_the_loaders_own(tmp_path):
    """icd.py registers a pip-installed OpenCL runtime (intel-opencl-rt), unless a vendors file already
    names its library (a system-wide install would otherwise show up twice); discovery lists it after
    the platforms the loader found by itself (pyopencl's PoCL stays GPU.0)."""
    from hetero.devices.opencl import icd

    named = tmp_path / "intel64.icd"
    named.write_text("/opt/intel/oneapi/lib/libintelocl.so\n")
    assert icd._found([named]) == {}
    installed = [d / "libintelocl.so" for d in icd._lib_dirs() if (d / "libintelocl.so").is_file()]
    found = icd._found([])
    assert set(found.values()) <= set(installed)
    if not icd.REGISTERED:
        return
    platforms = [CORE._registry.get(d).cl_device.platform.name for d in GPUS]
    kinds = [CORE.get_property(d, "DEVICE_TYPE") for d in GPUS]
    for i, (p, k) in enumerate(zip(platforms, kinds)):
        if p in icd.REGISTERED:
            assert all(platforms[j] in icd.REGISTERED for j in range(i, len(GPUS)) if kinds[j] == k), platforms


# ---- half arithmetic (cl_khr_fp16) -------------------------------------------------------------------

HALF_DEVICES = [d for d in GPUS if CORE._registry.get(d).has_fp16]
needs_fp16 = pytest.mark.skipif(not HALF_DEVICES, reason="no OpenCL device with cl_khr_fp16 (the test extra's "
                                "intel-opencl-rt has one; PoCL 3 has not)")


def _half_math(launch) -> bool:
    return ("HALF_MATH", None) in launch.program.defines


# cases whose kernels must take HALF_MATH (elementwise, pools, BatchNormalization, copies) and cases that
# must not (long reductions accumulate in float); the GEMM / conv cases take it where half_sums_ok allows
HALF_MATH_CASES = ["Add_broadcast", "Sub_rows", "Mul_lastaxis", "Div", "PRelu", "Max_3", "Min_2", "Sum_3", "Mean_3",
                   "Less", "Where", "Relu", "Abs", "Neg", "Floor", "Sign", "LeakyRelu", "ThresholdedRelu",
                   "Clip_consts", "MaxPool_3x3_s2_p1", "MaxPool_ceil", "BatchNormalization",
                   "FusedBatchNormalization_relu"]
FLOAT_MATH_CASES = ["Softmax_axis1", "LayerNormalization", "ReduceMean_axis1", "LRN"]
MIXED_CASES = ["Exp", "Softplus", "HardSwish", "Gelu", "Gemm_transB_bias", "Gemm_transA_alpha_beta", "MatMul_2d_odd",
               "MatMul_batch_fold", "MatMul_wide_runtime_B", "Conv_3x3_pad", "Conv_stride2_nobias", "Conv_1x1",
               "Conv_1x1_wide", "Conv_groups", "Conv_depthwise", "Conv_depthwise_mult2", "Conv_dilated",
               "FusedConv_relu_residual", "FusedConv_dw_leaky", "FusedConv_fulltile_residual_clip",
               "FusedGemm_fulltile_fullbias", "FusedMatMul_fulltile_hardswish", "AveragePool_incl_pad",
               "AveragePool_excl_pad"]


@needs_fp16
@pytest.mark.parametrize("style", ["", "gpu"])
@pytest.mark.parametrize("case_id", HALF_MATH_CASES + FLOAT_MATH_CASES + MIXED_CASES)
def test_half_math_within_tolerance(case_id, style, monkeypatch):
    """f16 on a cl_khr_fp16 device with half arithmetic on (HETERO_OCL_HALF_MATH=1: CPU implementations
    leave it off by default), in the kernel shapes for CPUs and for GPUs (local-memory GEMM tiles)."""
    monkeypatch.setenv("HETERO_OCL_HALF_MATH", "1")
    if style:
        monkeypatch.setenv("HETERO_OCL_STYLE", style)
    model, feeds, expected = _f16_case(case_id)
    for dev in HALF_DEVICES:
        compiled = CORE.compile_model(model, dev, {"INFERENCE_PRECISION_HINT": "f16"})
        launches = compiled._runner.plan.launches
        if case_id in HALF_MATH_CASES:
            assert any(_half_math(l) for l in launches), f"{case_id} on {dev}: no kernel computed in half"
        if case_id in FLOAT_MATH_CASES:
            assert not any(_half_math(l) for l in launches), f"{case_id} on {dev}: a reduction computed in half"
        _assert_f16(compiled(feeds), expected, f"{case_id} on {dev}")


@needs_fp16
@pytest.mark.parametrize("style", ["", "gpu"])
def test_half_math_sums_in_half(style, monkeypatch):
    """
        x [1, 32] ─ MatMul(W = 0.25 everywhere, [32, 1]) ─ y [1, 1]        x = [8192, 4, 4, ..., 4]

    The products are 2048, then 31 ones. In half, 2048 + 1 is a tie between 2048 and 2050 and rounds to
    2048, so a block summed in half stays at 2048; float sums 2079 (stored as half: 2080). gemm_reg sums
    its 32 steps as one half block (KB_HALF = 32): 2048. gemm_local's blocks are its 16-deep tiles: the
    first sums to 2048, the second to 16 exactly, the float accumulator takes both: 2064.
    """
    monkeypatch.setenv("HETERO_OCL_HALF_MATH", "1")
    if style:
        monkeypatch.setenv("HETERO_OCL_STYLE", style)
    w = numpy_helper.from_array(np.full((32, 1), 0.25, np.float32), "w")
    m = _model([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], [_vi("x", [1, 32])], [_vi("y", [1, 1])],
               [w])
    x = np.full((1, 32), 4.0, np.float32)
    x[0, 0] = 8192.0
    for dev in HALF_DEVICES:
        exe = CORE._registry.get(dev).compile(hetero.read_model(m), {"INFERENCE_PRECISION_HINT": "f16"})
        (gemm,) = [l for l in exe.plan.launches if l.kernel.startswith("gemm")]
        assert _half_math(gemm)
        want = {"gemm_reg": 2048.0, "gemm_local": 2064.0}[gemm.kernel]
        assert float(exe.run({"x": x})["y"][0, 0]) == want
        monkeypatch.setenv("HETERO_OCL_HALF_MATH", "0")
        exe = CORE._registry.get(dev).compile(hetero.read_model(m), {"INFERENCE_PRECISION_HINT": "f16"})
        assert not any(_half_math(l) for l in exe.plan.launches)
        assert float(exe.run({"x": x})["y"][0, 0]) == 2080.0
        monkeypatch.setenv("HETERO_OCL_HALF_MATH", "1")


def test_half_sums_ok_bounds_a_block_of_products():
    from hetero.devices.opencl.plan import HALF_SAFE, half_sums_ok

    # 3x3 conv weights [64, 27], |w| <= 0.5: a (padded) block of 32 sums to <= 13.5, x 4096 < 65504
    assert half_sums_ok(np.full((64, 27), -0.5, np.float32))
    # one row's block sums to 20: 20 x 4096 > 65504
    w = np.zeros((4, 64), np.float32)
    w[2, 32:52] = 1.0
    assert not half_sums_ok(w)
    assert half_sums_ok(w, block=8)  # the same weights in blocks of 8 sum to <= 8
    assert not half_sums_ok(None)  # both operands computed: no bound
    assert not half_sums_ok(np.array([[np.inf]], np.float32))
    assert half_sums_ok(np.full((1, 32), 65504.0 / HALF_SAFE / 32, np.float32))


@needs_gpu
def test_half_math_default_only_where_half_is_native(monkeypatch):
    """HALF_MATH by default on a GPU with cl_khr_fp16; not on CPU implementations (measured slower there),
    and never without cl_khr_fp16 (PoCL 3), whatever the knob says."""
    for name in GPUS:
        d = CORE._registry.get(name)
        monkeypatch.delenv("HETERO_OCL_HALF_MATH", raising=False)
        assert d.half_math == (d.has_fp16 and d.kind != "cpu-opencl")
        assert ("FP16_ARITHMETIC" in CORE.get_property(name, "OPTIMIZATION_CAPABILITIES")) == d.half_math
        monkeypatch.setenv("HETERO_OCL_HALF_MATH", "1")
        assert d.half_math == d.has_fp16
        monkeypatch.setenv("HETERO_OCL_HALF_MATH", "0")
        assert not d.half_math


# ---- compile cache ----------------------------------------------------------------------------------

@needs_gpu
def test_cache_dir_stores_binaries_and_a_later_compile_loads_them(tmp_path):
    from hetero.devices.opencl.programs import PROGRAMS

    rng = np.random.default_rng(3)
    W = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "W")
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])]
    m = _model(nodes, [_vi("x", [1, 3, 8, 8])], [_vi("y", [1, 4, 8, 8])], [W])
    cfg = {"CACHE_DIR": str(tmp_path / "cache")}
    PROGRAMS.clear()
    cold = CORE.compile_model(m, "GPU", cfg)
    assert cold.get_property("LOADED_FROM_CACHE") is False
    files = sorted((tmp_path / "cache").glob("hetero_ocl_*.bin"))
    assert len(files) == cold._runner.program_count >= 2
    PROGRAMS.clear()  # forget the in-process programs: the next compile must come from the files
    loads = PROGRAMS.binary_loads
    warm = CORE.compile_model(m, "GPU", cfg)
    assert warm.get_property("LOADED_FROM_CACHE") is True and warm._runner.loaded_from_cache
    assert PROGRAMS.binary_loads - loads == len(files)
    assert warm._runner.compile_time > 0 and cold._runner.compile_time > 0
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(cold({"x": x})[0], warm({"x": x})[0])
    # another config (f16) is another set of programs (and a calibration): not from the cache ...
    PROGRAMS.clear()
    f16 = dict(cfg, INFERENCE_PRECISION_HINT="f16")
    other = CORE.compile_model(m, "GPU", f16)
    assert other.get_property("LOADED_FROM_CACHE") is False
    assert len(list((tmp_path / "cache").glob("hetero_ocl_wide_*.json"))) == 1
    # ... until it is compiled again
    PROGRAMS.clear()
    again = CORE.compile_model(m, "GPU", f16)
    assert again.get_property("LOADED_FROM_CACHE") is True
    np.testing.assert_array_equal(other({"x": x})[0], again({"x": x})[0])


# ---- streams ----------------------------------------------------------------------------------------

def _conv_model():
    rng = np.random.default_rng(4)
    W = rng.standard_normal((8, 4, 3, 3)).astype(np.float32)
    B = rng.standard_normal(8).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]), helper.make_node("GlobalAveragePool", ["r"], ["y"])]
    m = _model(nodes, [_vi("x", [1, 4, 10, 10])], [_vi("y", [1, 8, 1, 1])],
               [numpy_helper.from_array(W, "W"), numpy_helper.from_array(B, "B")])
    return m


def _ref(m, x):
    from onnx.reference import ReferenceEvaluator

    return ReferenceEvaluator(m).run(None, {"x": x})[0]


@needs_gpu
def test_streams_have_their_own_queues_and_many_requests_in_flight_are_correct():
    m = _conv_model()
    dev = _gpu()
    assert dev.optimal_streams({"PERFORMANCE_HINT": "THROUGHPUT"}) > 1
    assert dev.optimal_streams({"PERFORMANCE_HINT": "LATENCY"}) == 1
    compiled = CORE.compile_model(m, "GPU", {"PERFORMANCE_HINT": "THROUGHPUT"})
    assert compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS") > 1
    exe = compiled._runner
    c1, c2 = exe.new_context(), exe.new_context()
    assert c1.queue is not c2.queue and c1.slots[0] is not c2.slots[0]
    rng = np.random.default_rng(5)
    xs = [rng.standard_normal((1, 4, 10, 10)).astype(np.float32) for _ in range(24)]
    refs = [_ref(m, x) for x in xs]
    results = {}
    queue = hetero.AsyncInferQueue(compiled, 6)
    queue.set_callback(lambda req, i: results.__setitem__(i, req.get_output_tensor(0).copy()))
    for i, x in enumerate(xs):
        queue.start_async({"x": x}, i)
    queue.wait_all()
    assert sorted(results) == list(range(24))
    for i in range(24):
        np.testing.assert_allclose(results[i], refs[i], rtol=1e-4, atol=1e-5)
    # plain threads, each with its own request
    errors = []

    def worker(k):
        try:
            req = compiled.create_infer_request()
            for j in range(k, 24, 4):
                np.testing.assert_allclose(req.infer({"x": xs[j]})[0], refs[j], rtol=1e-4, atol=1e-5)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


# ---- profiling --------------------------------------------------------------------------------------

@needs_gpu
def test_profiling_records_every_node():
    m = _conv_model()
    g = hetero.read_model(m)
    exe = _gpu().compile(g)
    prof = []
    exe.run({"x": np.zeros((1, 4, 10, 10), np.float32)}, None, prof)
    assert [(r.node_name, r.node_type) for r in prof] == [(n.name, n.op_type) for n in g.nodes]
    assert all(r.status == "EXECUTED" and r.real_time > 0 and r.exec_type.startswith("ocl_") for r in prof)
    assert prof[0].exec_type == "ocl_im2col+gemm_reg" or prof[0].exec_type == "ocl_im2col+gemm_local"
    compiled = CORE.compile_model(m, "GPU", {"PERF_COUNT": True})
    req = compiled.create_infer_request()
    req.infer({"x": np.zeros((1, 4, 10, 10), np.float32)})
    info = req.get_profiling_info()
    assert any(i.node_type == "FusedConv" and i.status == "EXECUTED" for i in info)
