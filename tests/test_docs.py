"""The docs cannot drift from the code: every ```python block in docs/*.md runs (the blocks of one page
in order, sharing one namespace, in a fresh folder holding `model.onnx`, the demo model), every
`hetero ...` line of a ```bash block runs through hetero.cli.main in-process and must exit 0; the
properties table is the generated one; links and pictures resolve; the module map covers the package."""
from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest

import hetero
from hetero import cli

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
HAS_GPU = any(d.startswith("GPU") for d in hetero.Core().available_devices)
# ```python / ```bash, optionally tagged: ```python gpu marks a block that needs an OpenCL device
FENCE = re.compile(r"^```(\w*)([^\n]*)\n(.*?)^```[ \t]*$", re.M | re.S)


def blocks(page: Path) -> list[tuple[str, set, str, int]]:
    """(language, tags, code, line number) of each fenced block."""
    text = page.read_text()
    return [(m.group(1), set(m.group(2).split()), m.group(3), text.count("\n", 0, m.start()) + 2)
            for m in FENCE.finditer(text)]


def hetero_commands(code: str) -> list[list[str]]:
    out = []
    for line in code.splitlines():
        words = shlex.split(line, comments=True)
        if words and words[0] == "hetero":
            out.append(words[1:])
    return out


@pytest.fixture
def clean_devices():
    """Pages configure MOCK devices and register example families: put the registry back after."""
    from hetero.devices import mock
    from hetero.devices.registry import registry

    reg = registry()
    families, devices = dict(reg._families), dict(reg._devices)
    yield
    reg._families.clear()
    reg._families.update(families)
    reg._devices.clear()
    reg._devices.update(devices)
    for d in mock.discover():
        d.reset()


def test_every_page_has_code_and_is_linked_from_the_index():
    index = (DOCS / "index.md").read_text()
    for page in PAGES:
        if page.name != "index.md":
            assert f"({page.name})" in index, f"docs/index.md does not link {page.name}"
    assert {p.name for p in PAGES} >= {"index.md", "getting-started.md", "device-strings.md", "properties.md",
                                       "hetero.md", "multi-auto.md", "profiling.md", "architecture.md",
                                       "adding-an-op.md", "adding-a-device.md", "cli.md"}


@pytest.mark.parametrize("page", [p for p in PAGES if any(b[0] in ("python", "bash") for b in blocks(p))],
                         ids=lambda p: p.name)
def test_code_blocks_run(page, tmp_path, monkeypatch, capsys, clean_devices):
    shutil.copy(cli.demo_model_path(), tmp_path / "model.onnx")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": f"docs.{page.stem}"}
    ran = 0
    for lang, tags, code, line in blocks(page):
        where = f"docs/{page.name}:{line}"
        if "gpu" in tags and not HAS_GPU:  # untagged blocks must not depend on these
            continue
        if lang == "python":
            exec(compile(code, where, "exec"), namespace)
            ran += 1
        elif lang == "bash":
            for argv in hetero_commands(code):
                rc = cli.main(argv)
                out, err = capsys.readouterr()
                assert rc == 0, f"{where}: hetero {' '.join(argv)} exited {rc}: {err.strip()}"
                ran += 1
    assert ran > 0 or not HAS_GPU
    # pictures: a .dot the page wrote that docs/img also holds must be what docs/img holds (the
    # committed .svg is rendered from it), so the pictures cannot drift from the code either
    for made in [*tmp_path.glob("*.dot"), *tmp_path.glob("img/*.dot")]:
        committed = DOCS / "img" / made.name
        if committed.exists():
            assert made.read_text() == committed.read_text(), \
                f"docs/img/{made.name} is stale: docs/{page.name} now draws it differently (re-render it)"


def test_properties_table_is_the_generated_one():
    text = (DOCS / "properties.md").read_text()
    table = text.split("<!-- properties:begin -->\n")[1].split("<!-- properties:end -->")[0]
    assert table == cli.properties_markdown(), \
        "docs/properties.md is stale: regenerate the table with `hetero properties --markdown`"
    from hetero import properties as P

    keys = re.findall(r"^\| `([A-Z0-9_]+)` \|", table, re.M)
    assert sorted(keys) == sorted(P.SPECS)


def test_links_and_pictures_resolve():
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if re.match(r"[a-z]+://", target):
                continue
            assert (page.parent / target).exists(), f"docs/{page.name} links to missing {target}"


def test_report_schema_names_every_report_key():
    """The schema table is checked against a real report in tests/test_cli.py; here: it is there."""
    text = (DOCS / "cli.md").read_text()
    assert "<!-- report-schema:begin -->" in text and cli.REPORT_SCHEMA in text


def test_architecture_module_map_covers_the_package():
    text = (DOCS / "architecture.md").read_text()
    pkg = ROOT / "hetero"
    modules = {f"hetero/{p.name}" for p in pkg.glob("*.py") if p.name != "__init__.py"}
    modules |= {f"hetero/{p.name}/" for p in pkg.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    modules |= {f"hetero/devices/{p.name}/" for p in (pkg / "devices").iterdir()
                if p.is_dir() and (p / "__init__.py").exists()}
    modules |= {f"hetero/devices/{p.name}" for p in (pkg / "devices").glob("*.py") if p.name != "__init__.py"}
    missing = sorted(m for m in modules if f"`{m}`" not in text)
    assert not missing, f"docs/architecture.md's module map lacks {missing}"
