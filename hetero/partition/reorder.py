"""reorder(): one explicit Reorder node per boundary (DESIGN.md §5.3).

A Reorder moves one value to one destination device, shared by all its consumers there (and by
HOST, for a graph output, when that device is host memory: one per (value, destination memory)), and does
whatever the two sides need:

* transfer: "handoff" when both sides compute in host memory (CPU, MOCK), "upload" host -> device
  memory, "download" device -> host, "device-to-device" (through the host);
* precision: a device computing in f16 (INFERENCE_PRECISION_HINT=f16) hands out f16 where the
  model says f32; the Reorder converts to the destination's dtype (the model's);
* layout: a plugin keeping a non-plain layout (e.g. blocked) is converted to the destination's.

The device traits come in as plain data: {device: {"memory": "host"|"device", "precision":
"f32"|"f16", "layout": "plain"|...}}; devices not listed (and HOST) are host memory, f32, plain.

Traced example: GPU.0 (device memory, f16) produces ``prob_in`` float32[1,1000] for a CPU Softmax:
Reorder ``Reorder_prob_in_GPU.0_to_CPU``: download, float16 -> float32, 4000 bytes. Were
``prob_in`` a graph output too, that same Reorder would serve HOST (``serves_host``): the CPU works
in host memory, so one download feeds both.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from .plan import HOST, Plan, Reorder

_DEFAULT = {"memory": "host", "precision": "f32", "layout": "plain"}


def traits(devices: Mapping[str, Mapping[str, Any]] | None, name: str) -> dict[str, Any]:
    t = dict(_DEFAULT)
    if name != HOST:
        t.update((devices or {}).get(name, {}))
    return t


def reorder(plan: Plan, devices: Mapping[str, Mapping[str, Any]] | None = None) -> Plan:
    """A copy of ``plan`` with one Reorder per boundary, in boundary order."""
    out = []
    for b in plan.boundaries:
        src, dst = traits(devices, b.src_device), traits(devices, b.dst_device)
        src_host, dst_host = src["memory"] == "host", dst["memory"] == "host"
        transfer = ("handoff" if src_host and dst_host else "upload" if src_host else
                    "download" if dst_host else "device-to-device")
        src_dtype = b.dtype
        if b.dtype == "float32" and str(src.get("precision", "f32")).lower() == "f16":
            src_dtype = "float16"
        out.append(Reorder(
            name=f"Reorder_{b.value}_{b.src_device}_to_{b.dst_device}",
            value=b.value, src_device=b.src_device, dst_device=b.dst_device, src_subgraph=b.src,
            dst_subgraphs=b.dst, src_dtype=src_dtype, dst_dtype=b.dtype,
            src_layout=str(src.get("layout", "plain")), dst_layout=str(dst.get("layout", "plain")),
            transfer=transfer, shape=b.shape, nbytes=b.nbytes))
    # one per (value, destination memory): a graph output that also goes to a host-memory device in
    # the host's layout (the CPU) leaves its device once; HOST reads that copy
    shared: dict[str, int] = {}
    for i, r in enumerate(out):
        if r.dst_device != HOST and r.src_subgraph is not None and r.dst_layout == "plain" \
                and traits(devices, r.dst_device)["memory"] == "host":
            shared.setdefault(r.value, i)
    drop = set()
    for i, r in enumerate(out):
        j = shared.get(r.value)
        if r.dst_device == HOST and j is not None and out[j].src_device == r.src_device:
            out[j] = dataclasses.replace(out[j], serves_host=True)
            drop.add(i)
    return dataclasses.replace(plan, reorders=tuple(r for i, r in enumerate(out) if i not in drop))
