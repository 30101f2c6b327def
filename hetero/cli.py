"""The ``hetero`` command: devices, demo (and benchmark, query, dot).

A bad argument, model or device prints one clear line on stderr and exits non-zero; ``--verbose``
shows the traceback.
"""
from __future__ import annotations

import argparse
import sys
import time
from importlib import resources
from pathlib import Path

import numpy as np

from .errors import HeteroError


def demo_model_path() -> Path:
    return Path(str(resources.files("hetero") / "data" / "demo_cnn.onnx"))


# ---- devices ------------------------------------------------------------------------------------

def cmd_devices(args) -> int:
    import hetero

    core = hetero.Core()
    rows = []
    for name in core.available_devices:
        def prop(key, default="-"):
            try:
                v = core.get_property(name, key)
                return ", ".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)
            except HeteroError:
                return default
        rows.append((name, prop("DEVICE_TYPE"), prop("FULL_DEVICE_NAME"), prop("OPTIMIZATION_CAPABILITIES")))
    header = ("device", "type", "full name", "capabilities")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(4)]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths))
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    return 0


# ---- demo ---------------------------------------------------------------------------------------

def cmd_demo(args) -> int:
    """Run the bundled model on every device mode that can run here; check the results agree."""
    import hetero

    core = hetero.Core()
    path = demo_model_path()
    model = core.read_model(path)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 3, 32, 32)).astype(np.float32)
    has_gpu = any(d.startswith("GPU") for d in core.available_devices)
    modes = ["CPU"]
    if has_gpu:
        modes += ["GPU", "HETERO:GPU,CPU", "MULTI:GPU,CPU"]
    else:
        print("no OpenCL GPU found: GPU, HETERO and MULTI modes run with CPU only "
              "(pip install pocl-binary-distribution for a CPU OpenCL device)")
        modes += ["HETERO:CPU", "MULTI:CPU"]
    modes.append("AUTO")
    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"model: {path.name} ({len(model.nodes)} nodes), input {list(x.shape)}")
    reference = None
    ok = True
    for mode in modes:
        config = {}
        if mode.startswith("HETERO"):
            config = {"HETERO_DUMP_GRAPH_DOT": True, "HETERO_DUMP_DIR": str(out_dir)}
        try:
            t0 = time.perf_counter()
            compiled = core.compile_model(model, mode, config)
            t_compile = (time.perf_counter() - t0) * 1e3
            req = compiled.create_infer_request()
            res = req.infer({"input": x})
            t0 = time.perf_counter()
            for _ in range(5):
                res = req.infer({"input": x})
            lat = (time.perf_counter() - t0) / 5 * 1e3
        except HeteroError as e:
            print(f"  {mode:18s} FAILED: {e}")
            ok = False
            continue
        probs, top = res["probs"], res["top_indices"]
        if reference is None:
            reference = probs
        agree = np.allclose(probs, reference, rtol=1e-3, atol=1e-5)
        ok &= agree
        devs = ",".join(compiled.get_property("EXECUTION_DEVICES"))
        print(f"  {mode:18s} compile {t_compile:7.1f} ms  latency {lat:6.2f} ms  top-3 {top.ravel().tolist()}  "
              f"on [{devs}]  {'agrees' if agree else 'DISAGREES'}")
    dots = sorted(p.name for p in out_dir.glob("hetero_*.dot"))
    if dots:
        print(f"dot files in {out_dir}: {', '.join(dots)}")
    print("all results agree" if ok else "results DISAGREE")
    return 0 if ok else 1


# ---- entry point --------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hetero", description="Run ONNX models across CPU and OpenCL GPU devices.")
    p.add_argument("--verbose", action="store_true", help="show tracebacks on errors")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("devices", help="list devices and their key properties")
    d.set_defaults(fn=cmd_devices)
    dm = sub.add_parser("demo", help="run the bundled model on CPU, GPU, HETERO, MULTI and AUTO")
    dm.add_argument("-o", "--output", default="hetero_demo", help="folder for the dot files")
    dm.set_defaults(fn=cmd_demo)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except (HeteroError, OSError, ValueError) as e:
        if args.verbose:
            raise
        print(f"hetero {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
