"""GEMM throughput of the GPU (OpenCL) plugin at convolution-like sizes, against numpy.

Each size is a (M, K, N) = (output channels, C*KH*KW, OH*OW) product of a ResNet-50 / VGG layer at
batch 1: A is the constant weight matrix, B the runtime im2col matrix, as in the plugin's Conv.
The GEMM is compiled through the plugin (a single-node MatMul graph); the GEMM kernel alone is timed
(the data is already on the device; a wide B is packed into column panels first, as Conv's im2col
writes it), best of --reps; numpy times A @ B on host arrays. Register-tile shapes of the CPU kernel
and the local-memory (GPU-shaped) kernel can be compared with --variants.

    python benchmarks/opencl_gemm.py                      # default kernel vs numpy
    python benchmarks/opencl_gemm.py --variants reg:8x16x2,reg:4x16x4,local
    python benchmarks/opencl_gemm.py --variants reg,clblast     # CLBlast via pyclblast, if installed

CLBlast is not a dependency: pyclblast is a source package that needs the CLBlast C library
(e.g. apt's libclblast-dev), so it does not install from PyPI alone; measured here on PoCL it is far
slower than the plugin's kernels (it is tuned for GPUs), so the plugin does not use it.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import hetero  # noqa: E402
from hetero.devices.opencl import f16_allclose  # noqa: E402

SIZES = [  # (name, M, K, N)
    ("resnet conv1 7x7/2", 64, 147, 12544),
    ("3x3 64ch @56", 64, 576, 3136),
    ("1x1 64->256 @56", 256, 64, 3136),
    ("3x3 128ch @28", 128, 1152, 784),
    ("1x1 256->1024 @14", 1024, 256, 196),
    ("3x3 256ch @14", 256, 2304, 196),
    ("3x3 512ch @7", 512, 4608, 49),
    ("vgg 3x3 256ch @56", 256, 2304, 3136),
]


def matmul_graph(A: np.ndarray, K: int, N: int):
    M = A.shape[0]
    g = helper.make_graph([helper.make_node("MatMul", ["A", "B"], ["C"], name="gemm")], "gemm",
                          [helper.make_tensor_value_info("B", TensorProto.FLOAT, [K, N])],
                          [helper.make_tensor_value_info("C", TensorProto.FLOAT, [M, N])],
                          initializer=[numpy_helper.from_array(A, "A")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    return hetero.read_model(m)


def kernel_seconds(exe, feeds, reps: int) -> tuple[float, float]:
    """(best wall seconds, best process CPU seconds) of the GEMM kernel alone (already on the device).

    The CPU seconds count every thread of this process (PoCL's workers included); on a machine shared
    with other jobs, CPU seconds / cores estimates the time the kernel takes with the cores to itself."""
    import pyopencl as cl

    exe.run(feeds)  # inputs (and the packed copy of B) now sit in the default context's buffers
    ctx = exe._default
    names = [exe.plan.launches[i].kernel for i in exe.plan.run_launches]
    gemm = [kgl for kgl, name in zip(ctx.kernels, names) if name.startswith("gemm")]
    wall = cpu = float("inf")
    for _ in range(reps):
        t, c = time.perf_counter(), time.process_time()
        for k, g, l in gemm:
            cl.enqueue_nd_range_kernel(ctx.queue, k, g, l)
        ctx.queue.finish()
        wall, cpu = min(wall, time.perf_counter() - t), min(cpu, time.process_time() - c)
    return wall, cpu


def numpy_seconds(A, B, reps: int) -> tuple[float, float]:
    wall = cpu = float("inf")
    for _ in range(reps):
        t, c = time.perf_counter(), time.process_time()
        A @ B
        wall, cpu = min(wall, time.perf_counter() - t), min(cpu, time.process_time() - c)
    return wall, cpu


def clblast_seconds(dev, A, B, reps: int) -> tuple[float, float]:
    """CLBlast's SGEMM (pyclblast) on the same device, for comparison (first call tunes/compiles)."""
    import pyclblast
    import pyopencl as cl
    import pyopencl.array as cla

    q = cl.CommandQueue(dev.context, dev.cl_device)
    M, K = A.shape
    N = B.shape[1]
    a, b, c = cla.to_device(q, A), cla.to_device(q, B), cla.zeros(q, (M, N), np.float32)
    pyclblast.gemm(q, M, N, K, a, b, c, a_ld=K, b_ld=N, c_ld=N)
    q.finish()
    out = c.get()
    assert np.abs(out - A @ B).max() <= 1e-3 * max(1.0, float(np.abs(out).max())), "CLBlast: wrong result"
    wall = cpu = float("inf")
    for _ in range(reps):
        t, cc = time.perf_counter(), time.process_time()
        pyclblast.gemm(q, M, N, K, a, b, c, a_ld=K, b_ld=N, c_ld=N)
        q.finish()
        wall, cpu = min(wall, time.perf_counter() - t), min(cpu, time.process_time() - cc)
    return wall, cpu


def apply_variant(v: str) -> str:
    from hetero.devices.opencl.ops import gemm as G

    if v == "clblast":
        return "CLBlast (pyclblast)"
    if v.startswith("reg"):
        os.environ["HETERO_OCL_GEMM"] = "reg"
        parts = v.split(":")
        if len(parts) > 1:
            G.RM, G.RN, G.NV = (int(x) for x in parts[1].split("x"))
        if len(parts) > 2:
            G.LX, G.LY = (int(x) for x in parts[2].split("x"))
        if len(parts) > 3:
            G.KB_HALF = int(parts[3])
        return f"reg {G.RM}x{G.RN * G.NV} wg{G.LX}x{G.LY}" + (f" kb{G.KB_HALF}" if len(parts) > 3 else "")
    os.environ["HETERO_OCL_GEMM"] = "local"
    return "local 64x64 (4x4/work-item)"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="GPU")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--variants", default="",
                    help="comma list: reg[:RMxRNxNV[:LXxLY[:KB_HALF]]] | local (default: the plugin's choice)")
    ap.add_argument("--sizes", default="", help="comma list of size indices (default: all)")
    ap.add_argument("--precision", default="f32", choices=["f32", "f16"],
                    help="INFERENCE_PRECISION_HINT (f16: half storage, and half arithmetic where the "
                         "device has it: FP16_ARITHMETIC)")
    ap.add_argument("--cpu-time", action="store_true",
                    help="rate from process CPU time x cores (for machines shared with other jobs)")
    args = ap.parse_args(argv)
    core = hetero.Core()
    if args.device not in core.available_devices and args.device != "GPU":
        print(f"{args.device} not available: {core.available_devices}")
        return 1
    dev = core._registry.get(args.device)
    print(f"device: {dev.get_property('FULL_DEVICE_NAME')} ({' '.join(dev.get_property('OPTIMIZATION_CAPABILITIES'))}), "
          f"precision {args.precision}, {os.cpu_count()} host cores; "
          f"{'process CPU time / cores' if args.cpu_time else 'wall time'}, best of {args.reps}")
    variants = [v for v in args.variants.split(",") if v] or [""]
    sizes = [SIZES[int(i)] for i in args.sizes.split(",")] if args.sizes else SIZES
    rng = np.random.default_rng(0)
    head = f"{'layer':22s} {'M':>5s} {'K':>5s} {'N':>6s} {'numpy':>8s}"
    labels = []
    for v in variants:
        labels.append(apply_variant(v) if v else "default")
    print(head + "".join(f" {lab:>18s}" for lab in labels) + "   (GFLOP/s)")
    totals = np.zeros(len(variants) + 1)
    for name, M, K, N in sizes:
        A = rng.standard_normal((M, K)).astype(np.float32)
        B = rng.standard_normal((K, N)).astype(np.float32)
        flops = 2.0 * M * N * K
        cores = os.cpu_count() or 1

        def rate(wall_cpu):
            wall, cpu = wall_cpu
            return flops / (cpu / cores if args.cpu_time else wall) / 1e9

        row = [rate(numpy_seconds(A, B, args.reps))]
        ref = A @ B
        for v in variants:
            if v == "clblast":
                row.append(rate(clblast_seconds(dev, A, B, args.reps)))
                continue
            if v:
                apply_variant(v)
            exe = dev.compile(matmul_graph(A, K, N), {"INFERENCE_PRECISION_HINT": args.precision})
            out = exe.run({"B": B})["C"]
            if args.precision == "f16":
                assert f16_allclose(out, ref), f"{name}: outside the f16 tolerance"
            else:
                err = float(np.abs(out - ref).max() / max(1.0, np.abs(ref).max()))
                assert err < 1e-4, f"{name}: wrong result (relative error {err})"
            row.append(rate(kernel_seconds(exe, {"B": B}, args.reps)))
        totals += np.log(row)
        print(f"{name:22s} {M:5d} {K:5d} {N:6d} {row[0]:8.1f}" + "".join(f" {g:18.1f}" for g in row[1:]), flush=True)
    geo = np.exp(totals / len(sizes))
    print(f"{'geometric mean':22s} {'':5s} {'':5s} {'':6s} {geo[0]:8.1f}" + "".join(f" {g:18.1f}" for g in geo[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
