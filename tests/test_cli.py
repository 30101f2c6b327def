"""The ``hetero`` command, run in-process through ``hetero.cli.main``: every subcommand on a small
model, its output parsed and checked; the --report JSON against the schema documented in docs/cli.md;
errors as one line on stderr."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx.reference import ReferenceEvaluator

import hetero
from hetero import cli, trace

from fixture_models import chain_model

DOCS = Path(__file__).resolve().parents[1] / "docs"
HAS_GPU = any(d.startswith("GPU") for d in hetero.Core().available_devices)
needs_gpu = pytest.mark.skipif(not HAS_GPU, reason="no OpenCL device (pip install pocl-binary-distribution)")


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("cli") / "chain.onnx"
    onnx.save(chain_model(), path)
    return str(path)


def run(capsys, *argv):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def table(out: str, first_col: str) -> list[dict[str, str]]:
    """Rows of the text table whose header starts with ``first_col``, cut at the header's column
    positions (cells are padded to their column's width), up to the first blank line."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(first_col + " "))
    cols = [(m.start(), m.group()) for m in re.finditer(r"\S+(?: \S+)*", lines[start])]
    rows = []
    for line in lines[start + 2:]:
        if not line.strip():
            break
        bounds = [c[0] for c in cols] + [None]
        rows.append({name: line[bounds[i]:bounds[i + 1]].strip() for i, (_, name) in enumerate(cols)})
    return rows


def field(out: str, label: str) -> float:
    m = re.search(rf"^\s*{re.escape(label)}:\s+([-\d.naninf]+)", out, re.M)
    assert m, f"no {label!r} in output:\n{out}"
    return float(m.group(1))


# ---- devices --------------------------------------------------------------------------------------

def test_devices_table(capsys):
    rc, out, _ = run(capsys, "devices")
    assert rc == 0
    rows = {r["device"]: r for r in table(out, "device")}
    assert list(rows) == hetero.Core().available_devices
    assert rows["CPU"]["type"] == "cpu" and "FP32" in rows["CPU"]["precisions"]
    lo, hi = map(int, rows["CPU"]["streams"].split("-"))
    assert 1 <= lo <= hi
    if HAS_GPU:
        assert rows["GPU.0"]["type"] in ("discrete", "integrated", "cpu-opencl", "other")
        assert int(rows["GPU.0"]["compute units"]) >= 1 and rows["GPU.0"]["memory"].endswith("B")


def test_devices_mock_and_all(capsys):
    rc, out, _ = run(capsys, "devices", "--mock", "--all")
    assert rc == 0
    names = [r["device"] for r in table(out, "device")]
    assert {"MOCK.0", "MOCK.3", "CPU"} <= set(names)
    assert re.search(r"^MOCK\.0\n(    \S+.*\n)+", out, re.M) and "FULL_DEVICE_NAME" in out


# ---- benchmark ------------------------------------------------------------------------------------

def schema_from_docs() -> dict[str, str]:
    """The --report schema table of docs/cli.md: {dotted key: type}."""
    text = (DOCS / "cli.md").read_text()
    section = text.split("<!-- report-schema:begin -->")[1].split("<!-- report-schema:end -->")[0]
    rows = re.findall(r"^\|\s*`([^`]+)`\s*\|\s*([^|]+?)\s*\|", section, re.M)
    assert len(rows) > 20
    return dict(rows)


TYPES = {"string": str, "integer": int, "number": (int, float), "boolean": bool, "object": dict,
         "array": list, "null": type(None)}


def _types(typ: str) -> tuple:
    return tuple(t for name in typ.split(" or ") for t in np.atleast_1d(TYPES[name.strip()]))


def _get(obj, dotted: str):
    for p in dotted.split("."):
        assert isinstance(obj, dict) and p in obj, f"report lacks {dotted!r}"
        obj = obj[p]
    return obj


def check_schema(report: dict, schema: dict[str, str]) -> None:
    """Every documented key is present with its type (items of arrays of objects, "a[].b", in every
    item); no undocumented top-level key."""
    for key, typ in schema.items():
        if "[]." in key:
            arr, sub = key.split("[].")
            items = _get(report, arr) or []
        else:
            items, sub = [report], key
        for item in items:
            v = _get(item, sub)
            ok = isinstance(v, _types(typ)) and not (isinstance(v, bool) and "boolean" not in typ)
            assert ok, f"{key}: expected {typ}, got {type(v).__name__} {v!r}"
    assert set(report) == {k.split(".")[0].split("[]")[0] for k in schema}


def test_benchmark_cpu_report_matches_documented_schema(capsys, model, tmp_path):
    report = tmp_path / "r.json"
    rc, out, err = run(capsys, "benchmark", "-m", model, "-d", "CPU", "-shape", "x[4,8]", "-niter", 12,
                       "-nireq", 3, "-hint", "latency", "--report", report)
    assert rc == 0, err
    assert field(out, "Count") == 12
    lat = {k: field(out, k) for k in ("Median", "Average", "Min", "Max", "P90", "P99")}
    assert lat["Min"] <= lat["Median"] <= lat["Max"] and lat["Min"] <= lat["Average"] <= lat["Max"]
    assert lat["Median"] <= lat["P90"] <= lat["P99"] <= lat["Max"]
    assert field(out, "Throughput") > 0 and field(out, "Compile model") >= 0
    assert "3 infer request(s)" in out and "LATENCY" in out
    assert "\r" not in out  # no progress bar when stdout is not a terminal
    r = json.loads(report.read_text())
    check_schema(r, schema_from_docs())
    assert r["schema"] == cli.REPORT_SCHEMA and r["count"] == 12 and r["nireq"] == 3
    assert r["model"]["inputs"] == [{"name": "x", "dtype": "float32", "shape": [4, 8]}]
    assert r["limit"] == {"niter": 12, "time_s": None}
    assert r["served_by"] == {"CPU": 12} and r["execution_devices"] == ["CPU"]
    assert r["latency_ms"]["min"] == pytest.approx(lat["Min"], abs=0.006)
    assert r["perf_counters"] is None and r["trace_file"] is None and r["config"]["PERFORMANCE_HINT"] == "LATENCY"


def test_benchmark_time_limit_and_progress_bar_on_a_terminal(capsys, model, monkeypatch):
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    rc, out, err = run(capsys, "benchmark", "-m", model, "-d", "CPU", "-shape", "x[1,8]", "-t", 1.3)
    assert rc == 0, err
    assert field(out, "Count") >= 1 and field(out, "Duration") >= 1300
    assert re.search(r"\d+/\d+ s", err)  # tqdm draws on stderr


@needs_gpu
def test_benchmark_hetero_counters_dumps_trace(capsys, model, tmp_path):
    report, tr = tmp_path / "r.json", tmp_path / "trace.json"
    rc, out, err = run(capsys, "benchmark", "-m", model, "-d", "HETERO:GPU,CPU", "-shape", "x[2,8]", "-niter", 6,
                       "-pc", "--dump-dot", tmp_path / "dots", "--dot-format", "dot", "--trace", tr,
                       "--report", report)
    assert rc == 0, err
    assert "executes on GPU.0, CPU" in out
    rows = table(out, "layer")
    by = {r["layer"]: r for r in rows}
    assert by["subgraph1: topk"]["exec type"].startswith("CPU:") and by["subgraph0: mm"]["exec type"].startswith("GPU.0:")
    reorders = [r for r in rows if r["type"] == "Reorder"]
    assert any("Reorder_p_GPU.0_to_CPU" in r["layer"] and int(r["bytes"]) == 64 for r in reorders)
    times = [float(r["time ms"]) for r in rows]
    assert times == sorted(times, reverse=True)  # slowest first
    assert re.search(r"Total: [\d.]+ ms over \d+ layers \((\d+) Reorders\)", out).group(1) == str(len(reorders))
    r = json.loads(report.read_text())
    check_schema(r, schema_from_docs())
    assert {c["node_name"] for c in r["perf_counters"]} >= {"subgraph1: topk", "subgraph0: mm"}
    assert sorted(Path(p).name for p in r["dot_files"]) == [
        "hetero_affinity_chain.dot", "hetero_plan_chain.json", "hetero_subgraphs_chain.dot"]
    t = trace.load(tr)
    reqs = [e for e in t["events"] if e.get("cat") == "request"]
    assert len(reqs) == 7 and {e["process"] for e in reqs} == {"HETERO:GPU.0,CPU"}  # first inference + 6


def test_benchmark_dump_dot_single_device(capsys, model, tmp_path):
    rc, out, err = run(capsys, "benchmark", "-m", model, "-d", "CPU", "-shape", "x[1,8]", "-niter", 1,
                       "--dump-dot", tmp_path, "--dot-format", "dot")
    assert rc == 0, err
    text = (tmp_path / "hetero_affinity_chain.dot").read_text()
    assert text.startswith("digraph") and "topk" in text and "GPU" not in text


# ---- query ---------------------------------------------------------------------------------------

@needs_gpu
def test_query_hetero_table_and_summary(capsys, model):
    rc, out, err = run(capsys, "query", "-m", model, "-d", "HETERO:GPU,CPU", "-shape", "x[2,8]")
    assert rc == 0, err
    rows = {r["node"]: r for r in table(out, "node")}
    assert {n: r["device"] for n, r in rows.items()} == {"mm": "GPU.0", "add": "GPU.0", "relu": "GPU.0",
                                                        "sm": "GPU.0", "topk": "CPU"}
    assert rows["topk"]["reason"] == "fallback to CPU: GPU.0 cannot run it (TopK: no OpenCL kernel)"
    assert rows["mm"]["reason"] == "priority 1 (GPU.0)"
    assert "subgraphs: 2  subgraph0=GPU.0(4)  subgraph1=CPU(1)" in out
    # p float32[2,8] crosses GPU.0 -> CPU; x float32[2,8] goes up to the GPU
    assert "boundaries: 1 between subgraphs, 64 bytes; 1 graph input/output transfers, 64 bytes" in out


def test_query_rules_policy_and_manual_affinity(capsys, model):
    rc, out, err = run(capsys, "query", "-m", model, "-d", "HETERO:MOCK.0,CPU", "-shape", "x[2,8]",
                       "--rules", "Softmax=CPU", "--affinity", "relu=CPU")
    assert rc == 0, err
    rows = {r["node"]: (r["device"], r["reason"]) for r in table(out, "node")}
    assert rows == {"mm": ("MOCK.0", "priority 1 (MOCK.0)"), "add": ("MOCK.0", "priority 1 (MOCK.0)"),
                    "relu": ("CPU", "manual"), "sm": ("CPU", "rule 1 (Softmax=CPU)"),
                    "topk": ("MOCK.0", "priority 1 (MOCK.0)")}
    assert "subgraphs: 3  subgraph0=MOCK.0(2)  subgraph1=CPU(2)  subgraph2=MOCK.0(1)" in out


@needs_gpu
def test_query_single_device_shows_unsupported(capsys, model):
    rc, out, err = run(capsys, "query", "-m", model, "-d", "GPU", "-shape", "x[2,8]")
    assert rc == 1
    rows = {r["node"]: r for r in table(out, "node")}
    assert rows["topk"]["device"] == "UNSUPPORTED" and "TopK" in rows["topk"]["reason"]
    assert err.strip() == "1 node(s) no listed device can run; compile would fail"


@needs_gpu
def test_query_multi_lists_support_per_device(capsys, model):
    rc, out, _ = run(capsys, "query", "-m", model, "-d", "MULTI:GPU,CPU", "-shape", "x[2,8]")
    assert rc == 0
    rows = {r["node"]: r for r in table(out, "node")}
    assert rows["topk"]["GPU"].startswith("no:") and rows["topk"]["CPU"] == "yes" and rows["mm"]["GPU"] == "yes"
    assert "devices that run the whole model: CPU" in out


# ---- dot -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("device", ["HETERO:MOCK.0,CPU", pytest.param("HETERO:GPU,CPU", marks=needs_gpu)])
def test_dot_writes_and_renders(capsys, model, tmp_path, device):
    rc, out, err = run(capsys, "dot", "-m", model, "-d", device, "-shape", "x[2,8]", "-o", tmp_path,
                       "--rules", "TopK=CPU")
    assert rc == 0, err
    files = [Path(line) for line in out.split()]
    names = sorted(p.name for p in files)
    svg = ["hetero_affinity_chain.svg", "hetero_subgraphs_chain.svg"] if shutil.which("dot") else []
    assert names == sorted(["hetero_affinity_chain.dot", "hetero_subgraphs_chain.dot", "hetero_plan_chain.json"]
                           + svg)
    assert all(p.exists() for p in files)
    sub = (tmp_path / "hetero_subgraphs_chain.dot").read_text()
    assert sub.startswith("digraph") and "cluster" in sub and "Reorder" in sub
    plan = json.loads((tmp_path / "hetero_plan_chain.json").read_text())
    assert [s["nodes"] for s in plan["subgraphs"]] == [["mm", "add", "relu", "sm"], ["topk"]]
    assert "2 subgraph(s)" in err
    if svg:
        assert (tmp_path / svg[1]).read_text().lstrip().startswith("<?xml")


# ---- errors ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["benchmark", "-m", "missing.onnx", "-d", "CPU"], "model file 'missing.onnx' does not exist"),
    (["benchmark", "-m", "{model}", "-d", "FOO", "-shape", "x[1,8]"], "device 'FOO' is not available"),
    (["benchmark", "-m", "{model}", "-d", "CPU"], "symbolic dimensions: give concrete ones with -shape x[1,8]"),
    (["benchmark", "-m", "{model}", "-d", "CPU", "-shape", "y[1,8]"], "no input 'y'"),
    (["benchmark", "-m", "{model}", "-d", "CPU", "-shape", "x[1,8,2]"], "rank 2, got 3 dimensions"),
    (["benchmark", "-m", "{model}", "-d", "CPU", "-shape", "x[1,a]"], "must be integers"),
    (["benchmark", "-m", "{model}", "-d", "CPU", "-shape", "x[1,8]", "-niter", "0"], "-niter must be >= 1"),
    (["benchmark", "-m", "{model}", "-d", "CPU", "-niter", "2", "-t", "1"], "not allowed with argument"),
    (["benchmark", "-m", "{model}", "-d", "CPU", "-hint", "fast"], "invalid choice: 'fast'"),
    (["benchmark", "-m", "{model}", "-d", "CPU", "-shape", "x[1,8]", "-p", "NUM_STREAMS=0"], "NUM_STREAMS"),
    (["benchmark", "-m", "{model}", "-d", "CPU", "-p", "oops"], "-p expects KEY=VALUE"),
    (["benchmark", "-d", "CPU"], "the following arguments are required: -m/--model"),
    (["query", "-m", "{model}", "-d", "HETERO:CPU,BOGUS.1"], "BOGUS"),
    (["dot", "-m", "{model}", "-d", "MULTI:CPU", "-o", "x"], "this command shows a HETERO split"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_errors_are_one_line_on_stderr(capsys, model, argv, message):
    rc, out, err = run(capsys, *[a.replace("{model}", model) for a in argv])
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hetero") and "error:" in lines[0], err
    assert message in lines[0] and "Traceback" not in err


def test_verbose_shows_the_traceback(model):
    with pytest.raises(hetero.DeviceError, match="FOO"):
        cli.main(["--verbose", "benchmark", "-m", model, "-d", "FOO", "-shape", "x[1,8]"])


def test_help_and_version(capsys):
    rc, out, _ = run(capsys, "--help")
    assert rc == 0 and all(c in out for c in ("devices", "benchmark", "query", "dot", "demo"))
    rc, out, _ = run(capsys, "--version")
    assert rc == 0 and out.strip() == f"hetero {hetero.__version__}"


# ---- shapes and inputs ---------------------------------------------------------------------------

def test_parse_shapes():
    assert cli.parse_shapes("x[1,3,224,224]") == {"x": (1, 3, 224, 224)}
    assert cli.parse_shapes("a[1,8], b[2]") == {"a": (1, 8), "b": (2,)}
    assert cli.parse_shapes("[4]") == {"": (4,)}
    assert cli.parse_shapes("s[]") == {"s": ()}
    for bad in ("x[1,2", "x", "x[1,-2]", ""):
        with pytest.raises(cli.UsageError):
            cli.parse_shapes(bad)


def test_shaped_model_and_random_inputs_run_like_the_reference(model):
    g = cli.read_model(model, "[3,8]")
    assert g.inputs[0].shape == (3, 8) and g.info("p").shape == (3, 8)
    feeds = cli.random_inputs(g)
    assert feeds["x"].shape == (3, 8) and feeds["x"].dtype == np.float32
    got = hetero.Core().compile_model(g, "CPU")(feeds)
    want = ReferenceEvaluator(chain_model()).run(None, feeds)
    np.testing.assert_allclose(got["values"], want[0], rtol=1e-5)
    np.testing.assert_array_equal(got["indices"], want[1])


# ---- demo and properties ---------------------------------------------------------------------------

def test_demo_runs_every_mode_and_agrees(capsys, tmp_path):
    rc, out, err = run(capsys, "demo", "-o", tmp_path, "--requests", 2, "--trace", tmp_path / "demo.json")
    assert rc == 0, out + err
    rows = {r["mode"]: r for r in table(out, "mode")}
    expected = ["CPU", "GPU", "HETERO:GPU,CPU", "MULTI:GPU,CPU", "AUTO"] if HAS_GPU else \
        ["CPU", "HETERO:CPU", "MULTI:CPU", "AUTO"]
    assert list(rows) == expected
    assert all(r["result"].startswith("agrees") for r in rows.values()), rows
    assert len({r["top-3"] for r in rows.values()}) == 1  # every mode finds the same top-3 classes
    for r in rows.values():  # the burst of async requests was served, all of it
        assert sum(int(s.rpartition(":")[2]) for s in r["served (async)"].split()) == 2
    if HAS_GPU:
        # GPU alone and MULTI (every device runs the whole model) cannot run the TopK: they run the
        # rest and say so; HETERO runs all of it, TopK on the CPU
        for m in ("GPU", "MULTI:GPU,CPU"):
            assert rows[m]["result"] == "agrees (without topk: TopK: no OpenCL kernel)"
        assert rows["HETERO:GPU,CPU"]["result"] == "agrees" and rows["HETERO:GPU,CPU"]["executes on"] == "GPU.0,CPU"
        assert rows["MULTI:GPU,CPU"]["executes on"] == "GPU.0,CPU"
        assert re.search(r"subgraph1\s+CPU\s+1 node\(s\): topk", out)
    assert out.rstrip().endswith(f"{len(expected)} mode(s) ran; all results agree")
    assert (tmp_path / "hetero_subgraphs_demo_cnn.dot").exists()
    assert trace.load(tmp_path / "demo.json")["events"]


def test_properties_command(capsys):
    rc, out, _ = run(capsys, "properties")
    assert rc == 0
    rows = {r["key"]: r for r in table(out, "key")}
    from hetero import properties as P

    assert set(rows) == set(P.SPECS)
    assert rows["PERF_COUNT"]["type"] == "boolean" and rows["PERF_COUNT"]["default"] == "false"
    assert "CPU" in rows["NUM_STREAMS"]["accepted by"] and "HETERO" in rows["AFFINITY_RULES"]["accepted by"]
    assert rows["HETERO_TRACE_FILE"]["accepted by"] == "all"
    assert rows["FULL_DEVICE_NAME"]["accepted by"] == "read-only"


def test_perf_counters_average_and_keep_devices_apart():
    import datetime
    from types import SimpleNamespace

    from hetero.runtime.request import ProfilingInfo

    def req(device, ms_conv, ms_relu):
        infos = [ProfilingInfo("conv", "Conv", "k", datetime.timedelta(milliseconds=ms_conv), datetime.timedelta(0),
                               "EXECUTED"),
                 ProfilingInfo("relu", "Relu", "k", datetime.timedelta(milliseconds=ms_relu), datetime.timedelta(0),
                               "EXECUTED")]
        return SimpleNamespace(served_by=device, get_profiling_info=lambda: infos)

    same = cli._perf_counters([req("CPU", 2, 1), req("CPU", 4, 3)])
    assert [(r["node_name"], r["real_time_ms"]) for r in same] == [("conv", 3.0), ("relu", 2.0)]
    mixed = cli._perf_counters([req("GPU.0", 1, 0.5), req("CPU", 4, 3), req("CPU", 6, 1)])
    assert [(r["node_name"], r["real_time_ms"]) for r in mixed] == [
        ("CPU: conv", 5.0), ("CPU: relu", 2.0), ("GPU.0: conv", 1.0), ("GPU.0: relu", 0.5)]
