"""OpenCL program cache: each (context, source, build options) is built once per process, and with a
``CACHE_DIR`` its device binary is kept on disk so a later compile (even in another process) skips the
compiler.

Sources are the ``cl/*.cl`` package files; ``common.cl`` is prepended to each, so the cache key (a
SHA-256 of device identity, full source text and options) changes whenever any of them changes.

PoCL note: PoCL compiles the kernel's work-group function for each local size at the first launch.
The binary PoCL returns includes the work-group functions compiled so far, so the executable stores
binaries *after* its warm-up run (:meth:`ProgramCache.store`), and a cached compile needs no LLVM at all.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ...errors import KernelBuildError

CL_DIR = Path(__file__).resolve().parent / "cl"


@dataclass(frozen=True)
class ProgramKey:
    """A source file under ``cl/`` and its build defines ((name, value-or-None), sorted)."""

    source: str
    defines: tuple[tuple[str, str | None], ...] = ()

    @staticmethod
    def make(source: str, defines) -> "ProgramKey":
        items = []
        for d in defines:
            if isinstance(d, tuple):
                items.append((str(d[0]), None if d[1] is None else str(d[1])))
            else:
                items.append((str(d), None))
        return ProgramKey(source, tuple(sorted(set(items))))

    def options(self) -> list[str]:
        return [f"-D{k}" if v is None else f"-D{k}={v}" for k, v in self.defines]

    def describe(self) -> str:
        return f"{self.source} [{' '.join(self.options())}]"


@lru_cache(maxsize=None)
def source_text(name: str) -> str:
    common = (CL_DIR / "common.cl").read_text()
    body = (CL_DIR / name).read_text()
    return common + "\n#line 1\n" + body


def device_identity(device) -> str:
    return "|".join([device.platform.name, device.platform.version, device.name, device.version,
                     device.driver_version])


def cache_file(cache_dir: str, device, key: ProgramKey) -> Path:
    h = hashlib.sha256()
    h.update(device_identity(device).encode())
    h.update(b"\0" + source_text(key.source).encode())
    h.update(b"\0" + " ".join(key.options()).encode())
    return Path(cache_dir) / f"hetero_ocl_{h.hexdigest()[:40]}.bin"


class ProgramCache:
    """Process-wide: programs by (context, key); thread-safe; one build per key even when racing."""

    def __init__(self) -> None:
        self._programs: dict[tuple[int, ProgramKey], object] = {}
        self._locks: dict[tuple[int, ProgramKey], threading.Lock] = {}
        self._guard = threading.Lock()
        self.builds = 0  # programs compiled from source (for tests and reports)
        self.binary_loads = 0

    def clear(self) -> None:
        """Forget built programs (the next compile rebuilds or reloads from CACHE_DIR)."""
        with self._guard:
            self._programs.clear()
            self._locks.clear()

    def get(self, context, device, key: ProgramKey, cache_dir: str = "") -> tuple[object, bool]:
        """(program, found_on_disk). found_on_disk: CACHE_DIR holds a binary for this key."""
        import pyopencl as cl

        ident = (context.int_ptr, key)
        path = cache_file(cache_dir, device, key) if cache_dir else None
        on_disk = bool(path is not None and path.exists())
        with self._guard:
            prg = self._programs.get(ident)
            if prg is not None:
                return prg, on_disk
            lock = self._locks.setdefault(ident, threading.Lock())
        with lock:
            with self._guard:
                prg = self._programs.get(ident)
            if prg is not None:
                return prg, on_disk
            prg = None
            if on_disk:
                try:
                    binary = path.read_bytes()
                    prg = cl.Program(context, [device], [binary]).build(options=key.options())
                    self.binary_loads += 1
                except Exception:  # stale or foreign binary: rebuild from source
                    prg, on_disk = None, False
            if prg is None:
                try:
                    prg = cl.Program(context, source_text(key.source)).build(options=key.options())
                except cl.Error as e:
                    raise KernelBuildError(f"OpenCL build of {key.describe()} failed on {device.name}: "
                                           f"{str(e)[-3000:]}") from None
                self.builds += 1
            with self._guard:
                self._programs[ident] = prg
            return prg, on_disk

    def store(self, device, key: ProgramKey, program, cache_dir: str) -> None:
        """Write the program's current binary to CACHE_DIR (atomically; errors are not fatal)."""
        import pyopencl as cl

        if not cache_dir:
            return
        try:
            path = cache_file(cache_dir, device, key)
            devices = program.get_info(cl.program_info.DEVICES)
            binaries = program.get_info(cl.program_info.BINARIES)
            binary = next((b for d, b in zip(devices, binaries) if d.int_ptr == device.int_ptr), binaries[0])
            if not binary:
                return
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp_hetero_ocl_")
            with os.fdopen(fd, "wb") as f:
                f.write(binary)
            os.replace(tmp, path)
        except OSError:
            pass


PROGRAMS = ProgramCache()
