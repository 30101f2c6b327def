"""hetero's exception hierarchy.

Every message names *what* went wrong, *where* (node, op, device, input) and *expected vs got*.
Catch :class:`HeteroError` to catch everything hetero raises on purpose.
"""
from __future__ import annotations


class HeteroError(Exception):
    """Base of every error hetero raises on purpose."""


class ModelError(HeteroError):
    """The model cannot be read: missing file, not ONNX, fails the checker, unknown domain."""


class UnsupportedOpError(HeteroError):
    """No device (of those asked for) can run some nodes.

    ``nodes`` maps node name -> {device: reason} for every such node.
    """

    def __init__(self, message: str, nodes: dict | None = None):
        super().__init__(message)
        self.nodes = dict(nodes or {})


class DeviceError(HeteroError):
    """A device is unknown, unavailable, or failed while running."""


class DeviceStringError(DeviceError):
    """A device string does not parse or names something that does not exist."""


class KernelBuildError(DeviceError):
    """A device kernel (e.g. an OpenCL program) failed to build."""


class PartitionError(HeteroError):
    """A HETERO plan broke one of its invariants."""


class InferError(HeteroError):
    """An inference request got bad inputs, or a node failed while running."""


class PropertyError(HeteroError):
    """An unknown property key or a bad value."""


def suggest(name: str, known, where: str = "") -> str:
    """'x' is not one of [...] (add it in <where>) -- look up by name, on a miss list what exists."""
    known = sorted(str(k) for k in known)
    import difflib

    close = difflib.get_close_matches(str(name), known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    shown = ", ".join(known[:40]) + (", ..." if len(known) > 40 else "")
    tail = f" (add it in {where})" if where else ""
    return f"{name!r} is not one of [{shown}]{hint}{tail}"
