"""Compile time of the GPU (OpenCL) plugin, cold vs from CACHE_DIR.

Each measurement runs in a fresh process (no in-process program cache) with PoCL's own kernel cache
disabled (POCL_KERNEL_CACHE=0), so "cold" really compiles every kernel with LLVM, and "cached" loads
only what hetero stored in CACHE_DIR (program binaries that include the work-group functions PoCL
built during the compile's warm-up run).

    python benchmarks/opencl_compile.py                       # squeezenet, resnet50, inception_v1
    python benchmarks/opencl_compile.py --models resnet50 --precision f16
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, os, sys, time
sys.path.insert(0, {root!r})
import onnx, hetero
d = os.path.join(os.path.dirname(onnx.__file__), "backend/test/data/light")
core = hetero.Core()
t = time.perf_counter()
cm = core.compile_model(f"{{d}}/light_{{sys.argv[1]}}.onnx", "GPU", {{"CACHE_DIR": sys.argv[2],
                        "INFERENCE_PRECISION_HINT": sys.argv[3]}})
total = time.perf_counter() - t
print(json.dumps({{"total_s": total, "device_s": cm._runner.compile_time,
                  "cached": cm.get_property("LOADED_FROM_CACHE"), "programs": cm._runner.program_count}}))
"""


def measure(model: str, cache: str, precision: str) -> dict:
    env = dict(os.environ, POCL_KERNEL_CACHE="0")
    r = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT)), model, cache, precision],
                       capture_output=True, text=True, env=env, timeout=1800)
    if r.returncode:
        raise SystemExit(r.stderr[-2000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="squeezenet,resnet50,inception_v1")
    ap.add_argument("--precision", default="f32", choices=["f32", "f16"])
    args = ap.parse_args(argv)
    print(f"{'model':14s} {'programs':>8s} {'cold s':>8s} {'cached s':>9s} {'ratio':>6s}  (plugin compile; "
          f"whole compile_model in parentheses)")
    for model in args.models.split(","):
        with tempfile.TemporaryDirectory() as cache:
            cold = measure(model, cache, args.precision)
            warm = measure(model, cache, args.precision)
        assert not cold["cached"] and warm["cached"], (cold, warm)
        print(f"{model:14s} {cold['programs']:8d} {cold['device_s']:8.2f} {warm['device_s']:9.2f} "
              f"{cold['device_s'] / warm['device_s']:5.1f}x  ({cold['total_s']:.2f} s -> {warm['total_s']:.2f} s)",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
