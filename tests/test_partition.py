"""split / Plan.check / reorder / dot on fixture graphs with exact expected splits.

Device names are plain strings; G = GPU, C = CPU in the sketches."""
from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest

from hetero.errors import PartitionError
from hetero.ir import Graph, Node, TensorInfo
from hetero.partition import HOST, reorder, split, to_affinity_dot, to_subgraphs_dot, write_dumps


def graph(nodes, inputs=("x",), outputs=("y",), consts=(), name="g", shape=(1, 4)):
    """nodes: (name, op, inputs, outputs) tuples in topological order; every value float32[shape]."""
    ns = tuple(Node(n[0], n[1], tuple(n[2]), tuple(n[3])) for n in nodes)
    vals = set(inputs) | {v for n in ns for v in n.inputs + n.outputs if v}
    info = {v: TensorInfo(v, np.dtype(np.float32), shape) for v in vals}
    return Graph(name, ns, tuple(info[v] for v in inputs), tuple(info[v] for v in outputs),
                 {c: np.ones(shape, np.float32) for c in consts}, info, {"": 17})


def summary(plan):
    return [(s.id, s.device, s.nodes, s.inputs, s.outputs, s.deps) for s in plan.subgraphs]


def crossings(plan):
    return [(b.value, b.src, b.dst, b.src_device, b.dst_device) for b in plan.boundaries]


def test_chain():
    #   x -> a(G) -> b(G) -> c(C) -> y
    g = graph([("a", "Conv", ["x"], ["va"]), ("b", "Relu", ["va"], ["vb"]), ("c", "Softmax", ["vb"], ["y"])])
    plan = split(g, {"a": "GPU", "b": "GPU", "c": "CPU"}).check()
    assert summary(plan) == [(0, "GPU", ("a", "b"), ("x",), ("vb",), ()),
                             (1, "CPU", ("c",), ("vb",), ("y",), (0,))]
    assert crossings(plan) == [("x", None, (0,), HOST, "GPU"), ("vb", 0, (1,), "GPU", "CPU")]


def test_diamond():
    #          x
    #          |
    #          a (G)
    #         / \
    #   (C)  b   c  (G)
    #         \ /
    #          d (G)
    #          |
    #          y
    g = graph([("a", "Conv", ["x"], ["va"]), ("b", "Relu", ["va"], ["vb"]), ("c", "Sigmoid", ["va"], ["vc"]),
               ("d", "Add", ["vb", "vc"], ["y"])])
    plan = split(g, {"a": "GPU", "b": "CPU", "c": "GPU", "d": "GPU"}).check()
    # c joins a's region; d cannot (b depends on it), so d starts its own GPU subgraph
    assert summary(plan) == [(0, "GPU", ("a", "c"), ("x",), ("va", "vc"), ()),
                             (1, "CPU", ("b",), ("va",), ("vb",), (0,)),
                             (2, "GPU", ("d",), ("vb", "vc"), ("y",), (0, 1))]
    assert crossings(plan) == [("x", None, (0,), HOST, "GPU"), ("va", 0, (1,), "GPU", "CPU"),
                               ("vb", 1, (2,), "CPU", "GPU"), ("y", 2, (), "GPU", HOST)]


def test_alternating_devices():
    #   x -> a(G) -> b(C) -> c(G) -> d(C) -> y
    g = graph([("a", "Conv", ["x"], ["va"]), ("b", "Relu", ["va"], ["vb"]), ("c", "Conv", ["vb"], ["vc"]),
               ("d", "Relu", ["vc"], ["y"])])
    plan = split(g, {"a": "GPU", "b": "CPU", "c": "GPU", "d": "CPU"}).check()
    assert [(s.device, s.nodes, s.deps) for s in plan.subgraphs] == [
        ("GPU", ("a",), ()), ("CPU", ("b",), (0,)), ("GPU", ("c",), (1,)), ("CPU", ("d",), (2,))]
    assert len(plan.boundaries) == 4  # x up, va down, vb up, vc down (y is produced on the CPU)


def test_skip_edge_splits_region():
    """The traced example of hetero/partition/split.py."""
    #   x -> a(G) -> b(C) -> c(G) -> y
    #         \______________/        (a -> c: {a, c} would be connected, but would close a cycle)
    g = graph([("a", "Conv", ["x"], ["va"]), ("b", "Relu", ["va"], ["vb"]), ("c", "Add", ["vb", "va"], ["y"])])
    plan = split(g, {"a": "GPU", "b": "CPU", "c": "GPU"}).check()
    assert summary(plan) == [(0, "GPU", ("a",), ("x",), ("va",), ()),
                             (1, "CPU", ("b",), ("va",), ("vb",), (0,)),
                             (2, "GPU", ("c",), ("vb", "va"), ("y",), (0, 1))]
    # va goes to the CPU (a Reorder) and on to subgraph 2 on the same GPU (no Reorder)
    assert crossings(plan) == [("x", None, (0,), HOST, "GPU"), ("va", 0, (1,), "GPU", "CPU"),
                               ("vb", 1, (2,), "CPU", "GPU"), ("y", 2, (), "GPU", HOST)]


def test_independent_branches_run_side_by_side():
    #        x
    #       / \
    #   a(G)   b(C)
    #     |     |
    #    y1    y2
    g = graph([("a", "Conv", ["x"], ["y1"]), ("b", "Relu", ["x"], ["y2"])], outputs=("y1", "y2"))
    plan = split(g, {"a": "GPU", "b": "CPU"}).check()
    assert summary(plan) == [(0, "GPU", ("a",), ("x",), ("y1",), ()), (1, "CPU", ("b",), ("x",), ("y2",), ())]


def test_unconnected_same_device_regions_merge():
    #        x
    #       / \
    #   a(C)   b(G)
    #     |     |
    #   c(G)    |        b and c: same device, not connected, neither depends on the other -> merged
    #      \   /
    #       d(C)         a and d: both CPU, but d depends on a through c: not merged
    #        |
    #        y
    g = graph([("a", "Relu", ["x"], ["va"]), ("b", "Conv", ["x"], ["vb"]), ("c", "Conv", ["va"], ["vc"]),
               ("d", "Add", ["vc", "vb"], ["y"])])
    plan = split(g, {"a": "CPU", "b": "GPU", "c": "GPU", "d": "CPU"}).check()
    assert summary(plan) == [(0, "CPU", ("a",), ("x",), ("va",), ()),
                             (1, "GPU", ("b", "c"), ("x", "va"), ("vb", "vc"), (0,)),
                             (2, "CPU", ("d",), ("vc", "vb"), ("y",), (1,))]


def test_crossed_branches_merge_into_three():
    #        x
    #       / \
    #   a(G)   b(C)
    #     |  \/ |
    #     |  /\ |          c reads a, d reads b
    #   c(C)   d(G)
    #     |     |
    #    y1    y2
    g = graph([("a", "Conv", ["x"], ["va"]), ("b", "Relu", ["x"], ["vb"]), ("c", "Relu", ["va"], ["y1"]),
               ("d", "Conv", ["vb"], ["y2"])], outputs=("y1", "y2"))
    plan = split(g, {"a": "GPU", "b": "CPU", "c": "CPU", "d": "GPU"}).check()
    # {a, d} merge (independent); then {b} and {c} cannot (c now depends on b through {a, d})
    assert summary(plan) == [(0, "CPU", ("b",), ("x",), ("vb",), ()),
                             (1, "GPU", ("a", "d"), ("x", "vb"), ("va", "y2"), (0,)),
                             (2, "CPU", ("c",), ("va",), ("y1",), (1,))]


def test_shared_constant_is_copied_not_transferred():
    #   x    W (initializer)
    #   |  /   \
    #   a(G)    |
    #   |       |
    #   b(C) ---+
    #   |
    #   y
    g = graph([("a", "Mul", ["x", "W"], ["va"]), ("b", "Add", ["va", "W"], ["y"])], consts=("W",))
    plan = split(g, {"a": "GPU", "b": "CPU"}).check()
    assert [(s.nodes, s.inputs, s.constants) for s in plan.subgraphs] == [
        (("a",), ("x",), ("W",)), (("b",), ("va",), ("W",))]
    assert "W" not in [b.value for b in plan.boundaries]
    sg1 = plan.subgraph_graph(1)
    assert list(sg1.initializers) == ["W"] and sg1.input_names == ("va",) and sg1.output_names == ("y",)


def test_one_reorder_per_tensor_and_destination():
    #          x
    #          |
    #          a (G)
    #       /  |  \
    #   b(C) c(C)  d(M)       va goes to CPU once (shared by b and c) and to MOCK once
    #       \  |  /
    #          e (C)
    g = graph([("a", "Conv", ["x"], ["va"]), ("b", "Relu", ["va"], ["vb"]), ("c", "Neg", ["va"], ["vc"]),
               ("d", "Abs", ["va"], ["vd"]), ("e", "Sum", ["vb", "vc", "vd"], ["y"])])
    plan = split(g, {"a": "GPU.0", "b": "CPU", "c": "CPU", "d": "MOCK.0", "e": "CPU"}).check()
    plan = reorder(plan, {"GPU.0": {"memory": "device", "precision": "f16"}}).check()
    rs = [(r.name, r.dst_subgraphs, r.transfer, r.src_dtype, r.dst_dtype, r.nbytes) for r in plan.reorders]
    assert [(s.device, s.nodes) for s in plan.subgraphs] == [("GPU.0", ("a",)), ("MOCK.0", ("d",)),
                                                            ("CPU", ("b", "c", "e"))]
    assert rs == [("Reorder_x_HOST_to_GPU.0", (0,), "upload", "float32", "float32", 16),
                  ("Reorder_va_GPU.0_to_CPU", (2,), "download", "float16", "float32", 16),
                  ("Reorder_va_GPU.0_to_MOCK.0", (1,), "download", "float16", "float32", 16),
                  ("Reorder_vd_MOCK.0_to_CPU", (2,), "handoff", "float32", "float32", 16)]


def test_one_download_per_tensor_and_destination_memory():
    #   x -> a(G) -> va -+-> b(C) -> y
    #                    +-> (graph output va)
    # va goes to the CPU and to HOST: both host memory, so one Reorder downloads it for both
    g = graph([("a", "Conv", ["x"], ["va"]), ("b", "Softmax", ["va"], ["y"])], outputs=("va", "y"))
    plan = split(g, {"a": "GPU.0", "b": "CPU"}).check()
    assert crossings(plan) == [("x", None, (0,), "HOST", "GPU.0"), ("va", 0, (1,), "GPU.0", "CPU"),
                               ("va", 0, (), "GPU.0", "HOST")]
    plan = reorder(plan, {"GPU.0": {"memory": "device", "precision": "f16"}}).check()
    assert [(r.name, r.transfer, r.destinations, r.nbytes) for r in plan.reorders] == [
        ("Reorder_x_HOST_to_GPU.0", "upload", ("GPU.0",), 16),
        ("Reorder_va_GPU.0_to_CPU", "download", ("CPU", "HOST"), 16)]
    dot = to_subgraphs_dot(plan)
    assert "2 Reorder(s)" in dot
    assert 'label="Reorder\\nva\\nGPU.0 -> CPU, HOST\\ndownload, float16->float32\\n16 B"' in dot
    assert '"reorder:Reorder_va_GPU.0_to_CPU" -> "output:va" [style=bold];' in dot
    assert '"reorder:Reorder_va_GPU.0_to_CPU" -> "node:b" [style=bold];' in dot
    assert dot.count('"node:a" -> "reorder:Reorder_va_GPU.0_to_CPU"') == 1
    # a MOCK (host memory) source shares the same way: one hand-off for MOCK.0 -> CPU and -> HOST
    plan = reorder(split(g, {"a": "MOCK.0", "b": "CPU"}).check()).check()
    assert [(r.name, r.destinations) for r in plan.reorders] == [
        ("Reorder_x_HOST_to_MOCK.0", ("MOCK.0",)), ("Reorder_va_MOCK.0_to_CPU", ("CPU", "HOST"))]
    # the check knows a shared Reorder stands for the HOST boundary
    with pytest.raises(PartitionError, match="serves 'y' to HOST"):
        dataclasses.replace(plan, reorders=plan.reorders + (dataclasses.replace(
            plan.reorders[1], value="y", name="bogus", serves_host=True),)).check()


@pytest.mark.parametrize("breakage, message", [
    (lambda p: dataclasses.replace(p, subgraphs=(p.subgraphs[0], dataclasses.replace(
        p.subgraphs[1], nodes=("a", "c")))), "node 'a' is in subgraph0 and subgraph1"),
    (lambda p: dataclasses.replace(p, subgraphs=(p.subgraphs[0], dataclasses.replace(
        p.subgraphs[1], nodes=()))), "no subgraph"),
    (lambda p: dataclasses.replace(p, assignment={**p.assignment, "c": "GPU"}), "node 'c' is assigned 'GPU'"),
    (lambda p: dataclasses.replace(p, subgraphs=(p.subgraphs[0], dataclasses.replace(
        p.subgraphs[1], inputs=("vb", "x")))), "inputs"),
    (lambda p: dataclasses.replace(p, subgraphs=(dataclasses.replace(p.subgraphs[0], outputs=("va", "vb")),
                                                 p.subgraphs[1])), "outputs"),
    (lambda p: dataclasses.replace(p, subgraphs=tuple(reversed([dataclasses.replace(s, id=1 - s.id)
                                                                for s in p.subgraphs]))), "deps"),
    (lambda p: dataclasses.replace(p, boundaries=p.boundaries[:1]), "without a boundary"),
    (lambda p: dataclasses.replace(reorder(p), reorders=reorder(p).reorders[:1]),
     r"1 Reorder\(s\) for 2 boundary\(ies\); at position 1 Reorder None vs boundary \('vb', 'CPU'\)"),
])
def test_check_catches_broken_plans(breakage, message):
    #   x -> a(G) -> b(G) -> c(C) -> y
    g = graph([("a", "Conv", ["x"], ["va"]), ("b", "Relu", ["va"], ["vb"]), ("c", "Softmax", ["vb"], ["y"])])
    plan = split(g, {"a": "GPU", "b": "GPU", "c": "CPU"}).check()
    with pytest.raises(PartitionError, match=message):
        breakage(plan).check()


def test_missing_assignment():
    g = graph([("a", "Conv", ["x"], ["va"]), ("b", "Relu", ["va"], ["y"])])
    with pytest.raises(PartitionError, match=r"\['b'\] of graph 'g' have no device"):
        split(g, {"a": "GPU"})


# ---- dot dumps ---------------------------------------------------------------------------------------

def _chain_plan():
    #   x -> a(G) -> b(C) -> y
    g = graph([("a", "Conv", ["x"], ["va"]), ("b", "Softmax", ["va"], ["y"])], name="tiny")
    plan = split(g, {"a": "GPU.0", "b": "CPU"})
    plan = dataclasses.replace(plan, reasons={"a": "priority 1 (GPU.0)", "b": "rule 1 (Softmax=CPU)"})
    return reorder(plan, {"GPU.0": {"memory": "device", "precision": "f16"}}).check()


EXPECTED_SUBGRAPHS_DOT = r'''digraph "hetero_subgraphs_tiny" {
  graph [rankdir=TB, compound=true, fontname="Helvetica", labelloc=t, label="tiny: 2 subgraph(s), 2 Reorder(s)"];
  node [shape=box, style="filled,rounded", fontname="Helvetica", fontsize=10];
  edge [fontname="Helvetica", fontsize=9];
  subgraph cluster_legend {
    label="devices"; style=dashed; fontsize=10;
    "legend:GPU.0" [label="GPU.0", fillcolor="#a1d99b"];
    "legend:CPU" [label="CPU", fillcolor="#9ecae1"];
    "legend:GPU.0" -> "legend:CPU" [style=invis];
  }
  "input:x" [shape=ellipse, style=filled, fillcolor="#f7f7f7", label="x\ninput float32[1,4]"];
  "output:y" [shape=ellipse, style=filled, fillcolor="#f7f7f7", label="y\noutput float32[1,4]"];
  subgraph cluster_sg0 {
    label="subgraph 0: GPU.0 (1 nodes)"; style="filled,bold"; color="#a1d99b"; fillcolor="#ffffff";
    "node:a" [label="a\nConv", fillcolor="#a1d99b"];
  }
  subgraph cluster_sg1 {
    label="subgraph 1: CPU (1 nodes)"; style="filled,bold"; color="#9ecae1"; fillcolor="#ffffff";
    "node:b" [label="b\nSoftmax", fillcolor="#9ecae1"];
  }
  "reorder:Reorder_x_HOST_to_GPU.0" [shape=hexagon, style=filled, fillcolor="#ffffff", label="Reorder\nx\nHOST -> GPU.0\nupload\n16 B"];
  "reorder:Reorder_va_GPU.0_to_CPU" [shape=hexagon, style=filled, fillcolor="#ffffff", label="Reorder\nva\nGPU.0 -> CPU\ndownload, float16->float32\n16 B"];
  "input:x" -> "reorder:Reorder_x_HOST_to_GPU.0" [label="x\nfloat32[1,4]\n16 B", style=bold];
  "reorder:Reorder_x_HOST_to_GPU.0" -> "node:a" [style=bold];
  "node:a" -> "reorder:Reorder_va_GPU.0_to_CPU" [label="va\nfloat32[1,4]\n16 B", style=bold];
  "reorder:Reorder_va_GPU.0_to_CPU" -> "node:b" [style=bold];
  "node:b" -> "output:y";
}
'''


def test_subgraphs_dot_exact_text():
    assert to_subgraphs_dot(_chain_plan()) == EXPECTED_SUBGRAPHS_DOT


def test_affinity_dot_labels_and_colours():
    text = to_affinity_dot(_chain_plan(), ["GPU.0", "CPU"])
    assert '"node:a" [label="a\\nConv\\nGPU.0\\npriority 1 (GPU.0)", fillcolor="#a1d99b"];' in text
    assert '"node:b" [label="b\\nSoftmax\\nCPU\\nrule 1 (Softmax=CPU)", fillcolor="#9ecae1"];' in text
    assert '"input:x" -> "node:a";' in text and '"node:a" -> "node:b";' in text and '"node:b" -> "output:y";' in text
    assert text == to_affinity_dot(_chain_plan(), ["GPU.0", "CPU"])  # same input, same text


def test_dumps_load_and_render(tmp_path):
    graphviz = pytest.importorskip("graphviz")
    paths = write_dumps(_chain_plan(), tmp_path, ["GPU.0", "CPU"])
    assert sorted(p.name for p in paths.values()) == ["hetero_affinity_tiny.dot", "hetero_plan_tiny.json",
                                                      "hetero_subgraphs_tiny.dot"]
    twin = json.loads(paths["json"].read_text())
    assert [(s["id"], s["device"], s["nodes"]) for s in twin["subgraphs"]] == [(0, "GPU.0", ["a"]), (1, "CPU", ["b"])]
    assert [r["name"] for r in twin["reorders"]] == ["Reorder_x_HOST_to_GPU.0", "Reorder_va_GPU.0_to_CPU"]
    for key in ("affinity", "subgraphs"):
        src = graphviz.Source.from_file(paths[key])
        assert src.source == paths[key].read_text()
    if shutil.which("dot") is None:
        pytest.skip("Graphviz's `dot` is not installed (apt-get install graphviz); loaded but not rendered")
    for key, word in (("affinity", "priority 1 (GPU.0)"), ("subgraphs", "Reorder")):
        svg = graphviz.Source.from_file(paths[key]).pipe(format="svg").decode()
        assert "<svg" in svg and word in svg
