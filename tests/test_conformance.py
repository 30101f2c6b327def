"""The ONNX backend node suite on CPU: every case on the kept passing list must still pass.

The list (tests/data/conformance_pass_CPU.txt) is written by
``python tools/conformance.py --device CPU --update-pass-list``; it only ever grows.
"""
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import conformance  # noqa: E402

PASS_LIST = ROOT / "tests" / "data" / "conformance_pass_CPU.txt"


@pytest.fixture(scope="module")
def cases():
    return {c.name: c for c in conformance.collect_cases()}


def test_pass_list_meets_the_bar():
    names = PASS_LIST.read_text().split()
    assert len(names) >= 1450, f"only {len(names)} cases on the passing list; the bar is 1450"


def test_kept_passing_cases_still_pass(cases):
    names = PASS_LIST.read_text().split()
    missing = [n for n in names if n not in cases]
    assert not missing, f"cases on the pass list that onnx no longer ships: {missing[:10]}"
    broken = {}
    for name in names:
        status, detail = conformance.run_case(cases[name], "CPU")
        if status != "pass":
            broken[name] = f"{status}: {detail}"
    assert not broken, f"{len(broken)} kept case(s) broke:\n" + "\n".join(f"{k}: {v}" for k, v in broken.items())
