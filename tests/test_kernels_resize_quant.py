"""CPU kernels for resampling (Resize, Upsample, GridSample, AffineGrid), detection (RoiAlign,
NonMaxSuppression), quantization and attention-family ops, checked against onnx.reference (or a
numpy formula) through hetero.compile_model on tiny single-node models."""
from __future__ import annotations

import warnings

import ml_dtypes
import numpy as np
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

import hetero

rng = np.random.default_rng(4321)


def F(*s, dtype=np.float32):
    return rng.standard_normal(s).astype(dtype)


def _tt(a: np.ndarray) -> int:
    return helper.np_dtype_to_tensor_dtype(a.dtype)


def _model(op, inputs, attrs, opset, n_out, domain="", outs=None):
    names = [f"i{k}" if v is not None else "" for k, v in enumerate(inputs)]
    while names and names[-1] == "":
        names.pop()
    onames = [f"o{k}" for k in range(n_out)]
    node = helper.make_node(op, names, onames, domain=domain, **attrs)
    gin = [helper.make_tensor_value_info(n, _tt(v), v.shape) for n, v in zip(names, inputs) if n]
    if outs is None:  # reference only: it doesn't need the output types
        gout = [helper.make_tensor_value_info(o, TensorProto.UNDEFINED, None) for o in onames]
    else:
        gout = [helper.make_tensor_value_info(o, _tt(r), r.shape) for o, r in zip(onames, outs)]
    imports = [helper.make_opsetid("", opset)]
    if domain:
        imports.append(helper.make_opsetid(domain, 1))
    return helper.make_model(helper.make_graph([node], "g", gin, gout), opset_imports=imports)


def _feeds(inputs):
    return {f"i{k}": v for k, v in enumerate(inputs) if v is not None}


def reference(op, inputs, attrs=None, opset=19, n_out=1, domain=""):
    m = _model(op, inputs, attrs or {}, opset, n_out, domain)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ReferenceEvaluator(m).run(None, _feeds(inputs))


def run_hetero(op, inputs, attrs=None, opset=19, n_out=1, like=None, domain=""):
    """Run one node on hetero's CPU; ``like`` (expected outputs) gives the graph outputs' types."""
    m = _model(op, inputs, attrs or {}, opset, n_out, domain, outs=like)
    got = hetero.compile_model(m, "CPU")(_feeds(inputs))
    return [np.asarray(got[k]) for k in range(n_out)]


def run_both(op, inputs, attrs=None, opset=19, n_out=1, domain=""):
    exp = reference(op, inputs, attrs, opset, n_out, domain)
    return run_hetero(op, inputs, attrs, opset, n_out, exp, domain), exp


def check(op, inputs, attrs=None, opset=19, n_out=1, rtol=1e-4, atol=1e-5, domain=""):
    got, exp = run_both(op, inputs, attrs, opset, n_out, domain)
    for g, e in zip(got, exp):
        assert g.dtype == e.dtype, (g.dtype, e.dtype)
        assert g.shape == e.shape, (g.shape, e.shape)
        np.testing.assert_allclose(g.astype(np.float64), e.astype(np.float64), rtol=rtol, atol=atol)
    return got


# ---- Resize / Upsample -------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
@pytest.mark.parametrize("ctm", ["half_pixel", "align_corners", "asymmetric", "half_pixel_symmetric"])
def test_resize_scales(mode, ctm):
    x = F(1, 2, 4, 5)
    scales = np.array([1, 1, 1.5, 0.6], dtype=np.float32)
    check("Resize", [x, None, scales], dict(mode=mode, coordinate_transformation_mode=ctm))


@pytest.mark.parametrize("mode", ["linear", "cubic"])
def test_resize_sizes_antialias_exclude_outside(mode):
    x = F(2, 7, 9)
    sizes = np.array([3, 4], dtype=np.int64)
    check("Resize", [x, None, None, sizes],
          dict(mode=mode, antialias=1, exclude_outside=1, axes=[1, 2], cubic_coeff_a=-0.5))


@pytest.mark.parametrize("policy", ["not_larger", "not_smaller"])
def test_resize_keep_aspect_ratio_nearest_modes(policy):
    x = F(1, 1, 3, 4)
    sizes = np.array([7, 8], dtype=np.int64)
    for nm in ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]:
        check("Resize", [x, None, None, sizes],
              dict(mode="nearest", nearest_mode=nm, axes=[2, 3], keep_aspect_ratio_policy=policy))


def test_resize_tf_crop_and_resize_extrapolation():
    x = F(1, 1, 5, 5)
    roi = np.array([0, 0, -0.2, 0.1, 1, 1, 0.8, 1.3], dtype=np.float32)
    sizes = np.array([1, 1, 4, 6], dtype=np.int64)
    check("Resize", [x, roi, None, sizes],
          dict(mode="linear", coordinate_transformation_mode="tf_crop_and_resize",
               extrapolation_value=-7.0))


def test_resize_uint8_linear_rounds_and_nearest_keeps_dtype():
    x = rng.integers(0, 256, (1, 1, 4, 4)).astype(np.uint8)
    scales = np.array([1, 1, 1.75, 2.5], dtype=np.float32)
    got, exp = run_both("Resize", [x, None, scales], dict(mode="linear"))
    assert got[0].dtype == np.uint8
    assert np.abs(got[0].astype(int) - exp[0].astype(int)).max() <= 1
    check("Resize", [x, None, scales], dict(mode="nearest"))


def test_resize_pytorch_half_pixel_size_one_uses_origin():
    # spec: length_resized == 1 -> x_original = 0 (the first input sample for linear)
    x = np.arange(8, dtype=np.float32).reshape(1, 1, 2, 4)
    sizes = np.array([1, 1, 2, 1], dtype=np.int64)
    y = run_hetero("Resize", [x, None, None, sizes],
                   dict(mode="linear", coordinate_transformation_mode="pytorch_half_pixel"),
                   like=[np.zeros((1, 1, 2, 1), np.float32)])[0]
    np.testing.assert_array_equal(y.reshape(-1), [0.0, 4.0])


def test_resize_opset10_and_upsample():
    x = F(1, 1, 2, 3)
    scales = np.array([1, 1, 2, 3], dtype=np.float32)
    got = check("Upsample", [x, scales], dict(mode="nearest"), opset=9)
    np.testing.assert_array_equal(got[0], np.repeat(np.repeat(x, 2, axis=2), 3, axis=3))
    y = run_hetero("Resize", [x, scales], dict(mode="nearest"), opset=10, like=got)[0]
    np.testing.assert_array_equal(y, got[0])


# ---- GridSample / AffineGrid ---------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["linear", "nearest", "cubic"])
@pytest.mark.parametrize("pad", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("ac", [0, 1])
def test_gridsample_2d(mode, pad, ac):
    x = F(2, 2, 4, 5)
    grid = rng.uniform(-1.6, 1.6, (2, 3, 4, 2)).astype(np.float32)
    check("GridSample", [x, grid], dict(mode=mode, padding_mode=pad, align_corners=ac), opset=22)


def test_gridsample_3d_and_legacy_names():
    x = F(1, 2, 3, 4, 5)
    grid = rng.uniform(-1.2, 1.2, (1, 2, 3, 2, 3)).astype(np.float32)
    check("GridSample", [x, grid], dict(mode="linear", padding_mode="reflection"), opset=22)
    x2 = F(1, 1, 4, 4)
    g2 = rng.uniform(-1, 1, (1, 2, 2, 2)).astype(np.float32)
    exp = reference("GridSample", [x2, g2], dict(mode="cubic"), opset=22)
    got = run_hetero("GridSample", [x2, g2], dict(mode="bicubic"), opset=16, like=exp)
    np.testing.assert_allclose(np.asarray(got[0]), exp[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("ac", [0, 1])
def test_affine_grid(ac):
    theta = F(2, 2, 3)
    check("AffineGrid", [theta, np.array([2, 1, 3, 4], dtype=np.int64)], dict(align_corners=ac),
          opset=20)
    theta3 = F(1, 3, 4)
    check("AffineGrid", [theta3, np.array([1, 1, 2, 3, 4], dtype=np.int64)],
          dict(align_corners=ac), opset=20)


# ---- RoiAlign / NonMaxSuppression ----------------------------------------------------------------

@pytest.mark.parametrize("mode", ["avg", "max"])
@pytest.mark.parametrize("ctm", ["half_pixel", "output_half_pixel"])
def test_roialign(mode, ctm):
    x = F(2, 3, 8, 7)
    rois = np.array([[0, 0, 5, 4], [1.3, 2.1, 6.9, 7.5], [-2, -1, 3, 3], [4, 4, 4.2, 4.1]],
                    dtype=np.float32)
    bi = np.array([0, 1, 1, 0], dtype=np.int64)
    check("RoiAlign", [x, rois, bi],
          dict(mode=mode, coordinate_transformation_mode=ctm, output_height=3, output_width=2,
               sampling_ratio=0, spatial_scale=0.9), opset=22)


@pytest.mark.parametrize("cpb", [0, 1])
def test_nms_matches_reference(cpb):
    c = rng.uniform(0, 10, (2, 25, 2))
    wh = rng.uniform(1, 4, (2, 25, 2))
    if cpb:
        boxes = np.concatenate([c, wh], -1)
    else:
        boxes = np.concatenate([c + wh / 2, c - wh / 2], -1)  # flipped corners are allowed
    boxes = boxes.astype(np.float32)
    scores = (np.round(rng.random((2, 3, 25)) * 8) / 8).astype(np.float32)  # with ties
    ins = [boxes, scores, np.array([4], np.int64), np.array([0.3], np.float32),
           np.array([0.2], np.float32)]
    got, exp = run_both("NonMaxSuppression", ins, dict(center_point_box=cpb), opset=11)
    assert got[0].dtype == np.int64
    np.testing.assert_array_equal(got[0], exp[0])


def test_nms_no_max_output_gives_empty():
    boxes = np.array([[[0, 0, 1, 1]]], dtype=np.float32)
    scores = np.array([[[0.9]]], dtype=np.float32)
    y = run_hetero("NonMaxSuppression", [boxes, scores], opset=11,
                   like=[np.zeros((0, 3), np.int64)])[0]
    assert y.dtype == np.int64 and y.size == 0


# ---- quantization ---------------------------------------------------------------------------

@pytest.mark.parametrize("qt", [np.uint8, np.int8, np.int16, np.uint16, ml_dtypes.int4,
                                ml_dtypes.uint4])
def test_quantize_dequantize_per_axis(qt):
    x = F(3, 4, 5) * 20
    scale = rng.uniform(0.1, 1, 4).astype(np.float32)
    info = ml_dtypes.iinfo(qt)
    zp = rng.integers(info.min, info.max + 1, 4).astype(qt)
    q = check("QuantizeLinear", [x, scale, zp], dict(axis=1), opset=21, atol=0)[0]
    assert q.dtype == np.dtype(qt)
    check("DequantizeLinear", [q, scale, zp], dict(axis=1), opset=21)


def test_quantize_blocked_and_output_dtype():
    x = F(4, 7) * 5
    scale = rng.uniform(0.1, 1, (4, 3)).astype(np.float32)
    q = check("QuantizeLinear", [x, scale], dict(axis=1, block_size=3,
                                                  output_dtype=TensorProto.INT8), opset=21, atol=0)
    assert q[0].dtype == np.int8
    check("DequantizeLinear", [q[0], scale], dict(axis=-1, block_size=3), opset=21)


@pytest.mark.parametrize("saturate", [0, 1])
def test_quantize_float8(saturate):
    x = np.array([0.0, 1.5, -3.25, 500.0, -1e5, 1e5, np.nan], dtype=np.float32)
    scale = np.array(0.5, dtype=np.float32)
    zp = np.zeros((), dtype=ml_dtypes.float8_e4m3fn)
    got, exp = run_both("QuantizeLinear", [x, scale, zp], dict(saturate=saturate), opset=21)
    assert got[0].dtype == exp[0].dtype
    np.testing.assert_array_equal(got[0].astype(np.float32), exp[0].astype(np.float32))


def test_quantize_saturates_overflow_instead_of_wrapping():
    x = np.array([1e6, -1e6, 2.5, 3.5], dtype=np.float32)
    y = run_hetero("QuantizeLinear", [x, np.array(1.0, np.float32), np.array(0, np.int8)],
                   like=[np.zeros(4, np.int8)])[0]
    np.testing.assert_array_equal(y, np.array([127, -128, 2, 4], dtype=np.int8))  # half to even


def test_dynamic_quantize_linear():
    for x in (F(3, 4) * 3, np.abs(F(5)) + 1, -np.abs(F(6)), np.zeros(3, np.float32)):
        like = [np.zeros(x.shape, np.uint8), np.zeros((), np.float32), np.zeros((), np.uint8)]
        got = run_hetero("DynamicQuantizeLinear", [x], opset=11, n_out=3, like=like)
        if not x.any():
            assert got[0].dtype == np.uint8 and not got[0].any()
            continue
        exp = reference("DynamicQuantizeLinear", [x], opset=11, n_out=3)
        for g, e in zip(got, exp):
            g = np.asarray(g)
            assert g.dtype == e.dtype
            np.testing.assert_allclose(g.astype(np.float64), e.astype(np.float64), rtol=1e-6)


# ---- attention family -------------------------------------------------------------------------

def test_attention_gqa_mask_past_all_outputs():
    q, k, v = F(2, 4, 3, 8), F(2, 2, 5, 8), F(2, 2, 5, 6)
    pk, pv = F(2, 2, 2, 8), F(2, 2, 2, 6)
    mask = rng.random((3, 7)) > 0.3
    for mode in range(1, 4):
        check("Attention", [q, k, v, mask, pk, pv],
              dict(is_causal=1, softcap=3.0, qk_matmul_output_mode=mode), opset=23, n_out=4)
    check("Attention", [q, k, v, mask, pk, pv], dict(is_causal=1), opset=23, n_out=4)


def test_attention_mode0_is_raw_qk_even_with_softcap():
    # spec: mode 0 exposes the raw QK matmul (onnx.reference returns the softcapped value here)
    q, k, v = F(1, 2, 3, 4), F(1, 2, 5, 4), F(1, 2, 5, 4)
    like = reference("Attention", [q, k, v], dict(softcap=1.0), opset=23, n_out=4)
    got = run_hetero("Attention", [q, k, v], dict(softcap=1.0), opset=23, n_out=4, like=like)
    np.testing.assert_allclose(got[3], (q / 2) @ np.swapaxes(k, -1, -2), rtol=1e-5, atol=1e-6)


def test_attention_3d_fully_masked_rows_are_zero():
    q, k, v = F(1, 3, 8), F(1, 4, 4), F(1, 4, 4)
    mask = np.zeros((3, 4), dtype=bool)
    mask[1] = True
    got = check("Attention", [q, k, v, mask], dict(q_num_heads=2, kv_num_heads=1), opset=23)
    assert np.isfinite(got[0]).all()
    assert not got[0][0, 0].any() and not got[0][0, 2].any()


def test_attention_window_and_nonpad():
    q, k, v = F(2, 2, 4, 8), F(2, 2, 6, 8), F(2, 2, 6, 8)
    lens = np.array([6, 5], dtype=np.int64)
    check("Attention", [q, k, v, None, None, None, lens],
          dict(is_causal=1, left_window_size=2, right_window_size=0), opset=25)


@pytest.mark.parametrize("interleaved", [0, 1])
def test_rotary_embedding(interleaved):
    x = F(2, 3, 4, 8)
    cos, sin = F(10, 2), F(10, 2)
    pos = rng.integers(0, 10, (2, 4)).astype(np.int64)
    check("RotaryEmbedding", [x, cos, sin, pos],
          dict(interleaved=interleaved, rotary_embedding_dim=4), opset=23)


def test_swiglu_and_causal_conv():
    a, b = F(3, 5), F(3, 5)
    check("SwiGLU", [a, b], dict(alpha=1.5), opset=28)
    x, w, bias, past = F(2, 3, 6), F(3, 1, 4), F(3), F(2, 3, 3)
    check("CausalConvWithState", [x, w, bias, past], dict(activation="silu"), opset=27, n_out=2)


@pytest.mark.parametrize("rule", ["linear", "gated", "delta", "gated_delta"])
def test_linear_attention(rule):
    b, t, hq, hkv, dk, dv = 2, 3, 4, 2, 4, 3
    q, k, v = F(b, t, hq * dk), F(b, t, hkv * dk) * 0.3, F(b, t, hkv * dv)
    past = F(b, hkv, dk, dv)
    decay = -np.abs(F(b, t, hkv)) if rule in ("gated", "gated_delta") else None
    beta = (1 / (1 + np.exp(-F(b, t, hkv)))).astype(np.float32) if "delta" in rule else None
    check("LinearAttention", [q, k, v, past, decay, beta],
          dict(update_rule=rule, q_num_heads=hq, kv_num_heads=hkv), opset=27, n_out=2)
