"""The layout stays readable: no file in cnn_lightning/ or gui/ over 450 lines, no class over 300
(docs/ARCHITECTURE.md), and the packages import only downwards."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAX_FILE_LINES = 450
MAX_CLASS_LINES = 300
SOURCES = sorted(p for package in ("cnn_lightning", "gui") for p in (ROOT / package).rglob("*.py"))


def test_the_sources_are_found():
    names = {p.relative_to(ROOT).as_posix() for p in SOURCES}
    assert {"cnn_lightning/inference.py", "cnn_lightning/callbacks/__init__.py", "gui/window.py"} <= names


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_files_and_classes_are_small(path):
    text = path.read_text()
    lines = len(text.splitlines())
    assert lines <= MAX_FILE_LINES, f"{path.name}: {lines} lines, split it by job (limit {MAX_FILE_LINES})"
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ClassDef):
            length = node.end_lineno - node.lineno + 1
            assert length <= MAX_CLASS_LINES, f"{path.name}: class {node.name} is {length} lines (limit {MAX_CLASS_LINES})"


def imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            modules.add(node.module)
    return modules


def top(module: str) -> str:
    return module.split(".")[0]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_imports_point_downwards(path):
    """benchmarks -> gui -> cnn_lightning; nets know nothing of Lightning; nothing in
    cnn_lightning knows Qt."""
    imported = {top(m) for m in imported_modules(path)}
    package = path.relative_to(ROOT).parts[0]
    if package == "cnn_lightning":
        assert not imported & {"gui", "benchmarks", "PySide6"}, imported
    if package == "gui":
        assert "benchmarks" not in imported, imported
    if path.relative_to(ROOT).parts[:2] == ("cnn_lightning", "nets"):
        assert not imported & {"lightning", "hydra", "omegaconf"}, imported


@pytest.mark.parametrize("model", ["lenet", "lenet_classic", "alexnet_lite", "tiny", "micro"])
def test_the_summary_and_the_app_share_one_receptive_field(model):
    """The summary table's RF and jump are the app's receptive-field sizes and jumps, layer by layer."""
    from cnn_lightning.geometry import receptive_fields
    from cnn_lightning.summary import compose_net, layer_table

    _, net = compose_net([f"model={model}"])
    rows = layer_table(net)
    fields = receptive_fields(net.eval())
    compared = 0
    for row in rows:
        geometry = fields.get(row.name)
        if geometry is None or geometry.whole:
            continue
        assert (row.rf, row.jump) == (geometry.size[0], geometry.jump[0]), row.name
        compared += 1
    assert compared >= 4 and rows[-1].rf > 1
