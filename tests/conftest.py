"""Shared test fixtures (keep this file small)."""
from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _isolate_device_settings():
    """Device settings are process-wide (every Core shares one registry of device instances), so a
    test that sets a property, or breaks a MOCK device, must not leak that into the next test: each
    device's settings are put back afterwards and MOCK devices are reset (counters and failures too)."""
    from hetero.devices.registry import registry

    reg = registry()
    before = {id(d): dict(d._config) for devices in list(reg._devices.values()) for d in devices}
    yield
    for devices in list(reg._devices.values()):
        for d in devices:
            if d.family == "MOCK":
                d.reset()
            elif id(d) in before:
                d._config = before[id(d)]


@pytest.fixture
def pool_task_counts(monkeypatch):
    """The CPU kernel pool on two threads, its ``run`` and ``run_native`` spied on: returns the list
    of task (unit) counts each call ran on the pool (so a test can assert a kernel really split its
    work)."""
    from hetero.devices.cpu.kernels import parallel

    monkeypatch.setattr(parallel, "THREADS", 2)
    calls: list[int] = []
    real = parallel.run

    def spy(tasks):
        tasks = list(tasks)
        calls.append(len(tasks))
        return real(tasks)
    monkeypatch.setattr(parallel, "run", spy)
    real_native = parallel.run_native

    def spy_native(fn_at, base, stride, n, *rest):
        ran = real_native(fn_at, base, stride, n, *rest)
        if ran:
            calls.append(n)
        return ran
    monkeypatch.setattr(parallel, "run_native", spy_native)
    return calls
