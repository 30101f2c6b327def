"""The CPU memory plan (hetero/devices/cpu/memory.py) and the arena-backed executor.

1. The plan on fixtures: the exact offsets of a small chain (the optimum), views keeping their base
   alive, outputs and subgraph-read values kept out of the arena.
2. The plan's invariant on random DAGs (hypothesis) and on the light models' graphs: two values whose
   lifetimes overlap never share bytes, with lifetimes recomputed here independently of the planner.
3. Runs with the arena give exactly the arena-less run's results: random DAGs, kernels returning
   their input (the executor's alias guard), the light models over consecutive inferences and with
   many streams in parallel; outputs already returned are not overwritten by later inferences.
"""
from __future__ import annotations

import contextlib
import os
import threading

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from onnx import TensorProto as T, helper as h, numpy_helper as nh

import hetero
from hetero.devices.cpu import CPUExecutable, memory
from hetero.ir import node_value_inputs

LIGHT_DIR = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
F = np.float32


@contextlib.contextmanager
def plan_everything():
    """Plan every static value, however small (the default leaves out those under MIN_BYTES)."""
    old = memory.MIN_BYTES
    memory.MIN_BYTES = 0
    try:
        yield
    finally:
        memory.MIN_BYTES = old


def graph_of(nodes, inputs, outputs, inits=(), opset=17):
    g = h.make_graph(nodes, "g", inputs, outputs, list(inits))
    return hetero.read_model(h.make_model(g, opset_imports=[h.make_opsetid("", opset)]))


def vi(name, shape, t=T.FLOAT):
    return h.make_tensor_value_info(name, t, shape)


def everything(graph):
    return [n.name for n in graph.nodes]


# ---- independent checks ------------------------------------------------------------------------------

def needed_lifetimes(graph, planned):
    """For each planned value: [its producer step, the last step reading it or any value that may be
    a view of it (through VIEW_OPS, transitively)]; INF when a graph output may be such a view."""
    step = {o: i for i, n in enumerate(graph.nodes) for o in n.outputs if o}
    last = {}
    for i, n in enumerate(graph.nodes):
        for v in node_value_inputs(n):
            last[v] = i
    views_of = {}  # value -> values that may view it directly
    for n in graph.nodes:
        if n.op_type in memory.VIEW_OPS:
            for i in n.inputs:
                views_of.setdefault(i, []).extend(o for o in n.outputs if o)
    out = {}
    for c in planned:
        seen, todo = {c}, [c]
        while todo:
            for w in views_of.get(todo.pop(), []):
                if w not in seen:
                    seen.add(w)
                    todo.append(w)
        end = max(max(last.get(v, step[v]), step[v]) for v in seen)
        if seen & set(graph.output_names):
            end = memory.INF
        out[c] = (step[c], end)
    return out


def ancestors(p, v):
    """The Concat outputs whose buffers contain planned value v (memory.py step 5), innermost first."""
    out = []
    while v in p.parents:
        v = p.parents[v]
        out.append(v)
    return out


def assert_no_overlap(graph, p):
    """Values alive at a common step occupy disjoint byte ranges, each inside the arena; a Concat
    input written in place lies inside its Concat's buffer, which lives as long as it does."""
    life = needed_lifetimes(graph, p.offsets)
    for v, (a, b) in life.items():
        assert b < memory.INF, f"{v} aliases a graph output but was planned"
        assert p.lifetimes[v][0] <= a and p.lifetimes[v][1] >= b, (v, p.lifetimes[v], (a, b))
        assert graph.info(v).nbytes <= p.sizes[v]
        assert p.offsets[v] + p.sizes[v] <= p.arena_bytes
        if v in p.parents:
            par = p.parents[v]
            assert p.offsets[par] <= p.offsets[v] and p.offsets[v] + p.sizes[v] <= p.offsets[par] + p.sizes[par]
            top = ancestors(p, v)[-1]
            assert p.lifetimes[top][0] <= a and p.lifetimes[top][1] >= b, (v, top, p.lifetimes[top], (a, b))
        else:
            assert p.offsets[v] % memory.ALIGN == 0
    vals = sorted(life)
    for i, v in enumerate(vals):
        for w in vals[i + 1:]:
            (a0, a1), (b0, b1) = life[v], life[w]
            if w in ancestors(p, v) or v in ancestors(p, w):
                continue  # a slice and the Concat buffer holding it
            if a0 <= b1 and b0 <= a1:  # both alive at some step
                lo_v, lo_w = p.offsets[v], p.offsets[w]
                assert lo_v + p.sizes[v] <= lo_w or lo_w + p.sizes[w] <= lo_v, \
                    f"{v} [{lo_v}, +{p.sizes[v]}) and {w} [{lo_w}, +{p.sizes[w]}) overlap while both alive"
    assert p.arena_bytes <= p.planned_bytes


# ---- 1. fixtures ----------------------------------------------------------------------------------------

# The module doc's chain (float32; sizes in bytes):
#
#   x[1,64] ─Relu─▶ a[1,64] ─Concat(a,a)─▶ b[1,128] ─MatMul W1─▶ c[1,64] ─MatMul W2─▶ d[1,32] ─Relu─▶ y
#   step       0      256          1           512        2           256       3           128   4
#
# Live pairs: a+b (768), b+c (768), c+d (384): the optimum is 768 bytes, and greedy by size finds it:
# b at 0, a and c above it at 512, d in the hole at 0.
def chain_graph():
    rng = np.random.default_rng(0)
    return graph_of(
        [h.make_node("Relu", ["x"], ["a"], name="n0"),
         h.make_node("Concat", ["a", "a"], ["b"], name="n1", axis=1),
         h.make_node("MatMul", ["b", "W1"], ["c"], name="n2"),
         h.make_node("MatMul", ["c", "W2"], ["d"], name="n3"),
         h.make_node("Relu", ["d"], ["y"], name="n4")],
        [vi("x", [1, 64])], [vi("y", [1, 32])],
        [nh.from_array(rng.standard_normal((128, 64)).astype(F), "W1"),
         nh.from_array(rng.standard_normal((64, 32)).astype(F), "W2")])


def test_chain_plan_is_the_optimum():
    g = chain_graph()
    p = memory.plan(g, everything(g), min_bytes=0)
    assert p.offsets == {"b": 0, "a": 512, "c": 512, "d": 0}
    assert p.lifetimes == {"a": (0, 1), "b": (1, 2), "c": (2, 3), "d": (3, 4)}
    assert p.arena_bytes == 768 and p.planned_bytes == 256 + 512 + 256 + 128
    assert p.excluded == {"y": "graph output"}
    assert_no_overlap(g, p)


def test_min_bytes_leaves_small_values_out():
    g = chain_graph()
    p = memory.plan(g, everything(g), min_bytes=512)
    assert p.offsets == {"b": 0} and p.arena_bytes == 512


def test_only_kernels_writing_out_are_planned():
    g = chain_graph()
    p = memory.plan(g, ["n1", "n3"], min_bytes=0)
    assert sorted(p.offsets) == ["b", "d"]
    assert p.offsets == {"b": 0, "d": 0}  # lifetimes [1, 2] and [3, 4] do not meet


# A view keeps its base alive:
#
#   x ─Relu─▶ a ─Reshape─▶ v ──────────────────┐
#   x ─Sigmoid─▶ b ─Relu─▶ c ─Add(c, reshape(v))┴▶ y
#   step 0: a, 1: v (view of a), 2: b, 3: c, 4: r = Reshape(v) (view of a), 5: y
#
# a's own last reader is step 1, but v and r read its memory up to step 5: b and c must not reuse it.
def test_view_extends_the_lifetime_of_its_base():
    g = graph_of(
        [h.make_node("Relu", ["x"], ["a"], name="n0"),
         h.make_node("Reshape", ["a", "s1"], ["v"], name="n1"),
         h.make_node("Sigmoid", ["x"], ["b"], name="n2"),
         h.make_node("Relu", ["b"], ["c"], name="n3"),
         h.make_node("Reshape", ["v", "s2"], ["r"], name="n4"),
         h.make_node("Add", ["c", "r"], ["y"], name="n5")],
        [vi("x", [4, 16])], [vi("y", [4, 16])],
        [nh.from_array(np.array([64], np.int64), "s1"), nh.from_array(np.array([4, 16], np.int64), "s2")])
    p = memory.plan(g, everything(g), min_bytes=0)
    assert sorted(p.offsets) == ["a", "b", "c"]
    assert p.lifetimes["a"] == (0, 5)
    assert p.roots == {"a": {"a"}, "v": {"a"}, "r": {"a"}, "b": {"b"}, "c": {"c"}}
    assert p.offsets["b"] != p.offsets["a"] != p.offsets["c"]
    assert_no_overlap(g, p)
    with plan_everything():
        exe = CPUExecutable(g)
    x = np.random.default_rng(1).standard_normal((4, 16)).astype(F)
    got = exe.run({"x": x}, exe.new_context())["y"]
    np.testing.assert_array_equal(got, np.maximum(1 / (1 + np.exp(-x)), 0) + np.maximum(x, 0))


# A dense block (DenseNet): every Concat input is written straight into its slice of the last
# Concat's buffer; the Concats copy nothing. float32 [1, C, 8], bytes in brackets:
#
#   x ─Relu─▶ a[128] ─Sigmoid─▶ n1[128]            c1 = Concat(a, n1)[256]  (step 2)
#             └──────────────────────────┴─▶ c1 ─Sigmoid─▶ n2[256]
#                                           c2 = Concat(c1, n2)[512] ─Relu─▶ y (graph output)
#
#   c2's buffer [0, 512): c1 = [0, 256) = a [0, 128) + n1 [128, 256), then n2 [256, 512)
def dense_block_graph(batch=1):
    return graph_of(
        [h.make_node("Relu", ["x"], ["a"], name="n0"),
         h.make_node("Sigmoid", ["a"], ["n1"], name="n1"),
         h.make_node("Concat", ["a", "n1"], ["c1"], name="n2", axis=1),
         h.make_node("Sigmoid", ["c1"], ["n2"], name="n3"),
         h.make_node("Concat", ["c1", "n2"], ["c2"], name="n4", axis=1),
         h.make_node("Relu", ["c2"], ["y"], name="n5")],
        [vi("x", [batch, 4, 8])], [vi("y", [batch, 16, 8])])


def test_dense_block_concats_in_place():
    g = dense_block_graph()
    p = memory.plan(g, everything(g), min_bytes=0)
    assert p.parents == {"a": "c1", "n1": "c1", "c1": "c2", "n2": "c2"}
    assert p.offsets == {"c2": 0, "c1": 0, "a": 0, "n1": 128, "n2": 256}
    assert p.lifetimes["c2"] == (0, 5) and p.arena_bytes == 512 and p.planned_bytes == 512
    assert_no_overlap(g, p)
    with plan_everything():
        exe = CPUExecutable(g)
    x = np.random.default_rng(2).standard_normal((1, 4, 8)).astype(F)
    a = np.maximum(x, 0)
    c1 = np.concatenate([a, 1 / (1 + np.exp(-a))], axis=1)
    want = np.maximum(np.concatenate([c1, 1 / (1 + np.exp(-c1))], axis=1), 0)
    ctx = exe.new_context()
    for _ in range(2):  # the second run reuses the arena
        np.testing.assert_allclose(exe.run({"x": x}, ctx)["y"], want, rtol=1e-6)


def test_concat_slices_not_contiguous_are_not_in_place():
    # batch 2: each input's slice of c1/c2 is two runs (one per image): planned apart, copied
    g = dense_block_graph(batch=2)
    p = memory.plan(g, everything(g), min_bytes=0)
    assert p.parents == {}
    assert_no_overlap(g, p)


def test_values_seen_by_the_user_or_a_subgraph_stay_out():
    #   x ─Relu─▶ a ─Flatten─▶ f (graph output: a is aliased by it)
    #   x ─Sigmoid─▶ b ─If(cond) then: Relu(b) else: Neg(b)─▶ y (b is read by the branches)
    #   x ─Relu─▶ c (graph output)
    then_g = h.make_graph([h.make_node("Relu", ["b"], ["t"])], "then", [], [vi("t", [2, 8])])
    else_g = h.make_graph([h.make_node("Neg", ["b"], ["e"])], "else", [], [vi("e", [2, 8])])
    g = graph_of(
        [h.make_node("Relu", ["x"], ["a"], name="n0"),
         h.make_node("Flatten", ["a"], ["f"], name="n1"),
         h.make_node("Sigmoid", ["x"], ["b"], name="n2"),
         h.make_node("If", ["cond"], ["y"], name="n3", then_branch=then_g, else_branch=else_g),
         h.make_node("Relu", ["x"], ["c"], name="n4")],
        [vi("x", [2, 8]), vi("cond", [], T.BOOL)], [vi("f", [2, 8]), vi("y", [2, 8]), vi("c", [2, 8])])
    p = memory.plan(g, everything(g), min_bytes=0)
    assert p.offsets == {} and p.arena_bytes == 0
    assert p.excluded == {"a": "aliased by graph output 'f'", "b": "read by a subgraph", "c": "graph output",
                          "y": "graph output"}


# A kernel returning its input (Mean of one input; Clip without bounds) hands back arena memory the
# plan did not expect to be shared; the executor must copy it, or the next planned value reusing a's
# bytes (c, same offset) would change b under the Add's feet:
#
#   x ─Relu─▶ a ─Mean(a)─▶ b ──┐                    step 0: a, 1: b (== a!), 2: c, 3: y
#   x ─Sigmoid─▶ c ────────────┴─Add─▶ y
@pytest.mark.parametrize("op", ["Mean", "Clip"])
def test_result_aliasing_the_arena_is_copied(op):
    g = graph_of(
        [h.make_node("Relu", ["x"], ["a"], name="n0"),
         h.make_node(op, ["a"], ["b"], name="n1"),
         h.make_node("Sigmoid", ["x"], ["c"], name="n2"),
         h.make_node("Add", ["b", "c"], ["y"], name="n3")],
        [vi("x", [4, 16])], [vi("y", [4, 16])])
    with plan_everything():
        exe = CPUExecutable(g)
    p = exe.memory_plan
    assert p.offsets["a"] == p.offsets["c"]  # c reuses a's bytes: the case that would go wrong
    x = np.random.default_rng(2).standard_normal((4, 16)).astype(F)
    want = np.maximum(x, 0) + 1 / (1 + np.exp(-x))
    ctx = exe.new_context()
    for _ in range(2):
        np.testing.assert_allclose(exe.run({"x": x}, ctx)["y"], want, rtol=1e-6)


def test_streams_own_their_arenas_and_outputs_survive():
    with plan_everything():
        exe = CPUExecutable(chain_graph())
    c1, c2 = exe.new_context(), exe.new_context()
    rng = np.random.default_rng(3)
    x1, x2 = rng.standard_normal((1, 64)).astype(F), rng.standard_normal((1, 64)).astype(F)
    y1 = exe.run({"x": x1}, c1)["y"]
    keep = y1.copy()
    y2 = exe.run({"x": x2}, c2)["y"]
    y1b = exe.run({"x": x2}, c1)["y"]
    assert c1.arena is not c2.arena and not np.shares_memory(c1.arena, c2.arena)
    assert c1.arena.nbytes == exe.memory_plan.arena_bytes == 768
    np.testing.assert_array_equal(y1, keep)  # the second run on stream 1 left the first's output alone
    np.testing.assert_array_equal(y1b, y2)
    np.testing.assert_array_equal(exe.run({"x": x1})["y"], keep)  # context None: no arena, same result
    for y in (y1, y2, y1b):
        assert not np.shares_memory(y, c1.arena) and not np.shares_memory(y, c2.arena)


# A weight computed at run time into the arena: the Conv kernel caches Winograd-transformed weights
# by the weight array's identity, so the arena must not hand it the same object with new contents:
#
#   w_in[64,64,3,3] ─Mul(1)─▶ w (planned, 147 KiB) ──┐
#   x[1,64,14,14] ───────────────────────────────────┴─Conv 3x3 pad 1─▶ y
def test_computed_weights_reach_kernels_as_new_objects_each_run():
    g = graph_of(
        [h.make_node("Mul", ["w_in", "one"], ["w"], name="n0"),
         h.make_node("Conv", ["x", "w"], ["y"], name="n1", pads=[1, 1, 1, 1])],
        [vi("x", [1, 64, 14, 14]), vi("w_in", [64, 64, 3, 3])], [vi("y", [1, 64, 14, 14])],
        [nh.from_array(np.ones((), F), "one")])
    exe = CPUExecutable(g)  # default MIN_BYTES: w is big enough to be planned
    assert list(exe.memory_plan.offsets) == ["w"]
    ctx = exe.new_context()
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 64, 14, 14)).astype(F)
    for _ in range(3):
        feeds = {"x": x, "w_in": rng.standard_normal((64, 64, 3, 3)).astype(F)}
        np.testing.assert_array_equal(exe.run(feeds, ctx)["y"], exe.run(feeds)["y"])


# ---- 2. and 3. random DAGs -------------------------------------------------------------------------------

@st.composite
def random_dags(draw):
    """Models of 2-D float tensors [rows, 8]: out-capable ops (Relu, Sigmoid, Add, Concat), view ops
    (Reshape, Slice, Identity, Transpose twice) and ops returning their input (Mean, Clip)."""
    vals = [("x", 4), ("z", 3)]
    nodes, inits = [], []
    n = draw(st.integers(2, 14))
    for k in range(n):
        op = draw(st.sampled_from(["Relu", "Sigmoid", "Add", "Concat", "Reshape", "Slice", "Identity",
                                   "Transpose", "Mean", "Clip"]))
        a, ra = vals[draw(st.integers(0, len(vals) - 1))]
        o = f"v{k}"
        if op == "Add":
            same = [v for v, r in vals if r == ra]
            b = same[draw(st.integers(0, len(same) - 1))]
            nodes.append(h.make_node("Add", [a, b], [o], name=f"n{k}"))
            r = ra
        elif op == "Concat":
            b, rb = vals[draw(st.integers(0, len(vals) - 1))]
            if ra + rb > 24:
                b, rb = a, ra
                if 2 * ra > 24:
                    continue
            nodes.append(h.make_node("Concat", [a, b], [o], name=f"n{k}", axis=0))
            r = ra + rb
        elif op == "Reshape":
            s = f"s{k}"
            inits.append(nh.from_array(np.array([-1, 8], np.int64), s))
            nodes.append(h.make_node("Reshape", [a, s], [o], name=f"n{k}"))
            r = ra
        elif op == "Slice":
            if ra < 2:
                continue
            names = [f"st{k}", f"en{k}", f"ax{k}"]
            for nm, v in zip(names, ([1], [ra], [0])):
                inits.append(nh.from_array(np.array(v, np.int64), nm))
            nodes.append(h.make_node("Slice", [a] + names, [o], name=f"n{k}"))
            r = ra - 1
        elif op == "Transpose":
            nodes.append(h.make_node("Transpose", [a], [o + "t"], name=f"n{k}t", perm=[1, 0]))
            nodes.append(h.make_node("Transpose", [o + "t"], [o], name=f"n{k}", perm=[1, 0]))
            r = ra
        else:
            nodes.append(h.make_node(op, [a], [o], name=f"n{k}"))
            r = ra
        vals.append((o, r))
    produced = [(v, r) for v, r in vals[2:]]
    if not produced:
        nodes.append(h.make_node("Relu", ["x"], ["v_end"], name="n_end"))
        produced = [("v_end", 4)]
    # outputs: the last value and any others hypothesis picks (views included)
    picks = draw(st.lists(st.integers(0, len(produced) - 1), max_size=3, unique=True))
    outs = sorted({len(produced) - 1, *picks})
    outputs = [vi(produced[i][0], [produced[i][1], 8]) for i in outs]
    g = h.make_graph(nodes, "dag", [vi("x", [4, 8]), vi("z", [3, 8])], outputs, inits)
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_dags(), st.integers(0, 2**31 - 1))
def test_random_dags_plan_and_run(model, seed):
    graph = hetero.read_model(model)
    p = memory.plan(graph, everything(graph), min_bytes=0)
    assert_no_overlap(graph, p)
    assert not set(p.offsets) & set(graph.output_names)
    with plan_everything():
        exe = CPUExecutable(graph)
    ctx = exe.new_context()
    rng = np.random.default_rng(seed)
    first = None
    for _ in range(3):  # consecutive inferences on one stream, new inputs each time
        feeds = {"x": rng.standard_normal((4, 8)).astype(F), "z": rng.standard_normal((3, 8)).astype(F)}
        got = exe.run(feeds, ctx)
        want = exe.run(feeds)  # no context: no arena
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])
        if first is None:
            first = (got, {k: v.copy() for k, v in got.items()})
    for k, v in first[0].items():  # the first run's outputs were not overwritten by the later ones
        np.testing.assert_array_equal(v, first[1][k])


# ---- 2. the light models' graphs -------------------------------------------------------------------------

LIGHT = ["bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50", "shufflenet",
         "squeezenet", "vgg19", "zfnet512"]


@pytest.mark.parametrize("name", LIGHT)
def test_light_model_plans_never_overlap(name):
    # every node treated as writing _out: the densest plan the graph allows
    graph = hetero.read_model(os.path.join(LIGHT_DIR, f"light_{name}.onnx"))
    p = memory.plan(graph, everything(graph), min_bytes=0)
    assert p.offsets and p.arena_bytes < p.planned_bytes <= p.intermediate_bytes + memory.ALIGN * len(p.offsets)
    assert_no_overlap(graph, p)


# ---- 3. the light models, run -----------------------------------------------------------------------------

def light_input(compiled, seed):
    p = compiled.inputs[0]
    return {p.any_name: np.random.default_rng(seed).random(p.shape, dtype=F)}


@pytest.mark.parametrize("name", ["squeezenet", "shufflenet",
                                  pytest.param("densenet121", marks=pytest.mark.slow)])
def test_light_model_arena_runs_match_plain_runs(name):
    with plan_everything():
        cm = hetero.compile_model(os.path.join(LIGHT_DIR, f"light_{name}.onnx"), "CPU")
    exe = cm._runner
    assert exe.memory_plan is not None and exe.memory_plan.offsets
    feeds = [light_input(cm, s) for s in (0, 1)]
    want = [exe.run(f) for f in feeds]  # no arena
    got0 = cm(feeds[0]).to_dict()  # through the stream's context: with the arena
    kept = {k: v.copy() for k, v in got0.items()}
    got1 = cm(feeds[1]).to_dict()
    for got, w in ((got0, want[0]), (got1, want[1])):
        for k in w:
            np.testing.assert_array_equal(got[k], w[k])
    for k in kept:
        np.testing.assert_array_equal(got0[k], kept[k])


def test_light_model_many_streams_in_parallel():
    with plan_everything():
        cm = hetero.compile_model(os.path.join(LIGHT_DIR, "light_squeezenet.onnx"), "CPU",
                                  {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": 4})
    assert cm.get_property("NUM_STREAMS") == 4
    exe = cm._runner
    feeds = [light_input(cm, s) for s in range(8)]
    want = [exe.run(f)[cm.outputs[0].any_name] for f in feeds]
    # async: 8 requests over the 4 stream workers, each result kept by reference until the end
    results = {}
    q = hetero.AsyncInferQueue(cm, 8)
    q.set_callback(lambda req, i: results.__setitem__(i, req.results[0]))
    for rep in range(2):
        for i, f in enumerate(feeds):
            q.start_async(f, userdata=(rep, i))
        q.wait_all()
    assert len(results) == 16
    for (rep, i), y in results.items():
        np.testing.assert_array_equal(y, want[i], err_msg=f"request {i} (round {rep})")
    # sync: threads calling infer at once borrow different stream contexts
    errors = []

    def worker(k):
        try:
            for j in range(2):
                i = (k + j) % len(feeds)
                y = cm.create_infer_request().infer(feeds[i])[0]
                np.testing.assert_array_equal(y, want[i])
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
