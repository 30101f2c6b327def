"""CPU kernels of control flow, sequences/optionals, recurrent nets, losses, signal processing, strings,
traditional ML, random and training ops, run through hetero.compile_model on tiny models and checked
against onnx.reference or numpy formulas."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from onnx import TensorProto as TP
from onnx import helper
from onnx.reference import ReferenceEvaluator

import hetero

rng = np.random.default_rng(7)
ML = "ai.onnx.ml"
TRAIN = "ai.onnx.preview.training"


def F(*s, dtype=np.float32):
    return rng.standard_normal(s).astype(dtype)


def _tt(a) -> int:
    a = np.asarray(a)
    return TP.STRING if a.dtype == object else helper.np_dtype_to_tensor_dtype(a.dtype)


def _vi(name, value):
    if isinstance(value, list):
        elem = helper.make_tensor_type_proto(_tt(value[0]) if value else TP.FLOAT, None)
        return helper.make_value_info(name, helper.make_sequence_type_proto(elem))
    a = np.asarray(value)
    return helper.make_tensor_value_info(name, _tt(a), a.shape)


def _model(nodes, feeds, outs, opsets):
    """outs: list of (name, example value) giving the graph outputs' types."""
    g = helper.make_graph(nodes, "g", [_vi(k, v) for k, v in feeds.items()], [_vi(n, v) for n, v in outs])
    imports = [helper.make_opsetid(d, v) for d, v in opsets.items()]
    return helper.make_model(g, opset_imports=imports)


def _ref(nodes, feeds, out_names, opsets):
    g = helper.make_graph(nodes, "g", [_vi(k, v) for k, v in feeds.items()],
                          [helper.make_value_info(n, helper.TypeProto()) for n in out_names])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ReferenceEvaluator(m).run(None, feeds)


def run(nodes, feeds, out_names, opsets=None, expected=None):
    """Run nodes on hetero's CPU. ``expected`` defaults to onnx.reference's outputs and gives the types."""
    if not isinstance(nodes, list):
        nodes = [nodes]
    opsets = dict(opsets or {"": 18})
    opsets.setdefault("", 18)
    exp = expected if expected is not None else _ref(nodes, feeds, out_names, opsets)
    res = hetero.compile_model(_model(nodes, feeds, list(zip(out_names, exp)), opsets), "CPU")(feeds)
    return [res[k] for k in range(len(out_names))], exp


def assert_same(got, exp, rtol=1e-5, atol=1e-6):
    if isinstance(exp, list):
        assert isinstance(got, list) and len(got) == len(exp)
        for g, e in zip(got, exp):
            assert_same(g, e, rtol, atol)
        return
    exp = np.asarray(exp)
    got = np.asarray(got)
    assert got.shape == exp.shape, (got.shape, exp.shape)
    assert got.dtype == exp.dtype, (got.dtype, exp.dtype)
    if exp.dtype == object:
        np.testing.assert_array_equal(got, exp)
    else:
        np.testing.assert_allclose(got, exp, rtol=rtol, atol=atol)


def check(nodes, feeds, out_names, opsets=None, expected=None, rtol=1e-5, atol=1e-6):
    got, exp = run(nodes, feeds, out_names, opsets, expected)
    for g, e in zip(got, exp):
        assert_same(g, e, rtol, atol)


# ---- control flow --------------------------------------------------------------------------

def _vt(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def test_if_uses_outer_scope():
    then_g = helper.make_graph([helper.make_node("Add", ["x", "x"], ["t"])], "then", [], [_vt("t", TP.FLOAT, [3])])
    else_g = helper.make_graph([helper.make_node("Neg", ["x"], ["e"])], "else", [], [_vt("e", TP.FLOAT, [3])])
    x = F(3)
    for c in (True, False):
        node = helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g)
        check(node, {"c": np.array(c), "x": x}, ["y"], expected=[x + x if c else -x])


def _loop_body():
    return helper.make_graph(
        [helper.make_node("Add", ["v_in", "step"], ["v_out"]),
         helper.make_node("ReduceSum", ["v_out"], ["s"], keepdims=0),
         helper.make_node("Less", ["s", "lim"], ["c_out"]),
         helper.make_node("Cast", ["i"], ["i_f"], to=TP.FLOAT),
         helper.make_node("Mul", ["v_out", "i_f"], ["scan"])],
        "body", [_vt("i", TP.INT64, []), _vt("c", TP.BOOL, []), _vt("v_in", TP.FLOAT, [2])],
        [_vt("c_out", TP.BOOL, []), _vt("v_out", TP.FLOAT, [2]), _vt("scan", TP.FLOAT, [2])])


@pytest.mark.parametrize("trip", [None, 2, 10, 0])
def test_loop_trip_count_condition_and_scan_outputs(trip):
    body = _loop_body()
    feeds = {"c0": np.array(True), "v0": np.zeros(2, np.float32), "step": np.ones(2, np.float32),
             "lim": np.array(9.0, np.float32)}
    ins = ["", "c0", "v0"]
    if trip is not None:
        feeds["M"] = np.array(trip, np.int64)
        ins[0] = "M"
    # expected by hand: v grows by 1 per iteration; stops when sum(v) >= 9 (after 5 iterations) or at M
    n = 5 if trip is None else min(trip, 5)
    v = np.full(2, float(n), np.float32)
    scan = np.array([np.full(2, k + 1.0) * k for k in range(n)], np.float32).reshape(n, 2)
    check(helper.make_node("Loop", ins, ["v", "sc"], body=body), feeds, ["v", "sc"], expected=[v, scan])


def test_scan_axes_and_directions():
    body = helper.make_graph(
        [helper.make_node("Add", ["s_in", "a"], ["s_out"]), helper.make_node("Mul", ["a", "b"], ["o1"]),
         helper.make_node("Identity", ["s_out"], ["o2"])],
        "body", [_vt("s_in", TP.FLOAT, [2]), _vt("a", TP.FLOAT, [2]), _vt("b", TP.FLOAT, [2])],
        [_vt("s_out", TP.FLOAT, [2]), _vt("o1", TP.FLOAT, [2]), _vt("o2", TP.FLOAT, [2])])
    A, B = F(4, 2), F(2, 4)
    node = helper.make_node("Scan", ["s0", "A", "B"], ["s", "y1", "y2"], body=body, num_scan_inputs=2,
                            scan_input_axes=[0, 1], scan_input_directions=[1, 0],
                            scan_output_directions=[0, 1], scan_output_axes=[1, 0])
    s = np.cumsum(A[::-1], axis=0)
    expected = [s[-1], (A[::-1] * B.T).T, s[::-1]]
    check(node, {"s0": np.zeros(2, np.float32), "A": A, "B": B}, ["s", "y1", "y2"], opsets={"": 16},
          expected=expected)


# ---- sequences and optionals ---------------------------------------------------------------

@pytest.mark.parametrize("split,axis,keep,new_axis,cax", [
    (None, 1, 1, 0, 1), (None, -1, 0, 1, -1), (np.array(3, np.int64), 1, 1, 0, 1),
    (np.array([1, 2], np.int64), 0, 1, 0, 0)])
def test_sequence_chain(split, axis, keep, new_axis, cax):
    nodes = [helper.make_node("SplitToSequence", ["x"] + (["sp"] if split is not None else []), ["seq"],
                              axis=axis, keepdims=keep),
             helper.make_node("SequenceErase", ["seq", "pos"], ["seq2"]),
             helper.make_node("SequenceInsert", ["seq2", "extra"], ["seq3"]),
             helper.make_node("SequenceLength", ["seq3"], ["n"]),
             helper.make_node("SequenceAt", ["seq3", "neg"], ["last"]),
             helper.make_node("ConcatFromSequence", ["seq2"], ["cat"], axis=cax, new_axis=new_axis)]
    x = F(3, 7)
    feeds = {"x": x, "pos": np.array(0, np.int64), "neg": np.array(-2, np.int32)}
    if split is not None:
        feeds["sp"] = split
    # the inserted tensor matches the pieces' shape
    piece = np.split(x, [1], axis=axis)[0] if split is None else None
    if split is None:
        piece = np.take(x, [0], axis=axis) if keep else np.take(x, 0, axis=axis)
    elif split.ndim == 0:
        piece = x[:, :3]
    else:
        piece = x[:1]
    feeds["extra"] = np.ascontiguousarray(piece)
    check(nodes, feeds, ["n", "last", "cat"])


def test_sequence_construct_and_map_and_optional():
    a, b = F(2, 3), F(4, 3)
    body = helper.make_graph([helper.make_node("Shape", ["t"], ["s"])], "b", [_vt("t", TP.FLOAT, None)],
                             [_vt("s", TP.INT64, [2])])
    nodes = [helper.make_node("SequenceConstruct", ["a", "b"], ["seq"]),
             helper.make_node("SequenceMap", ["seq"], ["shapes"], body=body),
             helper.make_node("ConcatFromSequence", ["shapes"], ["y"], axis=0, new_axis=1),
             helper.make_node("Optional", ["a"], ["opt"]),
             helper.make_node("OptionalHasElement", ["opt"], ["has"]),
             helper.make_node("OptionalGetElement", ["opt"], ["got"]),
             helper.make_node("OptionalHasElement", [], ["none"])]
    check(nodes, {"a": a, "b": b}, ["y", "has", "got", "none"],
          expected=[np.array([[2, 3], [4, 3]], np.int64), np.array(True), a, np.array(False)])


# ---- recurrent nets ------------------------------------------------------------------------

def _rnn_feeds(gates, nd, T=4, B=3, I=5, H=4, layout=0, peep=False, lstm=False):
    f = {"X": F(T, B, I) if layout == 0 else F(B, T, I), "W": F(nd, gates * H, I) * 0.5,
         "R": F(nd, gates * H, H) * 0.5, "B": F(nd, 2 * gates * H) * 0.3}
    hs = (nd, B, H) if layout == 0 else (B, nd, H)
    f["h0"] = F(*hs)
    if lstm:
        f["c0"] = F(*hs)
    if peep:
        f["P"] = F(nd, 3 * H)
    return f


@pytest.mark.parametrize("op,gates,extra", [
    ("RNN", 1, {}),
    ("GRU", 3, {"linear_before_reset": 1}),
    ("GRU", 3, {"layout": 1}),
    ("LSTM", 4, {"input_forget": 0}),
    ("LSTM", 4, {"layout": 1}),
])
def test_recurrent_bidirectional_against_reference(op, gates, extra):
    lstm = op == "LSTM"
    f = _rnn_feeds(gates, 2, layout=extra.get("layout", 0), peep=lstm, lstm=lstm)
    ins = ["X", "W", "R", "B", "", "h0"] + (["c0", "P"] if lstm else [])
    outs = ["Y", "Y_h"] + (["Y_c"] if lstm else [])
    node = helper.make_node(op, ins, outs, hidden_size=4, direction="bidirectional", **extra)
    check(node, f, outs, opsets={"": 14}, rtol=1e-4, atol=1e-5)


def test_rnn_activations_with_alpha_beta():
    f = _rnn_feeds(1, 2)
    node = helper.make_node("RNN", ["X", "W", "R", "B", "", "h0"], ["Y", "Y_h"], hidden_size=4,
                            direction="bidirectional", activations=["LeakyRelu", "HardSigmoid"],
                            activation_alpha=[0.2, 0.3], activation_beta=[0.4])
    acts = [lambda v: np.where(v >= 0, v, 0.2 * v), lambda v: np.clip(0.3 * v + 0.4, 0, 1)]
    Y = np.zeros((4, 2, 3, 4), np.float32)
    Yh = np.zeros((2, 3, 4), np.float32)
    for d in range(2):
        h = f["h0"][d]
        for t in (range(4) if d == 0 else range(3, -1, -1)):
            h = acts[d](f["X"][t] @ f["W"][d].T + h @ f["R"][d].T + f["B"][d, :4] + f["B"][d, 4:])
            Y[t, d] = h
        Yh[d] = h
    check(node, f, ["Y", "Y_h"], opsets={"": 14}, expected=[Y, Yh], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_lstm_sequence_lens_masks_steps(direction):
    f = _rnn_feeds(4, 1, lstm=True)
    lens = np.array([4, 2, 1], np.int32)
    node = helper.make_node("LSTM", ["X", "W", "R", "B", "sl", "h0", "c0"], ["Y", "Y_h", "Y_c"], hidden_size=4,
                            direction=direction)
    feeds = dict(f, sl=lens)
    got, _ = run(node, feeds, ["Y", "Y_h", "Y_c"], opsets={"": 14},
                 expected=[np.zeros((4, 1, 3, 4), np.float32), np.zeros((1, 3, 4), np.float32),
                           np.zeros((1, 3, 4), np.float32)])
    Y, Yh, Yc = (np.asarray(g) for g in got)
    # each batch item equals an unpadded run on its own prefix
    for b, L in enumerate(lens):
        sub = {"X": f["X"][:L, b:b + 1], "W": f["W"], "R": f["R"], "B": f["B"], "h0": f["h0"][:, b:b + 1],
               "c0": f["c0"][:, b:b + 1]}
        n2 = helper.make_node("LSTM", ["X", "W", "R", "B", "", "h0", "c0"], ["Y", "Y_h", "Y_c"], hidden_size=4,
                              direction=direction)
        ry, rh, rc = _ref([n2], sub, ["Y", "Y_h", "Y_c"], {"": 14})
        np.testing.assert_allclose(Y[:L, :, b], ry[:, :, 0], rtol=1e-4, atol=1e-5)
        assert not Y[L:, :, b].any()
        np.testing.assert_allclose(Yh[:, b], rh[:, 0], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(Yc[:, b], rc[:, 0], rtol=1e-4, atol=1e-5)


# ---- losses --------------------------------------------------------------------------------

@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("weighted", [False, True])
def test_losses_with_ignore_index(reduction, weighted):
    x = F(3, 4, 5)
    t = rng.integers(0, 4, (3, 5)).astype(np.int64)
    t[0, :2] = -1
    feeds = {"x": x, "t": t}
    ins = ["x", "t"]
    w = np.ones(4, np.float32)
    if weighted:
        w = feeds["w"] = rng.random(4).astype(np.float32)
        ins.append("w")

    def expected(logp):
        valid = t != -1
        tt = np.where(valid, t, 0)
        wt = np.where(valid, w[tt], 0).astype(np.float64)
        loss = -np.take_along_axis(logp.astype(np.float64), tt[:, None], 1)[:, 0] * wt
        r = loss if reduction == "none" else loss.sum() if reduction == "sum" else loss.sum() / wt.sum()
        return np.asarray(r, np.float32)

    # (onnx.reference divides an unweighted mean by all elements, ignored ones included; ORT and the
    # spec's function body divide by the non-ignored count, as hetero does)
    check(helper.make_node("NegativeLogLikelihoodLoss", ins, ["y"], reduction=reduction, ignore_index=-1),
          feeds, ["y"], opsets={"": 13}, expected=[expected(x)], rtol=1e-5, atol=1e-6)
    m = x.max(axis=1, keepdims=True)
    logp = (x - m - np.log(np.exp(x - m).sum(axis=1, keepdims=True))).astype(np.float32)
    check(helper.make_node("SoftmaxCrossEntropyLoss", ins, ["y", "lp"], reduction=reduction, ignore_index=-1),
          feeds, ["y", "lp"], opsets={"": 13}, expected=[expected(logp), logp], rtol=1e-5, atol=1e-5)


# ---- signal processing ---------------------------------------------------------------------

def _cplx(a):
    return np.stack([a.real, a.imag], axis=-1).astype(np.float32)


@pytest.mark.parametrize("opset", [17, 20])
def test_dft_variants(opset):
    x = F(2, 8, 6)
    xc = x + 1j * F(2, 8, 6)

    def node(ins, **kw):
        if opset == 20:
            ax = kw.pop("axis")
            return helper.make_node("DFT", ins + [""] * (2 - len(ins)) + ["ax"], ["y"], **kw), ax
        return helper.make_node("DFT", ins, ["y"], **kw), None

    cases = [
        (x[..., None], {"axis": 1}, np.fft.fft(x, axis=1), None),
        (_cplx(xc), {"axis": 2, "inverse": 1}, np.fft.ifft(xc, axis=2), None),
        (x[..., None], {"axis": 1, "onesided": 1}, np.fft.rfft(x, axis=1), None),
        (x[..., None], {"axis": 2}, np.fft.fft(x, n=9, axis=2), 9),
        (_cplx(np.fft.rfft(x, axis=1)), {"axis": 1, "onesided": 1, "inverse": 1}, np.fft.irfft(np.fft.rfft(x, axis=1), n=8, axis=1)[..., None], 8),
    ]
    for inp, kw, exp, n in cases:
        ins = ["x"] + (["n"] if n is not None else [])
        nd, ax = node(ins, **dict(kw))
        feeds = {"x": inp}
        if n is not None:
            feeds["n"] = np.array(n, np.int64)
        if ax is not None:
            feeds["ax"] = np.array(ax, np.int64)
        expected = exp.astype(np.float32) if exp.ndim == inp.ndim else _cplx(exp)
        check(nd, feeds, ["y"], opsets={"": opset}, expected=[expected], rtol=1e-4, atol=1e-4)


def test_stft_with_window_and_windows():
    sig = F(2, 40, 1)
    win = np.hanning(8).astype(np.float32)
    node = helper.make_node("STFT", ["s", "st", "w"], ["y"])
    frames = np.stack([sig[:, i * 4:i * 4 + 8, 0] * win for i in range(9)], axis=1)
    exp = _cplx(np.fft.rfft(frames, axis=-1))
    check(node, {"s": sig, "st": np.array(4, np.int64), "w": win}, ["y"], opsets={"": 17}, expected=[exp],
          rtol=1e-4, atol=1e-4)
    n = np.array(10, np.int64)
    k = np.arange(10)
    for op, per, formula in (("HannWindow", 1, 0.5 - 0.5 * np.cos(2 * np.pi * k / 10)),
                             ("HammingWindow", 0, 25 / 46 - 21 / 46 * np.cos(2 * np.pi * k / 9)),
                             ("BlackmanWindow", 1, 0.42 - 0.5 * np.cos(2 * np.pi * k / 10)
                              + 0.08 * np.cos(4 * np.pi * k / 10))):
        check(helper.make_node(op, ["n"], ["y"], periodic=per), {"n": n}, ["y"], opsets={"": 17},
              expected=[formula.astype(np.float32)])


def test_mel_weight_matrix_against_reference():
    feeds = {"a": np.array(10, np.int64), "b": np.array(64, np.int64), "c": np.array(16000, np.int64),
             "d": np.array(20.0, np.float32), "e": np.array(7000.0, np.float32)}
    check(helper.make_node("MelWeightMatrix", list("abcde"), ["y"]), feeds, ["y"], opsets={"": 17})


# ---- strings -------------------------------------------------------------------------------

def test_string_ops():
    x = np.array([["a-b-c", "-"], ["", "abc"]], dtype=object)
    check(helper.make_node("StringSplit", ["x"], ["y", "n"], delimiter="-", maxsplit=1), {"x": x}, ["y", "n"],
          opsets={"": 20})
    ws = np.array(["  a b  c ", "", "x"], dtype=object)
    check(helper.make_node("StringSplit", ["x"], ["y", "n"]), {"x": ws}, ["y", "n"], opsets={"": 20})
    a = np.array([["a"], ["é"]], dtype=object)
    b = np.array(["1", "2", "3"], dtype=object)
    check(helper.make_node("StringConcat", ["a", "b"], ["y"]), {"a": a, "b": b}, ["y"], opsets={"": 20},
          expected=[np.array([["a1", "a2", "a3"], ["é1", "é2", "é3"]], dtype=object)])
    r = np.array([["abc12", "ABC"], ["", "q"]], dtype=object)
    check(helper.make_node("RegexFullMatch", ["x"], ["y"], pattern=r"[a-z]+\d*"), {"x": r}, ["y"],
          opsets={"": 20}, expected=[np.array([[True, False], [False, True]])])
    s = np.array([["The", "cat", "A", "sat"]], dtype=object)
    check(helper.make_node("StringNormalizer", ["x"], ["y"], case_change_action="UPPER", stopwords=["the", "a"]),
          {"x": s}, ["y"], opsets={"": 10}, expected=[np.array([["CAT", "SAT"]], dtype=object)])


# ---- traditional ML ------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["TF", "IDF", "TFIDF"])
@pytest.mark.parametrize("mn,mx,skip", [(1, 1, 0), (1, 2, 0), (2, 2, 3)])
def test_tfidf_vectorizer(mode, mn, mx, skip):
    x = np.array([[1, 1, 3, 3, 3, 7], [8, 6, 7, 5, 6, 8]], dtype=np.int32)
    node = helper.make_node("TfIdfVectorizer", ["x"], ["y"], mode=mode, min_gram_length=mn, max_gram_length=mx,
                            max_skip_count=skip, ngram_counts=[0, 4], ngram_indexes=[0, 1, 2, 3, 4, 5, 6],
                            pool_int64s=[2, 3, 5, 4, 5, 6, 7, 8, 6, 7],
                            weights=[1.0, 0.5, 2.0, 1.5, 0.25, 3.0, 0.75])
    check(node, {"x": x}, ["y"], opsets={"": 9})


def test_tfidf_strings():
    x = np.array([["a", "b", "c", "a", "b"], ["b", "c", "d", "b", "c"]], dtype=object)
    node = helper.make_node("TfIdfVectorizer", ["x"], ["y"], mode="TF", min_gram_length=1, max_gram_length=2,
                            max_skip_count=1, ngram_counts=[0, 3], ngram_indexes=[2, 0, 1, 4, 3],
                            pool_strings=["a", "b", "c", "a", "b", "b", "c"])
    check(node, {"x": x}, ["y"], opsets={"": 9})


def test_label_encoder_and_array_feature_extractor():
    ops = {"": 18, ML: 4}
    xf = np.array([1.5, 2.0, np.nan, 7.0], dtype=np.float32)
    check(helper.make_node("LabelEncoder", ["x"], ["y"], domain=ML, keys_floats=[1.5, 7.0, np.nan],
                           values_strings=["a", "b", "nan"]), {"x": xf}, ["y"], opsets=ops,
          expected=[np.array(["a", "_Unused", "nan", "b"], dtype=object)])
    xi = np.array([[1, 5], [9, 2]], dtype=np.int64)
    check(helper.make_node("LabelEncoder", ["x"], ["y"], domain=ML, keys_int64s=[1, 2, 3],
                           values_floats=[0.5, 0.25, 4.0], default_float=-3.0), {"x": xi}, ["y"], opsets=ops,
          expected=[np.array([[0.5, -3.0], [-3.0, 0.25]], np.float32)])
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    check(helper.make_node("ArrayFeatureExtractor", ["x", "i"], ["y"], domain=ML),
          {"x": x, "i": np.array([3, 1, 1], np.int64)}, ["y"], opsets={"": 18, ML: 1}, expected=[x[..., [3, 1, 1]]])


@pytest.mark.parametrize("agg", [0, 1, 3])
def test_tree_ensemble(agg):
    kw = dict(
        n_targets=2, tree_roots=[0, 3], aggregate_function=agg,
        nodes_featureids=[0, 1, 0, 1, 0],
        nodes_splits=helper.make_tensor("s", TP.FLOAT, [5], [0.5, 0.0, 1.5, -0.5, 0.25]),
        nodes_modes=helper.make_tensor("m", TP.UINT8, [5], [0, 1, 2, 3, 0]),
        nodes_truenodeids=[1, 0, 2, 4, 3], nodes_trueleafs=[0, 1, 1, 0, 1],
        nodes_falsenodeids=[2, 1, 3, 5, 4], nodes_falseleafs=[0, 1, 1, 1, 1],
        nodes_missing_value_tracks_true=[1, 0, 0, 1, 0],
        leaf_targetids=[0, 1, 0, 1, 0, 1],
        leaf_weights=helper.make_tensor("w", TP.FLOAT, [6], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]))
    X = F(8, 2)
    X[0, 0] = np.nan
    # hand-evaluated trees: tree 0 root n0 (f0 <= .5, NaN->true) -> n1 (f1 < 0 ? leaf0 : leaf1)
    #                                                          else n2 (f0 >= 1.5 ? leaf2 : leaf3)
    #                       tree 1 root n3 (f1 > -.5, NaN->true) -> n4 (f0 <= .25 ? leaf3 : leaf4) else leaf5
    f0, f1 = X[:, 0].astype(np.float64), X[:, 1].astype(np.float64)
    t0 = np.where(np.isnan(f0) | (f0 <= 0.5), np.where(f1 < 0, 0, 1), np.where(f0 >= 1.5, 2, 3))
    t1 = np.where(np.isnan(f1) | (f1 > -0.5), np.where(f0 <= 0.25, 3, 4), 5)
    tgt = np.array([0, 1, 0, 1, 0, 1])
    w = np.array([1.0, 2, 3, 4, 5, 6])
    out = np.zeros((8, 2))
    vals = np.full((8, 2), np.nan)
    for leaves in (t0, t1):
        for r in range(8):
            j, v = tgt[leaves[r]], w[leaves[r]]
            out[r, j] += v
            vals[r, j] = v if np.isnan(vals[r, j]) else max(vals[r, j], v)
    exp = out / 2 if agg == 0 else out if agg == 1 else np.nan_to_num(vals, nan=0.0)
    check(helper.make_node("TreeEnsemble", ["x"], ["y"], domain=ML, **kw), {"x": X}, ["y"],
          opsets={"": 21, ML: 5}, expected=[exp.astype(np.float32)])


# ---- random --------------------------------------------------------------------------------

def test_random_ops_shapes_dtypes_and_seeds():
    x = F(3, 4)
    probs = rng.random((5, 6)).astype(np.float32)
    nodes = [helper.make_node("RandomUniform", [], ["u"], shape=[2, 3], low=-1.0, high=2.0, seed=3.0),
             helper.make_node("RandomNormal", [], ["n"], shape=[4], dtype=TP.DOUBLE, seed=3.0),
             helper.make_node("RandomUniformLike", ["x"], ["ul"], seed=1.0),
             helper.make_node("RandomNormalLike", ["x"], ["nl"], dtype=TP.DOUBLE),
             helper.make_node("Bernoulli", ["p"], ["b"], seed=5.0),
             helper.make_node("Multinomial", ["x"], ["m"], sample_size=7, seed=2.0)]
    outs = ["u", "n", "ul", "nl", "b", "m"]
    like = [np.zeros((2, 3), np.float32), np.zeros(4), np.zeros((3, 4), np.float32), np.zeros((3, 4)),
            np.zeros((5, 6), np.float32), np.zeros((3, 7), np.int32)]
    got1, _ = run(nodes, {"x": x, "p": probs}, outs, opsets={"": 18}, expected=like)
    got2, _ = run(nodes, {"x": x, "p": probs}, outs, opsets={"": 18}, expected=like)
    for g, e in zip(got1, like):
        assert g.shape == e.shape and g.dtype == e.dtype
    u, _, ul, _, b, m = got1
    assert (u >= -1).all() and (u < 2).all() and (ul >= 0).all() and (ul < 1).all()
    assert set(np.unique(b)) <= {0.0, 1.0}
    assert (m >= 0).all() and (m < 4).all()
    for k in (0, 1, 2, 4, 5):  # seeded outputs repeat
        np.testing.assert_array_equal(got1[k], got2[k])


# ---- training ------------------------------------------------------------------------------

def test_optimizers_against_reference():
    ops = {"": 18, TRAIN: 1}
    R = np.array(0.1, np.float32)
    T = np.array(3, np.int64)
    x1, x2, g1, g2, v1 = (F(3, 2) for _ in range(5))
    h1, h2 = np.abs(F(3, 2)), np.abs(F(3, 2))
    check(helper.make_node("Adagrad", ["R", "T", "x1", "x2", "g1", "g2", "h1", "h2"], ["a", "b", "c", "d"],
                           domain=TRAIN, decay_factor=0.1, epsilon=1e-5, norm_coefficient=0.01),
          dict(R=R, T=T, x1=x1, x2=x2, g1=g1, g2=g2, h1=h1, h2=h2), ["a", "b", "c", "d"], opsets=ops,
          rtol=1e-5, atol=1e-6)
    adam = helper.make_node("Adam", ["R", "T", "x1", "g1", "v1", "h1"], ["a", "b", "c"], domain=TRAIN, alpha=0.8,
                            beta=0.9, epsilon=1e-5, norm_coefficient=0.01, norm_coefficient_post=0.02)
    feeds = dict(R=R, T=T, x1=x1, g1=g1, v1=v1, h1=h1)
    exp = [np.asarray(e, np.float32) for e in _ref([adam], feeds, ["a", "b", "c"], ops)]  # reference gives f64 X
    check(adam, feeds, ["a", "b", "c"], opsets=ops, expected=exp, rtol=1e-5, atol=1e-6)
    for mode in ("standard", "nesterov"):
        for t in (0, 2):
            check(helper.make_node("Momentum", ["R", "T", "x1", "g1", "v1"], ["a", "b"], domain=TRAIN, alpha=0.8,
                                   beta=0.9, mode=mode, norm_coefficient=0.01),
                  dict(R=R, T=np.array(t, np.int64), x1=x1, g1=g1, v1=v1), ["a", "b"], opsets=ops)


@pytest.mark.parametrize("v1", [False, True])
def test_softmax_into_out_buffer(v1):
    """Softmax written into the memory plan's buffer: the short path for finite rows equals the
    formula; rows with +inf, NaN or all -inf take the general path and give what it gives without
    a buffer."""
    from hetero.devices.cpu.kernels import reduce as RD

    fn = RD.softmax_v1 if v1 else RD.softmax
    axis = 1 if v1 else -1
    x = np.random.default_rng(3).standard_normal((4, 1000)).astype(np.float32)
    out = np.empty_like(x)
    assert fn(x, axis=axis, _out=out) is out
    e = np.exp(x.astype(np.float64) - x.max(axis=1, keepdims=True))
    np.testing.assert_allclose(out, e / e.sum(axis=1, keepdims=True), rtol=1e-5, atol=1e-9)
    x[1, 5], x[2, 7], x[3] = np.inf, np.nan, -np.inf
    want = fn(x.copy(), axis=axis)
    got = fn(x, axis=axis, _out=np.empty_like(x))
    np.testing.assert_array_equal(got, want)
    # +inf: inf / inf there, 0 elsewhere; NaN and all -inf: NaN everywhere
    assert np.isnan(got[1, 5]) and not got[1, :5].any() and np.isnan(got[2:]).all()
