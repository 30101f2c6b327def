"""Native code for the CPU kernels: the host's LLVM target machine (llvmlite) and a spinning
work-claiming pool that runs compiled kernels on the pool's threads without the GIL.

Why a native pool: ``parallel.run`` hands Python callables to threads that block on a queue, and
each call into a compiled kernel returns to Python, which must take the GIL back. On this project's
2-core VM a blocked thread takes 20-60 us to wake, and a thread waiting for the GIL blocks too; the
direct conv's units (60-300 us each) paid it on every hand-off: two Python threads each running half
of a 64 -> 256 channel 3x3 conv on 13x13 took 0.42-0.46 ms per half where one half alone took
0.30 ms, while two *processes* doing the same ran at full speed. Here a job is published in a block of
shared words, and the pool's threads, parked inside a compiled spin loop with the GIL released, claim
its units with a compare-and-swap and call the kernel themselves: no queue, no GIL, no wake-up while
they spin.

The state block (int64 words; each hot word on its own cache line):

========  ==================================================================================
word      meaning
========  ==================================================================================
0         ticket: ``seq << 32 | next unit``; next = 0xFFFFFFFF while the job's fields are written
8         done: units finished
16..27    the job: kernel address, unit-row base and stride, units, five addresses, two floats,
          helper slots left
32 + 8k   worker k's doorbell: set by Python to call the worker back to Python (a Python job)
160 + 8k  worker k's park flag: 1 while it is (about to be) blocked on its queue
========  ==================================================================================

A unit kernel has the direct conv's signature, ``void f(i64 *row, float *p1, ..., float *p5,
float a0, float a1)``; unit i gets ``row = base + i * stride``.

1. ``publish`` (the caller, GIL released): close the ticket (seq + 1, next = all ones), write the
   job, reset done, publish ``seq << 32`` (seq_cst), then take (exchange with 0) the park flags of
   the helpers it may use and return them: the caller wakes those threads on their queues. Closing
   first makes a claim that raced with the rewrite fail its CAS: a worker that read the old ticket
   can never claim against the new job's fields.
2. ``finish`` (the caller): claim units until none is left, then spin until done == units.
3. ``work`` (both sides): load the ticket (acquire); stop when its seq is not this job's or next >=
   units; CAS ticket -> ticket + 1 and, on success, call the kernel on unit next, then add 1 to
   done (release).
4. ``worker`` (a pool thread, GIL released): clear its park flag, spin reading the ticket; on a new
   published seq take a helper slot (``slots`` - 1, so at most the caller's thread limit take
   part) and ``work`` it; return 1 when its doorbell rings (a Python job waits). After ``spin`` TSC
   ticks without a job it parks: raise the flag, look at the ticket once more (seq_cst, against
   publish's store-then-exchange: either it sees the new job, or publish sees the flag), and
   return 0 unless it could take the flag back to serve a job that came meanwhile; the thread
   then blocks on its queue until publish's caller or a Python job wakes it.

Traced example, 4 units, 1 helper: the caller publishes seq 7 (ticket 7<<32), finds the worker
spinning (flag 0, no wake-up), CASes to 7<<32|1 and runs unit 0; the worker sees seq 7, takes the slot, CASes to |2 and runs unit 1; whichever is free
first takes units 2 and 3; the caller, out of units, spins until done = 4.

x86-64 only (``pause`` and ``rdtsc``); elsewhere ``spin_pool`` is None and the kernels use
``parallel.run``.
"""
from __future__ import annotations

import ctypes
import platform
import threading

_lock = threading.Lock()
_state: dict = {}

#: word offsets in the state block
TICKET, DONE, JOB, BELL = 0, 8, 16, 32
#: most workers the state block has doorbells for
MAX_WORKERS = 16
PARK = BELL + 8 * MAX_WORKERS
FN, BASE, STRIDE, UNITS, P1, A0, A1, SLOTS = (JOB + i for i in (0, 1, 2, 3, 4, 9, 10, 11))
WORDS = PARK + 8 * MAX_WORKERS
#: TSC ticks a worker spins without a job before it parks (about 0.5 ms at 2 GHz)
SPIN_TICKS = 1_000_000
_CLOSED = 0xFFFFFFFF


class Machine:
    """The host's LLVM target machine; ``compile`` keeps every engine alive (the code lives there)."""

    def __init__(self):
        import llvmlite.binding as llvm

        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        self.llvm = llvm
        self.features = llvm.get_host_cpu_features().flatten()
        self.tm = llvm.Target.from_default_triple().create_target_machine(
            cpu=llvm.get_host_cpu_name(), features=self.features, opt=3)
        self.engines: list = []

    def compile(self, ir_text: str, *names: str) -> list[int]:
        """Optimise and JIT-compile an IR module; the addresses of the functions ``names``."""
        llvm = self.llvm
        mod = llvm.parse_assembly(ir_text)
        mod.verify()
        pb = llvm.create_pass_builder(self.tm, llvm.create_pipeline_tuning_options(speed_level=3))
        pb.getModulePassManager().run(mod, pb)
        ee = llvm.create_mcjit_compiler(mod, self.tm)
        ee.finalize_object()
        with _lock:
            self.engines.append(ee)
        return [ee.get_function_address(n) for n in names]


def machine() -> Machine | None:
    """The shared Machine, or None when llvmlite is missing or cannot target this CPU."""
    m = _state.get("machine", _state)
    if m is not _state:
        return m
    with _lock:
        if "machine" not in _state:
            try:
                _state["machine"] = Machine()
            except Exception as ex:  # noqa: BLE001 - no llvmlite, or no native target
                _state["machine"] = None
                _state["why"] = f"{type(ex).__name__}: {ex}"
    return _state["machine"]


def address(a) -> int:
    """The data address of a C-contiguous numpy array, for a kernel call: through the buffer
    protocol where the array is writeable (0.9 us on this VM; ``a.ctypes.data`` builds a helper
    object, 2.6 us, and a conv passes three or four arrays), else ``a.ctypes.data``."""
    if a.flags.writeable and a.size:
        return ctypes.addressof(ctypes.c_char.from_buffer(a))
    return a.ctypes.data


# ---- IR building helpers (shared by the kernels' generators) -----------------------------------------

def ir_loop(b, lo, hi, body, step=1) -> None:
    """``for i in range(lo, hi, step): body(i)`` at b's position (lo, hi and a step > 0: i64 IR
    values; the step may be an int). The
    counter lives in an entry-block alloca, which LLVM's mem2reg turns into a register."""
    import llvmlite.ir as ir

    i64 = ir.IntType(64)
    with b.goto_entry_block():
        i = b.alloca(i64)
    b.store(lo, i)
    fn = b.function
    head, bod, end = fn.append_basic_block(), fn.append_basic_block(), fn.append_basic_block()
    b.branch(head)
    b.position_at_end(head)
    b.cbranch(b.icmp_signed("<", b.load(i), hi), bod, end)
    b.position_at_end(bod)
    body(b.load(i))
    b.store(b.add(b.load(i), step if isinstance(step, ir.Value) else ir.Constant(i64, step)), i)
    b.branch(head)
    b.position_at_end(end)


def ir_splat(b, s, ty):
    """The scalar IR value ``s`` broadcast to every lane of vector type ``ty``."""
    import llvmlite.ir as ir

    i32 = ir.IntType(32)
    v = b.insert_element(ir.Constant(ty, ir.Undefined), s, ir.Constant(i32, 0))
    return b.shuffle_vector(v, ir.Constant(ty, ir.Undefined), ir.Constant(ir.VectorType(i32, ty.count), [0] * ty.count))


class UnitIR:
    """The frame of one unit kernel's IR module (``void name(i64 *prm, float *p1..p5, float a0,
    float a1)``, the pool's unit signature) for vectors of VW floats: the module, its function and
    an entry-block builder, the types, ``prm``'s first integers, and masked vector load / store.
    ``noalias`` marks the float pointers (1-based) that never overlap another."""

    def __init__(self, name: str, VW: int, nprm: int, noalias=()):
        import llvmlite.ir as ir

        self.ir, self.VW = ir, VW
        self.f32, self.i64, self.i32, self.i1 = ir.FloatType(), ir.IntType(64), ir.IntType(32), ir.IntType(1)
        self.vt, self.mt = ir.VectorType(self.f32, VW), ir.VectorType(self.i1, VW)
        self.it, self.vp = ir.VectorType(self.i32, VW), self.vt.as_pointer()
        fp, lp = self.f32.as_pointer(), self.i64.as_pointer()
        self.mod = ir.Module(name=f"hetero_{name}")
        self.fn = ir.Function(self.mod, ir.FunctionType(ir.VoidType(), [lp] + [fp] * 5 + [self.f32] * 2), name=name)
        self.ptrs, self.a0, self.a1 = self.fn.args[1:6], self.fn.args[6], self.fn.args[7]
        for k in noalias:
            self.ptrs[k - 1].add_attribute("noalias")
        self._mload = ir.Function(self.mod, ir.FunctionType(self.vt, [self.vp, self.i32, self.mt, self.vt]),
                                  name=f"llvm.masked.load.v{VW}f32.p0")
        self._mstore = ir.Function(self.mod, ir.FunctionType(ir.VoidType(), [self.vt, self.vp, self.i32, self.mt]),
                                   name=f"llvm.masked.store.v{VW}f32.p0")
        self.b = ir.IRBuilder(self.fn.append_basic_block("entry"))
        self.prm = [self.b.load(self.b.gep(self.fn.args[0], [self.c(i)])) for i in range(nprm)]

    def c(self, v):
        """An i64 constant."""
        return self.ir.Constant(self.i64, v)

    def vptr(self, p, at):
        """A vector pointer to float pointer p + at."""
        return self.b.bitcast(self.b.gep(p, [at]), self.vp)

    def load(self, p, at, mask=None, passthru=None):
        """The vector at p + at: whole (mask None), or its lanes in mask (others: passthru)."""
        if mask is None:
            return self.b.load(self.vptr(p, at), align=4)
        return self.b.call(self._mload, [self.vptr(p, at), self.ir.Constant(self.i32, 4), mask, passthru])

    def store(self, v, p, at, mask=None):
        """v to p + at: whole (mask None), or its lanes in mask."""
        if mask is None:
            self.b.store(v, self.vptr(p, at), align=4)
        else:
            self.b.call(self._mstore, [v, self.vptr(p, at), self.ir.Constant(self.i32, 4), mask])

    def lanes_below(self, n32):
        """The mask of lanes l < n32 (an i32 value)."""
        return self.b.icmp_signed("<", self.ir.Constant(self.it, list(range(self.VW))), ir_splat(self.b, n32, self.it))

    def text(self) -> str:
        self.b.ret_void()
        return str(self.mod)


# ---- the spinning pool ---------------------------------------------------------------------------------

def _pool_ir() -> str:
    """The IR module of ``run`` and ``worker`` (see the module doc)."""
    import llvmlite.ir as ir

    i64, f32 = ir.IntType(64), ir.FloatType()
    lp, fp = i64.as_pointer(), f32.as_pointer()
    unit_t = ir.FunctionType(ir.VoidType(), [lp, fp, fp, fp, fp, fp, f32, f32])
    mod = ir.Module(name="hetero_pool")
    rdtsc = ir.Function(mod, ir.FunctionType(i64, []), name="llvm.readcyclecounter")
    pause = ir.Function(mod, ir.FunctionType(ir.VoidType(), []), name="llvm.x86.sse2.pause")
    c = lambda v: ir.Constant(i64, v)  # noqa: E731

    def word(b, st, k):
        return b.gep(st, [k if isinstance(k, ir.Value) else c(k)])

    def loop_until(b, fn, cond_fn, body_fn=None):
        """while not cond_fn(): body_fn() (blocks of fn; cond_fn/body_fn build at b's position)."""
        head, body, end = fn.append_basic_block(), fn.append_basic_block(), fn.append_basic_block()
        b.branch(head)
        b.position_at_end(head)
        b.cbranch(cond_fn(), end, body)
        b.position_at_end(body)
        if body_fn is not None:
            body_fn()
        b.branch(head)
        b.position_at_end(end)

    # -- work(st, seq): claim and run units of job seq until none is left
    work = ir.Function(mod, ir.FunctionType(ir.VoidType(), [lp, i64]), name="work")
    work.linkage = "internal"
    st, seq = work.args
    b = ir.IRBuilder(work.append_basic_block("entry"))
    head, claim, run_it, out = (work.append_basic_block(n) for n in ("head", "claim", "run", "out"))
    b.branch(head)
    b.position_at_end(head)
    t = b.load_atomic(word(b, st, TICKET), "acquire", 8)
    i = b.and_(t, c(_CLOSED))
    n = b.load(word(b, st, UNITS))
    mine = b.and_(b.icmp_unsigned("==", b.lshr(t, c(32)), seq), b.icmp_unsigned("<", i, n))
    b.cbranch(mine, claim, out)
    b.position_at_end(claim)
    got = b.extract_value(b.cmpxchg(word(b, st, TICKET), t, b.add(t, c(1)), "acq_rel", "acquire"), 1)
    b.cbranch(got, run_it, head)
    b.position_at_end(run_it)
    f = b.inttoptr(b.load(word(b, st, FN)), unit_t.as_pointer())
    row = b.inttoptr(b.add(b.load(word(b, st, BASE)), b.mul(i, b.load(word(b, st, STRIDE)))), lp)
    ps = [b.inttoptr(b.load(word(b, st, P1 + k)), fp) for k in range(5)]
    a0 = b.load(b.bitcast(word(b, st, A0), fp))
    a1 = b.load(b.bitcast(word(b, st, A1), fp))
    b.call(f, [row, *ps, a0, a1])
    b.atomic_rmw("add", word(b, st, DONE), c(1), "release")
    b.branch(head)
    b.position_at_end(out)
    b.ret_void()

    # -- publish(st, fn, base, stride, units, helpers, p1..p5, a0, a1) -> the parked helpers (bits)
    pub = ir.Function(mod, ir.FunctionType(i64, [lp] + [i64] * 10 + [f32, f32]), name="publish")
    st, fn_, base, stride, units, helpers, *rest = pub.args
    ps, (a0, a1) = rest[:5], rest[5:]
    b = ir.IRBuilder(pub.append_basic_block("entry"))
    seq = b.add(b.lshr(b.load_atomic(word(b, st, TICKET), "acquire", 8), c(32)), c(1))
    seq = b.and_(seq, c(_CLOSED))
    b.store_atomic(b.or_(b.shl(seq, c(32)), c(_CLOSED)), word(b, st, TICKET), "seq_cst", 8)
    for k, v in zip((FN, BASE, STRIDE, UNITS), (fn_, base, stride, units)):
        b.store(v, word(b, st, k))
    for k, v in enumerate(ps):
        b.store(v, word(b, st, P1 + k))
    b.store(a0, b.bitcast(word(b, st, A0), fp))
    b.store(a1, b.bitcast(word(b, st, A1), fp))
    b.store(c(0), word(b, st, DONE))
    b.store_atomic(helpers, word(b, st, SLOTS), "monotonic", 8)
    b.store_atomic(b.shl(seq, c(32)), word(b, st, TICKET), "seq_cst", 8)
    # after publishing (seq_cst: a worker that parks after this sees the job, see ``worker``),
    # take the park flags of the helpers: the caller wakes those
    mask = b.alloca(i64)
    b.store(c(0), mask)

    def take(k):
        was = b.atomic_rmw("xchg", word(b, st, b.add(c(PARK), b.mul(k, c(8)))), c(0), "seq_cst")
        b.store(b.or_(b.load(mask), b.shl(b.and_(was, c(1)), k)), mask)
    ir_loop(b, c(0), helpers, take)
    b.ret(b.load(mask))

    # -- finish(st): claim units of the published job, then wait until all are done
    fin = ir.Function(mod, ir.FunctionType(ir.VoidType(), [lp]), name="finish")
    st, = fin.args
    b = ir.IRBuilder(fin.append_basic_block("entry"))
    seq = b.lshr(b.load_atomic(word(b, st, TICKET), "acquire", 8), c(32))
    b.call(work, [st, seq])
    units = b.load(word(b, st, UNITS))
    loop_until(b, fin, lambda: b.icmp_signed(">=", b.load_atomic(word(b, st, DONE), "acquire", 8), units),
               lambda: b.call(pause, []))
    b.ret_void()

    # -- worker(st, k, spin) -> 1 (doorbell), 0 (no job for spin ticks)
    wk = ir.Function(mod, ir.FunctionType(i64, [lp, i64, i64]), name="worker")
    st, k, spin = wk.args
    b = ir.IRBuilder(wk.append_basic_block("entry"))
    last = b.alloca(i64)
    since = b.alloca(i64)
    b.store(c(-1), last)
    b.store(b.call(rdtsc, []), since)
    park = word(b, st, b.add(c(PARK), b.mul(k, c(8))))
    b.store_atomic(c(0), park, "seq_cst", 8)
    head, new, join, bell, idle, ring, quiet, ret0, stay = (
        wk.append_basic_block(n) for n in ("head", "new", "join", "bell", "idle", "ring", "quiet", "ret0", "stay"))
    b.branch(head)
    b.position_at_end(head)
    t = b.load_atomic(word(b, st, TICKET), "acquire", 8)
    s = b.lshr(t, c(32))
    fresh = b.and_(b.icmp_unsigned("!=", s, b.load(last)),
                   b.icmp_unsigned("!=", b.and_(t, c(_CLOSED)), c(_CLOSED)))
    b.cbranch(fresh, new, bell)
    b.position_at_end(new)
    b.store(s, last)
    old = b.atomic_rmw("sub", word(b, st, SLOTS), c(1), "acq_rel")
    b.cbranch(b.icmp_signed(">", old, c(0)), join, bell)
    b.position_at_end(join)
    b.call(work, [st, s])
    b.store(b.call(rdtsc, []), since)
    b.branch(bell)
    b.position_at_end(bell)
    bp = word(b, st, b.add(c(BELL), b.mul(k, c(8))))
    b.cbranch(b.icmp_unsigned("!=", b.load_atomic(bp, "acquire", 8), c(0)), ring, idle)
    b.position_at_end(ring)
    b.store_atomic(c(0), bp, "release", 8)
    b.ret(c(1))
    b.position_at_end(idle)
    b.cbranch(b.icmp_unsigned(">", b.sub(b.call(rdtsc, []), b.load(since)), spin), ret0, quiet)
    b.position_at_end(quiet)
    b.call(pause, [])
    b.branch(head)
    b.position_at_end(ret0)
    # park: raise the flag, then look once more (seq_cst both, against publish's store-then-take):
    # either this sees a job published meanwhile, or publish sees the flag and wakes the thread
    b.store_atomic(c(1), park, "seq_cst", 8)
    t = b.load_atomic(word(b, st, TICKET), "seq_cst", 8)
    late = b.and_(b.icmp_unsigned("!=", b.lshr(t, c(32)), b.load(last)),
                  b.icmp_unsigned("!=", b.and_(t, c(_CLOSED)), c(_CLOSED)))
    gone = wk.append_basic_block("gone")
    b.cbranch(late, stay, gone)
    b.position_at_end(stay)
    # keep spinning only if the flag is still ours (else publish took it and a wake-up is coming)
    kept = b.extract_value(b.cmpxchg(park, c(1), c(0), "seq_cst", "seq_cst"), 1)
    b.store(b.call(rdtsc, []), since)
    b.cbranch(kept, head, gone)
    b.position_at_end(gone)
    b.ret(c(0))
    return str(mod)


class SpinPool:
    """The compiled ``run`` / ``worker`` pair and the state block they share (a numpy array kept
    alive here). ``parallel`` owns the threads; this is only the native half."""

    def __init__(self, m: Machine):
        import numpy as np

        pub_at, fin_at, worker_at = m.compile(_pool_ir(), "publish", "finish", "worker")
        P, F, L = ctypes.c_void_p, ctypes.c_float, ctypes.c_int64
        self.publish = ctypes.CFUNCTYPE(L, P, *[L] * 10, F, F)(pub_at)
        self.finish = ctypes.CFUNCTYPE(None, P)(fin_at)
        self.worker = ctypes.CFUNCTYPE(L, P, L, L)(worker_at)
        self.words = np.zeros(WORDS + 8, np.int64)
        # the block starts on a cache line: numpy aligns to 16 bytes, so skip to the next 64
        skip = (-self.words.ctypes.data % 64) // 8
        self.block = self.words[skip:skip + WORDS]
        self.at = self.block.ctypes.data
        self.block[PARK::8] = 1  # the threads start parked on their queues

    def ring(self, k: int) -> None:
        """Call worker k back to Python (a Python job was put in its queue)."""
        self.block[BELL + 8 * k] = 1


def spin_pool() -> SpinPool | None:
    """A new SpinPool, or None off x86-64 or without llvmlite."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    m = machine()
    if m is None:
        return None
    try:
        return SpinPool(m)
    except Exception:  # noqa: BLE001 - e.g. an LLVM too old for an intrinsic: the Python pool serves
        return None
