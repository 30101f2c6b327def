"""Graphviz dumps of a HETERO plan, and the files written at compile (DESIGN.md §5.5).

* ``hetero_affinity_<model>.dot``: every node filled with its device's colour, labelled name / op /
  device / reason, plus a legend;
* ``hetero_subgraphs_<model>.dot``: one cluster per subgraph titled with its id and device, the
  Reorder nodes, and boundary edges labelled with shape, dtype and bytes;
* ``hetero_plan_<model>.json``: the plan's JSON twin (``Plan.to_json``).

The text is a pure function of the plan: same input, same bytes (graph order everywhere, no hashing
of Python objects). Each device has one fixed colour.
"""
from __future__ import annotations

import os
import re
import zlib
from pathlib import Path
from typing import Mapping

from ..ir import node_value_inputs
from .plan import HOST, Plan

#: one fixed colour per device
DEVICE_COLOURS = {
    "CPU": "#9ecae1", "GPU.0": "#a1d99b", "GPU.1": "#fdae6b", "GPU.2": "#d9d9d9", "GPU.3": "#fdd0a2",
    "MOCK.0": "#bcbddc", "MOCK.1": "#fcbba1", "MOCK.2": "#c7e9c0", "MOCK.3": "#fee391",
    HOST: "#f7f7f7", "UNSUPPORTED": "#ff6b6b",
}
_PALETTE = ("#8dd3c7", "#ffffb3", "#bebada", "#fb8072", "#80b1d3", "#fdb462", "#b3de69", "#fccde5")


def device_colour(device: str) -> str:
    c = DEVICE_COLOURS.get(device)
    if c is None:  # stable across runs (crc32, not hash())
        c = _PALETTE[zlib.crc32(device.encode()) % len(_PALETTE)]
    return c


def _q(s: str) -> str:
    return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _label(*lines: str) -> str:
    return '"' + "\\n".join(str(x).replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ") for x in lines) + '"'


def _header(name: str, title: str) -> list[str]:
    return [f"digraph {_q(name)} {{",
            f"  graph [rankdir=TB, compound=true, fontname=\"Helvetica\", labelloc=t, label={_q(title)}];",
            "  node [shape=box, style=\"filled,rounded\", fontname=\"Helvetica\", fontsize=10];",
            "  edge [fontname=\"Helvetica\", fontsize=9];"]


def _legend(devices) -> list[str]:
    out = ["  subgraph cluster_legend {", "    label=\"devices\"; style=dashed; fontsize=10;"]
    prev = None
    for d in devices:
        out.append(f"    {_q('legend:' + d)} [label={_q(d)}, fillcolor={_q(device_colour(d))}];")
        if prev is not None:  # keep the legend in a row, in priority order
            out.append(f"    {_q('legend:' + prev)} -> {_q('legend:' + d)} [style=invis];")
        prev = d
    out.append("  }")
    return out


def _io_nodes(plan: Plan) -> list[str]:
    g = plan.graph
    out = []
    for v in g.input_names:
        out.append(f"  {_q('input:' + v)} [shape=ellipse, style=filled, fillcolor={_q(device_colour(HOST))}, "
                   f"label={_label(v, 'input ' + g.info(v).describe())}];")
    for v in g.output_names:
        out.append(f"  {_q('output:' + v)} [shape=ellipse, style=filled, fillcolor={_q(device_colour(HOST))}, "
                   f"label={_label(v, 'output ' + g.info(v).describe())}];")
    return out


def _edge_label(plan: Plan, v: str) -> str:
    info = plan.graph.info(v)
    nb = "?" if info.nbytes is None else str(info.nbytes)
    return _label(v, info.describe(), f"{nb} B")


def to_affinity_dot(plan: Plan, devices=None, unsupported: Mapping[str, Mapping[str, str]] | None = None) -> str:
    """Per-node devices (name, op, device, reason), coloured by device, with a legend."""
    g = plan.graph
    devices = list(devices or plan.devices)
    if unsupported:
        devices.append("UNSUPPORTED")
    lines = _header(f"hetero_affinity_{g.name}", f"{g.name}: node -> device (HETERO affinity)")
    lines += _legend(devices)
    lines += _io_nodes(plan)
    for n in g.nodes:
        if unsupported and n.name in unsupported:
            dev = "UNSUPPORTED"
            why = "; ".join(f"{d}: {r}" for d, r in unsupported[n.name].items())
        else:
            dev = plan.assignment.get(n.name, "?")
            why = plan.reasons.get(n.name, "")
        lines.append(f"  {_q('node:' + n.name)} [label={_label(n.name, n.op_type, dev, why)}, "
                     f"fillcolor={_q(device_colour(dev))}];")
    lines += _data_edges(plan, labelled=False)
    lines.append("}")
    return "\n".join(lines) + "\n"


def _data_edges(plan: Plan, labelled: bool, crossing=None) -> list[str]:
    """Edges producer -> consumer (node, graph input or output), once per pair, in graph order.
    ``crossing(v, src, dst_node)`` may return replacement lines for an edge (Reorder routing)."""
    g = plan.graph
    prod = {o: n.name for n in g.nodes for o in n.outputs if o}
    consts = set(g.initializers)
    out, seen = [], set()

    def src_id(v):
        return _q("node:" + prod[v]) if v in prod else _q("input:" + v)

    for n in g.nodes:
        for v in node_value_inputs(n):
            if v in consts or (v not in prod and v not in g.input_names):
                continue
            key = (v, n.name)
            if key in seen:
                continue
            seen.add(key)
            repl = crossing(v, n.name) if crossing else None
            if repl is not None:
                out.extend(repl)
            else:
                lab = f" [label={_edge_label(plan, v)}]" if labelled else ""
                out.append(f"  {src_id(v)} -> {_q('node:' + n.name)}{lab};")
    for v in g.output_names:
        if v in consts:
            continue
        repl = crossing(v, None) if crossing else None
        if repl is not None:
            out.extend(repl)
        elif v in prod or v in g.input_names:
            lab = f" [label={_edge_label(plan, v)}]" if labelled else ""
            out.append(f"  {src_id(v)} -> {_q('output:' + v)}{lab};")
    return out


def to_subgraphs_dot(plan: Plan) -> str:
    """One cluster per subgraph (id, device), Reorder nodes, labelled boundary edges, a legend."""
    g = plan.graph
    lines = _header(f"hetero_subgraphs_{g.name}",
                    f"{g.name}: {len(plan.subgraphs)} subgraph(s), {len(plan.reorders)} Reorder(s)")
    lines += _legend(plan.devices)
    lines += _io_nodes(plan)
    ops = {n.name: n.op_type for n in g.nodes}
    for s in plan.subgraphs:
        col = device_colour(s.device)
        lines.append(f"  subgraph cluster_sg{s.id} {{")
        lines.append(f"    label={_q(f'subgraph {s.id}: {s.device} ({len(s.nodes)} nodes)')}; style=\"filled,bold\"; "
                     f"color={_q(col)}; fillcolor=\"#ffffff\";")
        for n in s.nodes:
            lines.append(f"    {_q('node:' + n)} [label={_label(n, ops[n])}, fillcolor={_q(col)}];")
        lines.append("  }")
    by_key = {(r.value, d): r for r in plan.reorders for d in r.destinations}
    for r in plan.reorders:
        nb = "?" if r.nbytes is None else str(r.nbytes)
        dst = ", ".join(r.destinations)
        lines.append(f"  {_q('reorder:' + r.name)} [shape=hexagon, style=filled, fillcolor=\"#ffffff\", "
                     f"label={_label('Reorder', r.value, f'{r.src_device} -> {dst}', r.converts, nb + ' B')}];")
    prod = {o: n.name for n in g.nodes for o in n.outputs if o}
    drawn_in: set[str] = set()

    def src_id(v):
        return _q("node:" + prod[v]) if v in prod else _q("input:" + v)

    def crossing(v: str, consumer: str | None):
        src_sg = plan.subgraph_of(prod[v]) if v in prod else None
        if consumer is None:
            dst_dev, dst_id, dst_sg = HOST, _q("output:" + v), None
        else:
            dst_sg = plan.subgraph_of(consumer)
            dst_dev, dst_id = plan.subgraphs[dst_sg].device, _q("node:" + consumer)
        r = by_key.get((v, dst_dev))
        if r is None:
            if src_sg is not None and dst_sg is not None and src_sg != dst_sg:  # same-device boundary
                return [f"  {src_id(v)} -> {dst_id} [label={_edge_label(plan, v)}, style=bold];"]
            return None
        rid = _q("reorder:" + r.name)
        out = []
        if r.name not in drawn_in:
            drawn_in.add(r.name)
            out.append(f"  {src_id(v)} -> {rid} [label={_edge_label(plan, v)}, style=bold];")
        out.append(f"  {rid} -> {dst_id} [style=bold];")
        return out

    lines += _data_edges(plan, labelled=False, crossing=crossing)
    lines.append("}")
    return "\n".join(lines) + "\n"


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name or "model")


def write_dumps(plan: Plan, directory: str | os.PathLike | None = None, devices=None,
                unsupported=None) -> dict[str, Path]:
    """Write the affinity and subgraph dot files and the JSON twin; return their paths."""
    d = Path(directory or ".")
    d.mkdir(parents=True, exist_ok=True)
    base = safe_name(plan.graph.name)
    paths = {"affinity": d / f"hetero_affinity_{base}.dot", "subgraphs": d / f"hetero_subgraphs_{base}.dot",
             "json": d / f"hetero_plan_{base}.json"}
    paths["affinity"].write_text(to_affinity_dot(plan, devices, unsupported))
    paths["subgraphs"].write_text(to_subgraphs_dot(plan))
    paths["json"].write_text(plan.to_json())
    return paths
