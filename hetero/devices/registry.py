"""Device strings and the registry of device plugins.

Grammar (DESIGN.md §4)::

    device   := single | virtual
    single   := NAME ["." INDEX] ["(" NREQ ")"]         CPU, GPU, GPU.1, MOCK.0, GPU(4)
    virtual  := ("HETERO" | "MULTI" | "AUTO" | "BATCH") [":" list]
    list     := item ("," item)*                         order = priority, fastest first
    item     := single | "-" single                      "-CPU" excludes (AUTO)

``GPU`` means ``GPU.0``. Families are discovered lazily: built-ins (CPU, GPU via OpenCL, MOCK) plus
plugins registered under the ``hetero.devices`` entry-point group (a callable returning a list of
:class:`~hetero.devices.base.Device`).
"""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Callable

from ..errors import DeviceError, DeviceStringError
from .base import Device

VIRTUAL = ("HETERO", "MULTI", "AUTO", "BATCH")


@dataclass(frozen=True)
class DeviceSpec:
    """One parsed device: ``name`` is canonical ("GPU.0"), ``nreq`` the "(n)" suffix, ``exclude`` a "-"."""

    family: str
    index: int | None
    nreq: int | None = None
    exclude: bool = False

    @property
    def name(self) -> str:
        return self.family if self.index is None else f"{self.family}.{self.index}"

    def __str__(self) -> str:
        s = ("-" if self.exclude else "") + self.name
        return s + (f"({self.nreq})" if self.nreq is not None else "")


@dataclass(frozen=True)
class ParsedDevice:
    """``virtual`` is None for a single device; else HETERO/MULTI/AUTO/BATCH with its ``items``."""

    virtual: str | None
    items: tuple[DeviceSpec, ...]
    text: str


_SINGLE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?:\.(\d+))?(?:\((\d+)\))?$")


def parse_single(token: str, text: str) -> DeviceSpec:
    tok = token.strip()
    exclude = tok.startswith("-")
    if exclude:
        tok = tok[1:].strip()
    m = _SINGLE.match(tok)
    if not m:
        raise DeviceStringError(f"device string {text!r}: bad device token {token.strip()!r} "
                                "(expected NAME[.INDEX][(NREQ)], e.g. GPU.1 or CPU(2))")
    fam = m.group(1).upper()
    idx = int(m.group(2)) if m.group(2) is not None else None
    nreq = int(m.group(3)) if m.group(3) is not None else None
    if nreq is not None and nreq < 1:
        raise DeviceStringError(f"device string {text!r}: request count in {token.strip()!r} must be >= 1")
    return DeviceSpec(fam, idx, nreq, exclude)


def parse(text: str) -> ParsedDevice:
    """Parse a device string (syntax only; see :func:`resolve` for existence)."""
    if not isinstance(text, str) or not text.strip():
        raise DeviceStringError(f"empty device string {text!r}; expected e.g. 'CPU', 'GPU.1', 'HETERO:GPU,CPU'")
    s = text.strip()
    head, sep, rest = s.partition(":")
    if head.strip().upper() in VIRTUAL:
        virt = head.strip().upper()
        if not sep:
            if virt in ("AUTO", "HETERO", "MULTI"):  # HETERO, MULTI: the list may come from MULTI_DEVICE_PRIORITIES
                return ParsedDevice(virt, (), s)
            raise DeviceStringError(f"device string {text!r}: {virt} needs a device list, e.g. '{virt}:GPU,CPU'")
        tokens = [t for t in rest.split(",")]
        if not rest.strip() or any(not t.strip() for t in tokens):
            raise DeviceStringError(f"device string {text!r}: empty device list item after '{virt}:'")
        items = []
        for t in tokens:
            fam = t.strip().lstrip("-").split(":")[0].split("(")[0].split(".")[0].upper()
            if fam in VIRTUAL or ":" in t:
                raise DeviceStringError(f"device string {text!r}: nested virtual device {t.strip()!r} "
                                        f"inside {virt} is not supported")
            items.append(parse_single(t, text))
        if any(i.exclude for i in items) and virt != "AUTO":
            bad = next(i for i in items if i.exclude)
            raise DeviceStringError(f"device string {text!r}: exclusion {str(bad)!r} is only valid for AUTO")
        if virt == "AUTO" and any(i.exclude for i in items) and not all(i.exclude for i in items):
            raise DeviceStringError(f"device string {text!r}: mix of listed and excluded devices in AUTO")
        names = [i.name for i in items]
        for n in names:
            if names.count(n) > 1 and n != "GPU":
                raise DeviceStringError(f"device string {text!r}: device {n!r} is listed twice")
        return ParsedDevice(virt, tuple(items), s)
    if sep:
        raise DeviceStringError(f"device string {text!r}: {head.strip()!r} is not a virtual device "
                                f"(one of {', '.join(VIRTUAL)})")
    return ParsedDevice(None, (parse_single(s, text),), s)


# ---- the registry ----------------------------------------------------------------------------

class DeviceRegistry:
    """Knows every device instance of every family; discovery runs once per family, lazily."""

    def __init__(self) -> None:
        self._families: dict[str, Callable[[], list[Device]]] = {}
        self._devices: dict[str, list[Device]] = {}
        self._lock = threading.RLock()
        self._register_builtins()

    def _register_builtins(self) -> None:
        def cpu():
            from .cpu import CPUDevice

            return [CPUDevice("CPU")]

        def gpu():
            try:
                from .opencl import discover
            except ImportError:
                return []
            return discover()

        def mock():
            from .mock import discover

            return discover()

        self._families["CPU"] = cpu
        self._families["GPU"] = gpu
        self._families["MOCK"] = mock
        try:
            from importlib.metadata import entry_points

            for ep in entry_points(group="hetero.devices"):
                self._families.setdefault(ep.name.upper(), ep.load())
        except Exception:
            pass

    def register_family(self, family: str, factory: Callable[[], list[Device]]) -> None:
        with self._lock:
            self._families[family.upper()] = factory
            self._devices.pop(family.upper(), None)

    def family(self, family: str) -> list[Device]:
        with self._lock:
            if family not in self._devices:
                factory = self._families.get(family)
                if factory is None:
                    return []
                try:
                    self._devices[family] = list(factory())
                except Exception:
                    self._devices[family] = []
            return self._devices[family]

    def available(self, include_mock: bool = False) -> list[str]:
        """Names of real devices ("CPU", "GPU.0", ...); MOCK devices only when asked."""
        out = []
        for fam in self._families:
            if fam == "MOCK" and not include_mock:
                continue
            out.extend(d.name for d in self.family(fam))
        return out

    def get(self, spec: DeviceSpec | str, text: str | None = None) -> Device:
        if isinstance(spec, str):
            parsed = parse(spec)
            if parsed.virtual is not None:
                raise DeviceStringError(f"{spec!r} is a virtual device; expected a single device here")
            spec = parsed.items[0]
        fam = spec.family
        devices = self.family(fam)
        if fam == "CPU" and spec.index not in (None, 0):
            devices = []
        name = spec.name
        for d in devices:
            if d.name == name or (spec.index is None and d.name in (f"{fam}.0", fam)):
                return d
        avail = self.available(include_mock=True)
        where = f" in device string {text!r}" if text and text != name else ""
        raise DeviceError(f"device {name!r}{where} is not available; available devices: {avail or '[]'}")


_REGISTRY: DeviceRegistry | None = None
_REG_LOCK = threading.Lock()


def registry() -> DeviceRegistry:
    global _REGISTRY
    with _REG_LOCK:
        if _REGISTRY is None:
            _REGISTRY = DeviceRegistry()
        return _REGISTRY
