"""The ONNX backend node suite on GPU, restricted to the cases whose every node the GPU plugin claims.

Claiming is a promise: every claimed case must pass (tools/conformance.py --device GPU --claimed-only).
The count guards against claims silently shrinking.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

import hetero

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import conformance  # noqa: E402

MIN_CLAIMED_PASSING = 640


@pytest.mark.slow
@pytest.mark.skipif(not any(d.startswith("GPU") for d in hetero.Core().available_devices),
                    reason="no OpenCL platform/device (pyopencl found no GPU.N)")
def test_every_claimed_case_passes_on_gpu():
    results, _ = conformance.run_suite("GPU", claimed_only=True, timeout=120)
    failed = {k: d for k, (_, s, d) in results.items() if s not in ("pass", "skipped")}
    assert not failed, f"{len(failed)} claimed case(s) fail on GPU:\n" + "\n".join(f"{k}: {v}" for k, v in failed.items())
    passed = sum(1 for _, s, _ in results.values() if s == "pass")
    assert passed >= MIN_CLAIMED_PASSING, f"only {passed} claimed cases (expected >= {MIN_CLAIMED_PASSING})"
