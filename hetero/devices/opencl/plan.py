"""Planning: a graph -> the exact list of OpenCL launches that runs it (no OpenCL calls here).

``build_plan(graph, caps)`` walks the nodes in order and asks each op's *planner* (``ops/*.py``) to
turn the node into launches over virtual buffers. The same walk answers ``query``: a node is supported
exactly when its planner accepts it (an :class:`Unsupported` carries the reason), so what query claims
is what compile runs.

Steps:
  1. host constants: initializers, plus small shape-like ops whose inputs are all host-known
     (Constant, ConstantOfShape, Shape, Size, and Reshape/Unsqueeze/Concat/Gather/Cast/... over host
     values) are evaluated with numpy at plan time -- they never reach the device;
  2. each other node is planned by its planner into launches; a rejected node's outputs become
     subgraph inputs so the nodes after it are still judged (HETERO would split there);
  3. launches whose inputs are all constants are marked *const*: the executable runs them once at
     compile time and keeps their outputs as weights (e.g. a transposed Gemm weight, folded BatchNorm);
  4. the remaining buffers go through the liveness memory plan (memplan.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from ...ir import Graph, Node
from .programs import ProgramKey

SLACK_BYTES = 256  # padding after every device buffer (vector loads may read past a row end)
MAX_ELEMS = 2**31 - 1

CL_TYPES = {np.dtype(np.float32): "float", np.dtype(np.float16): "half", np.dtype(np.int8): "char",
            np.dtype(np.uint8): "uchar", np.dtype(np.bool_): "uchar", np.dtype(np.int16): "short",
            np.dtype(np.uint16): "ushort", np.dtype(np.int32): "int", np.dtype(np.uint32): "uint",
            np.dtype(np.int64): "long", np.dtype(np.uint64): "ulong"}
ELEM_BY_SIZE = {1: "uchar", 2: "ushort", 4: "uint", 8: "ulong"}
FLOATS = (np.dtype(np.float32), np.dtype(np.float16))


#: f16 mode keeps a value in half only while |value| <= HALF_SAFE (16x inside half's 65504; see
#: precision.py); HALF_MATH sums of products are checked against the same bound (``half_sums_ok``)
HALF_SAFE = 4096.0
HALF_MAX = 65504.0
#: k-steps a HALF_MATH GEMM sums in half before its float accumulator takes the sum (cl/gemm.cl)
KB_HALF = 32


def half_sums_ok(weights: np.ndarray | None, block: int = KB_HALF) -> bool:
    """Whether a kernel may sum ``block`` products x * w in half: ``weights`` [rows, K] is the constant
    operand (None: both operands computed, no bound), and every row's blocks of ``block`` weights must
    keep sum |w| * HALF_SAFE within half's range, for any activations within HALF_SAFE.

    Traced: a 3x3 conv's weights [64, 27] with |w| <= 0.5 -> blocks of 8 sum to <= 4, times 4096 is
    16384 <= 65504: half. A Gemm weight column summing to 20 in a block -> 81920: float."""
    if weights is None or weights.size == 0:
        return weights is not None
    w = np.abs(np.asarray(weights, np.float64).reshape(weights.shape[0], -1))
    if not np.all(np.isfinite(w)):
        return False
    k = w.shape[1]
    pad = (-k) % block
    if pad:
        w = np.concatenate([w, np.zeros((w.shape[0], pad))], axis=1)
    return float(w.reshape(w.shape[0], -1, block).sum(axis=2).max()) * HALF_SAFE <= HALF_MAX


class Unsupported(Exception):
    """A planner cannot run this node; the message is the reason query reports."""


@dataclass(frozen=True)
class DeviceCaps:
    """What planners need to know about the device and the compile config."""

    is_cpu: bool = True
    fp16: bool = False          # cl_khr_fp16
    half_mode: bool = False     # INFERENCE_PRECISION_HINT f16: float32 tensors stored as half
    half_math: bool = False     # half storage computes in half where a kernel allows (HALF_MATH)
    compute_units: int = 1
    max_work_group: int = 256
    local_mem: int = 32768
    gemm_kernel: str = "reg"    # "reg" (CPU register tiles) or "local" (GPU local-memory tiles)
    max_alloc: int = 2**31


@dataclass(frozen=True)
class BufRef:
    """A kernel argument that is a virtual buffer."""

    id: int


@dataclass(frozen=True)
class U64:
    """A 64-bit unsigned kernel argument (plain ints become 32-bit ``int``)."""

    value: int


@dataclass(frozen=True)
class Launch:
    node: str
    op_type: str
    program: ProgramKey
    kernel: str
    gsize: tuple[int, ...]
    lsize: tuple[int, ...] | None
    args: tuple
    reads: frozenset[int]
    writes: frozenset[int]


@dataclass(frozen=True)
class BufInfo:
    id: int
    nbytes: int
    kind: str  # input | value | scratch | upload
    name: str
    dtype: np.dtype  # device storage dtype


@dataclass(frozen=True)
class OutputSpec:
    """How a graph output is produced: from a device buffer, or a host constant."""

    name: str
    buf: int | None
    host: np.ndarray | None
    shape: tuple[int, ...]
    dev_dtype: np.dtype
    dtype: np.dtype


@dataclass(frozen=True)
class InputSpec:
    name: str
    buf: int
    shape: tuple[int, ...]
    dev_dtype: np.dtype
    dtype: np.dtype


@dataclass(frozen=True)
class Plan:
    bufs: Mapping[int, BufInfo]
    launches: tuple[Launch, ...]        # every launch, in order
    const_launches: tuple[int, ...]     # indices run once at compile time
    run_launches: tuple[int, ...]       # indices run per inference
    uploads: Mapping[int, np.ndarray]   # buf -> host array (device dtype) uploaded at compile
    inputs: tuple[InputSpec, ...]
    outputs: tuple[OutputSpec, ...]
    node_kind: Mapping[str, str]        # node -> "kernel" | "alias" | "host" | "const"
    reasons: Mapping[str, str]          # node -> why it is not supported (empty when compiling)
    value_bufs: Mapping[str, int] = field(default_factory=dict)  # runtime value -> its buffer
    half_nodes: frozenset[str] = frozenset()  # f16 mode: nodes computing on half storage

    @property
    def programs(self) -> frozenset[ProgramKey]:
        return frozenset(self.launches[i].program for i in self.run_launches + self.const_launches)

    @property
    def const_bufs(self) -> frozenset[int]:
        """Buffers whose content is fixed after compile (uploads and outputs of const launches)."""
        out = set(self.uploads)
        for i in self.const_launches:
            out |= self.launches[i].writes
        return frozenset(out)


# ---- planner registry ------------------------------------------------------------------------

PlannerFn = Callable[["NodeBuilder"], None]
_PLANNERS: dict[tuple[str, str], PlannerFn] = {}


def planner(*op_types: str, domain: str = ""):
    """Register ``fn(nb: NodeBuilder)`` as the planner of ``op_types``."""

    def deco(fn):
        for op in op_types:
            _PLANNERS[(domain, op)] = fn
        return fn

    return deco


def lookup_planner(node: Node) -> PlannerFn | None:
    _load_ops()
    dom = "" if node.domain in ("", "ai.onnx") else node.domain
    return _PLANNERS.get((dom, node.op_type))


def supported_ops() -> list[tuple[str, str]]:
    _load_ops()
    return sorted(_PLANNERS)


_loaded = False


def _load_ops() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        from .ops import data, elementwise, gemm, norm, pool, reduce  # noqa: F401  (registers planners)


# ---- the per-graph state ----------------------------------------------------------------------

class PlanState:
    def __init__(self, graph: Graph, caps: DeviceCaps, wide: frozenset[str] = frozenset()):
        self.graph = graph
        self.caps = caps
        self.wide = wide  # f16 mode: values whose range needs float storage (see precision.py)
        self.host: dict[str, np.ndarray] = {k: np.asarray(v) for k, v in graph.initializers.items()}
        self.value_buf: dict[str, int] = {}
        self.const_buf: dict[tuple[str, str], int] = {}   # (host value, device dtype) -> upload
        self.converted: dict[tuple[str, str], int] = {}   # (value, device dtype) -> converted copy
        self.bufs: dict[int, BufInfo] = {}
        self.uploads: dict[int, np.ndarray] = {}
        self.launches: list[Launch] = []
        self.node_kind: dict[str, str] = {}
        self.reasons: dict[str, str] = {}
        self.external: set[str] = set()  # values treated as subgraph inputs (after a rejected node)
        self.half_nodes: set[str] = set()
        self._next = 0

    # ---- values ----
    def info(self, value: str) -> tuple[tuple[int, ...], np.dtype]:
        """Static shape and dtype of a value, or Unsupported."""
        if value in self.host:
            a = self.host[value]
            return tuple(int(d) for d in a.shape), a.dtype
        ti = self.graph.info(value)
        if ti.kind != "tensor":
            raise Unsupported(f"{ti.kind} values not supported")
        if ti.dtype is None:
            raise Unsupported(f"unknown element type of {value!r}")
        if ti.shape is None or not all(isinstance(d, int) for d in ti.shape):
            raise Unsupported(f"dynamic shape {ti.describe()} of {value!r} not supported")
        return tuple(ti.shape), np.dtype(ti.dtype)

    def dev_dtype(self, dtype: np.dtype, half: bool | None = None) -> np.dtype:
        """Device storage of a model dtype: float32 -> half in f16 mode (``half``: this node's
        precision, default the compile's), bool -> uchar."""
        dtype = np.dtype(dtype)
        if dtype == np.float32 and (self.caps.half_mode if half is None else half):
            return np.dtype(np.float16)
        if dtype == np.bool_:
            return np.dtype(np.uint8)
        return dtype

    def new_buf(self, nbytes: int, kind: str, name: str, dtype: np.dtype) -> int:
        if nbytes + SLACK_BYTES > self.caps.max_alloc:
            raise Unsupported(f"{name!r} needs {nbytes} bytes, more than the device's largest allocation "
                              f"({self.caps.max_alloc} bytes)")
        bid = self._next
        self._next += 1
        self.bufs[bid] = BufInfo(bid, int(nbytes), kind, name, np.dtype(dtype))
        return bid

    def upload(self, array: np.ndarray, name: str) -> int:
        a = np.ascontiguousarray(array)
        bid = self.new_buf(a.nbytes, "upload", name, a.dtype)
        self.uploads[bid] = a
        return bid

    def buf_of(self, value: str, want: np.dtype | None = None, node: Node | None = None) -> int:
        """The buffer holding ``value`` as device dtype ``want`` (default: its storage): host constants
        are uploaded on first use (once per dtype); a runtime value stored in another float precision
        gets one converted copy, made by a launch attributed to ``node`` (mixed precision)."""
        if value in self.host and value not in self.value_buf:
            a = self.host[value]
            dt = np.dtype(want) if want is not None else self.dev_dtype(a.dtype)
            key = (value, dt.str)
            if key not in self.const_buf:
                with np.errstate(over="ignore"):  # out-of-range constants are 'wide' (precision.py)
                    self.const_buf[key] = self.upload(a.astype(dt, copy=False), value)
            return self.const_buf[key]
        bid = self.value_buf.get(value)
        if bid is None:  # a subgraph input
            shape, dtype = self.info(value)
            dt = self.dev_dtype(dtype, half=self.caps.half_mode and value not in self.wide)
            bid = self.new_buf(_nbytes(shape, dt), "input", value, dt)
            self.value_buf[value] = bid
        have = self.bufs[bid].dtype
        if want is None or np.dtype(want) == have:
            return bid
        key = (value, np.dtype(want).str)
        if key not in self.converted:
            from .ops.elementwise import convert_launch

            shape, _ = self.info(value)
            out = self.new_buf(_nbytes(shape, want), "value", f"{value}:{np.dtype(want).name}", want)
            nb = NodeBuilder(self, node)
            convert_launch(nb, (bid, shape, have), (out, shape, np.dtype(want)))
            self.launches.extend(nb._launches)
            self.converted[key] = out
        return self.converted[key]


def _nbytes(shape, dtype) -> int:
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize


class NodeBuilder:
    """What a planner sees: the node, its inputs/outputs, and ways to add launches (transactional:
    nothing is committed to the plan unless the planner returns without raising)."""

    def __init__(self, st: PlanState, node: Node):
        self.st = st
        self.node = node
        self.caps = st.caps
        self.op = node.op_type
        self._launches: list[Launch] = []
        self._new_bufs: list[int] = []
        self._out_bufs: dict[int, int] = {}
        self.kind = "kernel"
        # f16 mode: the node computes on half storage unless one of its values needs float range
        vals = [v for v in list(node.inputs) + list(node.outputs) if v] if node is not None else []
        self.half = st.caps.half_mode and not any(v in st.wide for v in vals)

    # ---- node facts ----
    @property
    def opset(self) -> int:
        g = self.st.graph
        if self.node.domain in ("", "ai.onnx"):
            return g.opset
        return int(g.opsets.get(self.node.domain, 1))

    def attr(self, name: str, default: Any = None) -> Any:
        return self.node.attrs.get(name, default)

    @property
    def n_in(self) -> int:
        return len(self.node.inputs)

    def has_input(self, i: int) -> bool:
        return i < len(self.node.inputs) and bool(self.node.inputs[i])

    def has_output(self, i: int) -> bool:
        return i < len(self.node.outputs) and bool(self.node.outputs[i])

    def shape(self, i: int) -> tuple[int, ...]:
        return self.st.info(self.node.inputs[i])[0]

    def dtype(self, i: int) -> np.dtype:
        return self.st.info(self.node.inputs[i])[1]

    def out_shape(self, i: int = 0) -> tuple[int, ...]:
        return self.st.info(self.node.outputs[i])[0]

    def out_dtype(self, i: int = 0) -> np.dtype:
        return self.st.info(self.node.outputs[i])[1]

    def host(self, i: int) -> np.ndarray | None:
        if not self.has_input(i):
            return None
        return self.st.host.get(self.node.inputs[i])

    def require_host(self, i: int, what: str) -> np.ndarray:
        v = self.host(i)
        if v is None:
            raise Unsupported(f"{self.op}: {what} must be a constant")
        return v

    def dev_dtype(self, dtype) -> np.dtype:
        return self.st.dev_dtype(dtype, half=self.half)

    def require_float(self, *inputs: int, outputs: tuple[int, ...] = (0,)) -> np.dtype:
        """All named inputs/outputs float32/float16 (one dtype); returns it."""
        dts = [self.dtype(i) for i in inputs if self.has_input(i)] + \
              [self.out_dtype(o) for o in outputs if self.has_output(o)]
        for d in dts:
            if d not in FLOATS:
                raise Unsupported(f"{self.op}: {d} not supported")
        if len(set(dts)) > 1:
            raise Unsupported(f"{self.op}: mixed element types {sorted(set(map(str, dts)))} not supported")
        return dts[0]

    def float_defines(self, dtype, half_math: bool = False) -> list:
        """Build options of a float kernel: T_HALF for half storage, plus HALF_MATH where the caller
        allows half arithmetic (``half_math``) and the device has it (``caps.half_math``)."""
        d = ["CPU_DEVICE"] if self.caps.is_cpu else []
        if self.dev_dtype(dtype) == np.float16:
            d.append("T_HALF")
            if half_math and self.caps.half_math:
                d.append("HALF_MATH")
        return d

    def base_defines(self) -> list:
        return ["CPU_DEVICE"] if self.caps.is_cpu else []

    # ---- buffers ----
    def buf(self, i: int) -> int:
        """Input i's buffer, in this node's storage precision."""
        return self.st.buf_of(self.node.inputs[i], self.dev_dtype(self.dtype(i)), self.node)

    def out_buf(self, i: int = 0) -> int:
        if i in self._out_bufs:
            return self._out_bufs[i]
        shape, dtype = self.st.info(self.node.outputs[i])
        dt = self.dev_dtype(dtype)
        bid = self.st.new_buf(_nbytes(shape, dt), "value", self.node.outputs[i], dt)
        self._new_bufs.append(bid)
        self._out_bufs[i] = bid
        return bid

    def alias(self, out_i: int, in_i: int) -> None:
        """Output ``out_i`` is input ``in_i``'s buffer, reinterpreted (Reshape & co: no copy; the output
        keeps the input's storage precision)."""
        if self.dev_dtype(self.out_dtype(out_i)).itemsize != self.dev_dtype(self.dtype(in_i)).itemsize:
            raise Unsupported(f"{self.op}: element size changes")
        name = self.node.inputs[in_i]
        if name in self.st.host and name not in self.st.value_buf:
            self._out_bufs[out_i] = self.buf(in_i)
        else:
            self._out_bufs[out_i] = self.st.buf_of(name, None, self.node)

    def scratch(self, nelems: int, dtype, name: str = "scratch") -> int:
        dt = np.dtype(dtype)
        bid = self.st.new_buf(int(nelems) * dt.itemsize, "scratch", f"{self.node.name}:{name}", dt)
        self._new_bufs.append(bid)
        return bid

    def upload(self, array: np.ndarray, name: str) -> int:
        bid = self.st.upload(array, f"{self.node.name}:{name}")
        self._new_bufs.append(bid)
        return bid

    def launch(self, source: str, kernel: str, defines, gsize, lsize, args, reads, writes) -> None:
        gsize = tuple(int(g) for g in gsize)
        if any(g <= 0 for g in gsize):
            raise Unsupported(f"{self.op}: empty launch {gsize}")
        if lsize is not None:
            lsize = tuple(int(x) for x in lsize)
        elif self.caps.is_cpu:
            # a fixed work-group of one item: PoCL compiles one work-group function per local size,
            # and with a free choice it picks a different one for many global sizes (each a compile
            # at first launch); a group costs it only ~30 ns, and every item here loops over a row
            lsize = (1,) * len(gsize)
        conv = []
        for a in args:
            if isinstance(a, BufRef):
                conv.append(a)
            elif isinstance(a, U64):
                conv.append(np.uint64(a.value))
            elif isinstance(a, (bool, np.bool_)):
                conv.append(np.int32(int(a)))
            elif isinstance(a, (int, np.integer)):
                if not -2**31 <= int(a) < 2**31:
                    raise Unsupported(f"{self.op}: index {int(a)} exceeds 32 bits")
                conv.append(np.int32(a))
            elif isinstance(a, (float, np.floating)):
                conv.append(np.float32(a))
            elif isinstance(a, np.generic):
                conv.append(a)
            else:
                raise TypeError(f"bad kernel argument {a!r}")
        self._launches.append(Launch(self.node.name, self.op, ProgramKey.make(source, defines), kernel, gsize,
                                     lsize, tuple(conv), frozenset(reads), frozenset(writes)))

    def commit(self) -> None:
        for i, o in enumerate(self.node.outputs):
            if not o:
                continue
            if i not in self._out_bufs:
                raise Unsupported(f"{self.op}: output {i} ({o!r}) not supported")
            self.st.value_buf[o] = self._out_bufs[i]
        self.st.launches.extend(self._launches)
        self.st.node_kind[self.node.name] = self.kind if self._launches or self.kind != "kernel" else "alias"

    def rollback(self) -> None:
        for b in self._new_bufs:
            self.st.bufs.pop(b, None)
            self.st.uploads.pop(b, None)


# ---- helpers for planners ---------------------------------------------------------------------

def ceil_div(a: int, b: int) -> int:
    return -(-int(a) // int(b))


def chunks_for(n: int, caps: DeviceCaps, min_chunk: int = 256) -> int:
    """How many work-items share a 1-D range of n elements (see RANGE_BEGIN in common.cl)."""
    if caps.is_cpu:
        return max(1, min(ceil_div(n, min_chunk), 4 * max(1, caps.compute_units)))
    return max(1, min(n, 64 * 1024))


def check_size(shape, what: str, op: str) -> None:
    n = int(np.prod(shape, dtype=np.int64)) if len(shape) else 1
    if n == 0:
        raise Unsupported(f"{op}: empty tensor {what} {list(shape)} not supported")
    if n > MAX_ELEMS:
        raise Unsupported(f"{op}: tensor {what} {list(shape)} has 2^31 or more elements")


# ---- step 1: host evaluation of shape-like ops -----------------------------------------------

def _host_eval(node: Node, vals: list[np.ndarray | None], st: PlanState) -> list[np.ndarray] | None:
    """numpy result of ``node`` when it is a host-evaluable op over host values, else None."""
    op = node.op_type
    if node.domain not in ("", "ai.onnx"):
        return None
    a = node.attrs
    present = [v for v in vals]
    if op == "Constant":
        for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
            if key in a:
                v = a[key]
                if key == "value":
                    return [np.asarray(v)]
                dt = np.float32 if "float" in key else np.int64
                return [np.asarray(v, dtype=dt)]
        return None
    if any(v is None for i, v in enumerate(present) if node.inputs[i]):
        return None
    if op == "ConstantOfShape":
        shape = tuple(int(d) for d in vals[0].ravel())
        value = a.get("value")
        fill = np.asarray(value).ravel()[0] if value is not None else np.float32(0)
        return [np.full(shape, fill, dtype=np.asarray(value).dtype if value is not None else np.float32)]
    if op in ("Shape", "Size"):
        return None  # handled below from static shapes
    small = all(v is None or v.size <= 1 << 16 for v in vals)
    if not small:
        return None
    x = vals[0] if vals else None
    try:
        if op == "Identity":
            return [x]
        if op == "Cast":
            from onnx.helper import tensor_dtype_to_np_dtype

            return [x.astype(tensor_dtype_to_np_dtype(int(a["to"])))]
        if op == "Reshape":
            shape = [int(d) for d in vals[1].ravel()]
            if not a.get("allowzero", 0):
                shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
            return [x.reshape(shape)]
        if op == "Unsqueeze":
            axes = a.get("axes") if len(vals) < 2 or vals[1] is None else vals[1].ravel().tolist()
            out = x
            rank = x.ndim + len(axes)
            for ax in sorted(int(v) % rank for v in axes):
                out = np.expand_dims(out, ax)
            return [out]
        if op == "Squeeze":
            axes = a.get("axes") if len(vals) < 2 or vals[1] is None else vals[1].ravel().tolist()
            if axes is None:
                return [np.squeeze(x)]
            return [np.squeeze(x, axis=tuple(int(v) % x.ndim for v in axes))]
        if op == "Flatten":
            ax = int(a.get("axis", 1)) % max(x.ndim, 1) if x.ndim else 0
            return [x.reshape(int(np.prod(x.shape[:ax], dtype=np.int64)), -1)]
        if op == "Concat":
            return [np.concatenate(vals, axis=int(a["axis"]))]
        if op == "Gather":
            return [np.take(x, vals[1].astype(np.int64), axis=int(a.get("axis", 0)))]
        if op == "Range":
            start, limit, delta = (np.asarray(v).ravel()[0] for v in vals[:3])
            n = max(int(np.ceil((limit - start) / delta)), 0)
            return [(start + np.arange(n) * delta).astype(np.asarray(vals[0]).dtype)]
        if op in ("Add", "Sub", "Mul") and x.dtype.kind == "i" and vals[1].dtype == x.dtype:
            f = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply}[op]
            return [f(x, vals[1]).astype(x.dtype)]
    except Exception:
        return None
    return None


def _host_shape_op(node: Node, st: PlanState) -> list[np.ndarray] | None:
    if node.op_type not in ("Shape", "Size") or node.domain not in ("", "ai.onnx"):
        return None
    try:
        shape, _ = st.info(node.inputs[0])
    except Unsupported:
        return None
    if node.op_type == "Size":
        return [np.asarray(int(np.prod(shape, dtype=np.int64)), dtype=np.int64)]
    start = int(node.attrs.get("start", 0))
    end = node.attrs.get("end")
    r = len(shape)
    start = min(max(start + r if start < 0 else start, 0), r)
    end = r if end is None else min(max(int(end) + r if int(end) < 0 else int(end), 0), r)
    return [np.asarray(shape[start:end], dtype=np.int64)]


# ---- the driver -------------------------------------------------------------------------------

def build_plan(graph: Graph, caps: DeviceCaps, *, lenient: bool = False,
               wide: frozenset[str] = frozenset()) -> Plan:
    """Plan ``graph``. lenient (query): rejected nodes are recorded in ``reasons`` and their outputs
    treated as subgraph inputs; otherwise the first rejection raises Unsupported. ``wide``: in f16
    mode, the values kept in float storage (precision.py)."""
    st = PlanState(graph, caps, wide)
    for node in graph.nodes:
        reason = _plan_node(st, node)
        if reason is None:
            continue
        if not lenient:
            raise Unsupported(reason, node)
        st.reasons[node.name] = reason
        for o in node.outputs:
            if o:
                st.external.add(o)
                st.host.pop(o, None)
    # graph inputs and outputs
    inputs = []
    for ti in graph.inputs:
        if ti.name in graph.initializers:
            continue
        if ti.name not in st.value_buf:
            try:
                st.buf_of(ti.name)
            except Unsupported:
                continue  # an unused input of unknown shape
        shape, dtype = st.info(ti.name)
        b = st.value_buf[ti.name]
        inputs.append(InputSpec(ti.name, b, shape, st.bufs[b].dtype, dtype))
    outputs = []
    for ti in graph.outputs:
        name = ti.name
        if name in st.host and name not in st.external:
            h = st.host[name]
            outputs.append(OutputSpec(name, None, h, tuple(h.shape), h.dtype, h.dtype))
            continue
        if name not in st.value_buf:
            if lenient:
                continue
            raise Unsupported(f"graph output {name!r} is not produced on the device")
        shape, dtype = st.info(name)
        b = st.value_buf[name]
        outputs.append(OutputSpec(name, b, None, shape, st.bufs[b].dtype, dtype))
    const_l = _const_launches(st)
    run_l = tuple(i for i in range(len(st.launches)) if i not in const_l)
    node_kind = dict(st.node_kind)
    run_nodes = {st.launches[i].node for i in run_l}
    for i in const_l:
        n = st.launches[i].node
        if n not in run_nodes:
            node_kind[n] = "const"
    return Plan(dict(st.bufs), tuple(st.launches), tuple(sorted(const_l)), run_l, dict(st.uploads),
                tuple(inputs), tuple(outputs), node_kind, dict(st.reasons), dict(st.value_buf),
                frozenset(st.half_nodes))


def _plan_node(st: PlanState, node: Node) -> str | None:
    """None when planned (committed), else the reason."""
    # 1. host evaluation
    if all(not i or i in st.host for i in node.inputs) or node.op_type in ("Shape", "Size"):
        vals = [st.host.get(i) if i else None for i in node.inputs]
        res = _host_shape_op(node, st) if node.op_type in ("Shape", "Size") else _host_eval(node, vals, st)
        if res is not None:
            for o, v in zip(node.outputs, res):
                if o:
                    st.host[o] = np.asarray(v)
            st.node_kind[node.name] = "host"
            return None
    # 2. device planner
    fn = lookup_planner(node)
    if fn is None:
        dom = f" (domain {node.domain})" if node.domain not in ("", "ai.onnx") else ""
        return f"{node.op_type}{dom}: no OpenCL kernel"
    nb = NodeBuilder(st, node)
    try:
        for v in list(node.inputs) + list(node.outputs):
            if v:
                shape, _ = st.info(v)
                if not (v in st.host and v in node.inputs):
                    check_size(shape, repr(v), node.op_type)
        fn(nb)
        nb.commit()
        if nb.half:
            st.half_nodes.add(node.name)
    except Unsupported as e:
        nb.rollback()
        msg = str(e.args[0]) if e.args else "not supported"
        return msg if msg.startswith(node.op_type) else f"{node.op_type}: {msg}"
    return None


def _const_launches(st: PlanState) -> frozenset[int]:
    """Launches whose every input is a constant (fixed point: a buffer is constant when it is an
    upload, or when every launch writing it is constant)."""
    writers: dict[int, list[int]] = {}
    for i, l in enumerate(st.launches):
        for b in l.writes:
            writers.setdefault(b, []).append(i)
    cand = set(range(len(st.launches)))
    uploads = set(st.uploads)

    def const_buf(b: int) -> bool:
        ws = writers.get(b)
        return b in uploads or (bool(ws) and all(w in cand for w in ws))

    changed = True
    while changed:
        changed = False
        for i in sorted(cand):
            l = st.launches[i]
            ok = all(r in l.writes or const_buf(r) for r in l.reads)
            # a buffer also written by a per-inference launch is not constant
            ok = ok and all(all(w in cand for w in writers[b]) for b in l.writes)
            if not ok:
                cand.discard(i)
                changed = True
    return frozenset(cand)


def plan_graph_reasons(graph: Graph, caps: DeviceCaps) -> dict[str, bool | str]:
    plan = build_plan(graph, caps, lenient=True)
    return {n.name: plan.reasons.get(n.name, True) for n in graph.nodes}


def prod(xs) -> int:
    return int(math.prod(int(x) for x in xs))
