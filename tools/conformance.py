#!/usr/bin/env python3
"""Run the ONNX backend node suite on a hetero device and write a pass/fail/unsupported table.

    python tools/conformance.py --device CPU                 # whole suite, writes the report
    python tools/conformance.py --device CPU --ops Add,Conv -v
    python tools/conformance.py --device GPU --claimed-only  # only cases whose nodes GPU's query claims

Statuses: pass; fail (wrong result or an error while running); unsupported (compile raised
UnsupportedOpError: no kernel). Tolerances are onnx's (rtol 1e-3, atol 1e-7) unless a case sets its
own, compared the way onnx's backend runner does (dtype and shape must match exactly).
"""
from __future__ import annotations

import argparse
import collections
import os
import re
import signal
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import hetero  # noqa: E402
from hetero.errors import UnsupportedOpError  # noqa: E402

PASS_LIST_DIR = ROOT / "tests" / "data"
REPORT_DIR = ROOT / "tools" / "reports"


def collect_cases():
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with np.errstate(all="ignore"):
            return collect_testcases(None)


def case_op(case) -> str:
    """The op a case tests: the test name's op when the first node is a helper (expanded cases)."""
    nodes = case.model.graph.node
    return nodes[0].op_type if len(nodes) == 1 else _op_from_name(case)


def _op_from_name(case) -> str:
    ops = {n.op_type for n in case.model.graph.node}
    name = case.name[len("test_"):].lower().replace("_", "")
    best = max(ops, key=lambda o: (name.startswith(o.lower()), len(o)) if name.startswith(o.lower()) else (False, 0))
    return best if name.startswith(best.lower()) else case.model.graph.node[0].op_type


def _normalize(x):
    from onnx import numpy_helper, TensorProto

    if isinstance(x, TensorProto):
        x = numpy_helper.to_array(x)
    if isinstance(x, np.ndarray) and x.dtype == object:
        x = np.array([v.decode() if isinstance(v, bytes) else v for v in x.ravel()], dtype=object).reshape(x.shape)
    if isinstance(x, list):
        return [_normalize(v) for v in x]
    return x


def assert_similar(ref, out, rtol, atol, where="output"):
    """onnx's backend-runner comparison."""
    if isinstance(ref, (list, tuple)):
        if not isinstance(out, (list, tuple)):
            raise AssertionError(f"{where}: expected a sequence, got {type(out).__name__}")
        if len(out) != len(ref):
            raise AssertionError(f"{where}: expected {len(ref)} elements, got {len(out)}")
        for j, (r, o) in enumerate(zip(ref, out)):
            assert_similar(r, o, rtol, atol, f"{where}[{j}]")
        return
    if ref is None:
        if out is not None:
            raise AssertionError(f"{where}: expected None (empty optional), got {type(out).__name__}")
        return
    if not isinstance(out, np.ndarray):
        if isinstance(out, (np.generic, int, float, bool)):
            out = np.asarray(out)
        else:
            raise AssertionError(f"{where}: expected an array, got {type(out).__name__}")
    if tuple(out.shape) != tuple(ref.shape):
        raise AssertionError(f"{where}: shape {list(out.shape)} != expected {list(ref.shape)}")
    if ref.dtype == object:
        np.testing.assert_array_equal(out, ref)
        return
    if out.dtype != ref.dtype:
        raise AssertionError(f"{where}: dtype {out.dtype} != expected {ref.dtype}")
    o, r, rt = out, ref, rtol
    if o.dtype.name == "bfloat16":
        rt = max(rtol, 2 ** -6)
        o, r = o.astype(np.float32), r.astype(np.float32)
    elif o.dtype.kind == "V" or o.dtype.name.startswith(("float8", "float4", "int4", "uint4", "int2", "uint2")):
        o, r = o.astype(np.float32), r.astype(np.float32)
    np.testing.assert_allclose(o, r, rtol=rt, atol=atol, err_msg=where)


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout()


def run_case(case, device: str = "CPU", timeout: int = 30, claimed_only: bool = False):
    """Run one case: returns (status, detail) with status in pass/fail/unsupported/skipped."""
    use_alarm = hasattr(signal, "SIGALRM") and timeout and \
        __import__("threading").current_thread() is __import__("threading").main_thread()
    if use_alarm:
        old = signal.signal(signal.SIGALRM, _alarm)
        signal.alarm(timeout)
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            if claimed_only:
                core = hetero.Core()
                graph = hetero.read_model(case.model)
                claimed = core.query_model(graph, device)
                if len(claimed) != len(core_prepared_nodes(graph)):
                    return "skipped", "not every node claimed"
            try:
                compiled = hetero.compile_model(case.model, device)
            except UnsupportedOpError as e:
                return "unsupported", str(e)[:300]
            in_names = [i.name for i in case.model.graph.input]
            init_names = {t.name for t in case.model.graph.initializer}
            for inputs, ref_outputs in case.data_sets:
                feeds = {}
                for name, val in zip(in_names, inputs):
                    if name in init_names:
                        continue
                    feeds[name] = _normalize(val)
                res = compiled.create_infer_request().infer(feeds)
                outs = [res[i] for i in range(len(res))]
                refs = [_normalize(r) for r in ref_outputs]
                if len(outs) != len(refs):
                    return "fail", f"{len(outs)} outputs, expected {len(refs)}"
                for i, (r, o) in enumerate(zip(refs, outs)):
                    assert_similar(r, o, case.rtol, case.atol, f"output {i}")
        return "pass", ""
    except _Timeout:
        return "fail", f"timeout after {timeout}s"
    except AssertionError as e:
        return "fail", "mismatch: " + " ".join(str(e).split())[:400]
    except Exception as e:
        return "fail", f"{type(e).__name__}: " + " ".join(str(e).split())[:400]
    finally:
        if use_alarm:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, old)


def core_prepared_nodes(graph):
    from hetero.runtime.core import prepare_graph

    return prepare_graph(graph).nodes


def run_suite(device="CPU", ops=None, pattern=None, verbose=False, claimed_only=False, timeout=30):
    cases = collect_cases()
    results = {}
    t0 = time.perf_counter()
    for case in cases:
        op = case_op(case)
        if ops and op not in ops and not any(o in {n.op_type for n in case.model.graph.node} for o in ops):
            continue
        if pattern and not re.search(pattern, case.name):
            continue
        status, detail = run_case(case, device, timeout=timeout, claimed_only=claimed_only)
        results[case.name] = (op, status, detail)
        if verbose and status not in ("pass", "skipped"):
            print(f"{status.upper():12s} {case.name}: {detail}", flush=True)
    return results, time.perf_counter() - t0


def write_report(results, device, seconds, path: Path) -> str:
    per_op = collections.defaultdict(collections.Counter)
    for op, status, _ in results.values():
        per_op[op][status] += 1
    total = collections.Counter(s for _, s, _ in results.values())
    lines = [f"# ONNX backend node suite on {device}", "",
             f"hetero {hetero.__version__}, onnx {__import__('onnx').__version__}; {len(results)} cases in "
             f"{seconds:.0f} s: **{total['pass']} pass**, {total['fail']} fail, {total['unsupported']} unsupported"
             + (f", {total['skipped']} skipped (not claimed)" if total['skipped'] else ""), "",
             "| op | pass | fail | unsupported |", "|---|---:|---:|---:|"]
    for op in sorted(per_op):
        c = per_op[op]
        lines.append(f"| {op} | {c['pass']} | {c['fail']} | {c['unsupported']} |")
    lines += ["", "## Failing cases", ""]
    for name, (op, status, detail) in sorted(results.items()):
        if status == "fail":
            lines.append(f"- `{name}` ({op}): {detail}")
    text = "\n".join(lines) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text


def pass_list_path(device: str) -> Path:
    return PASS_LIST_DIR / f"conformance_pass_{device.replace(':', '_').replace(',', '_')}.txt"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="CPU")
    ap.add_argument("--ops", default="", help="comma-separated op types to run")
    ap.add_argument("--filter", default="", help="regex on case names")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every failing case")
    ap.add_argument("--claimed-only", action="store_true", help="only cases whose nodes the device claims")
    ap.add_argument("--out", default="", help="report path (default tools/reports/conformance_<device>.md)")
    ap.add_argument("--update-pass-list", action="store_true",
                    help=f"write the passing case names to {PASS_LIST_DIR}/conformance_pass_<device>.txt")
    ap.add_argument("--timeout", type=int, default=30, help="seconds per case")
    args = ap.parse_args(argv)
    ops = {o.strip() for o in args.ops.split(",") if o.strip()}
    results, secs = run_suite(args.device, ops, args.filter or None, args.verbose, args.claimed_only, args.timeout)
    total = collections.Counter(s for _, s, _ in results.values())
    if not ops and not args.filter:
        out = Path(args.out) if args.out else REPORT_DIR / f"conformance_{args.device}.md"
        write_report(results, args.device, secs, out)
        print(f"report: {out}")
    if args.update_pass_list:
        p = pass_list_path(args.device)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("\n".join(sorted(n for n, (_, s, _) in results.items() if s == "pass")) + "\n")
        print(f"pass list: {p}")
    print(f"{args.device}: {total['pass']} pass, {total['fail']} fail, {total['unsupported']} unsupported"
          + (f", {total['skipped']} skipped" if total['skipped'] else "") + f" of {len(results)} ({secs:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
