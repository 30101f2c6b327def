"""Liveness-based device memory plan: which intermediate tensors may share one device buffer.

Inside a compiled subgraph every intermediate tensor lives in a device buffer; two tensors whose
lifetimes do not overlap can share one. ``plan_memory`` assigns each buffer to a *slot* (one real
``cl.Buffer`` per stream context) greedily, in order of first use:

1. a buffer's lifetime is [first launch writing it, last launch reading or writing it]; graph inputs
   start at -1 (uploaded before the first launch), graph outputs end at +inf (read after the last);
2. slots are released *after* the last launch using them, never during it: a kernel never reads and
   writes the same slot (no in-place hazard);
3. a new buffer takes the free slot with the smallest size that fits; when none fits, the largest free
   slot grows (so the total stays near the peak of the live set); with no free slot, a new one opens.

Traced example (sizes in bytes; launches L0..L3)::

    buffer  size  lifetime    free slots when it starts        choice
    x       400   [-1, 0]     -                                slot0 (new, 400)
    a       800   [0, 1]      -            (x still in L0)      slot1 (new, 800)
    b       800   [1, 2]      slot0(400)                       slot0 grows to 800
    c       100   [2, 3]      slot1(800)                       slot1
    y       400   [3, inf]    slot0(800)                       slot0

    -> 2 slots, 1600 bytes, instead of 2500 bytes for five separate buffers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

INF = 1 << 60


@dataclass(frozen=True)
class Lifetime:
    buf: int
    nbytes: int
    first: int
    last: int


@dataclass(frozen=True)
class MemoryPlan:
    """``slot_of[buf]`` -> slot index; ``slot_bytes[slot]`` its size; ``naive_bytes`` without sharing."""

    slot_of: Mapping[int, int]
    slot_bytes: tuple[int, ...]
    naive_bytes: int

    @property
    def total_bytes(self) -> int:
        return sum(self.slot_bytes)


def lifetimes(launch_io: list[tuple[frozenset[int], frozenset[int]]], bufs: Mapping[int, int],
              inputs: frozenset[int], outputs: frozenset[int]) -> list[Lifetime]:
    """Lifetimes of ``bufs`` (buf -> nbytes) from each launch's (reads, writes)."""
    first: dict[int, int] = {b: -1 for b in inputs if b in bufs}
    last: dict[int, int] = dict(first)
    for i, (reads, writes) in enumerate(launch_io):
        for b in writes | reads:
            if b not in bufs:
                continue
            first.setdefault(b, i)
            last[b] = i
    for b in outputs:
        if b in bufs:
            first.setdefault(b, -1)
            last[b] = INF
    return sorted((Lifetime(b, bufs[b], first[b], last[b]) for b in first), key=lambda t: (t.first, t.buf))


def plan_memory(lts: list[Lifetime]) -> MemoryPlan:
    """Greedy slot assignment over lifetimes sorted by first use (see the module doc)."""
    slot_bytes: list[int] = []
    slot_free_after: list[int] = []  # last launch index using the slot
    slot_of: dict[int, int] = {}
    for lt in sorted(lts, key=lambda t: (t.first, t.buf)):
        free = [s for s in range(len(slot_bytes)) if slot_free_after[s] < lt.first]
        fitting = [s for s in free if slot_bytes[s] >= lt.nbytes]
        if fitting:
            s = min(fitting, key=lambda s: (slot_bytes[s], s))
        elif free:
            s = max(free, key=lambda s: (slot_bytes[s], -s))
            slot_bytes[s] = lt.nbytes
        else:
            s = len(slot_bytes)
            slot_bytes.append(lt.nbytes)
            slot_free_after.append(-2)
        slot_of[lt.buf] = s
        slot_free_after[s] = lt.last
    return MemoryPlan(slot_of, tuple(slot_bytes), sum(t.nbytes for t in lts))
