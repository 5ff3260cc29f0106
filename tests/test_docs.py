"""The README and the documentation site (mkdocs.yml, docs/): the site builds with --strict (a broken
link, anchor or image, or a page missing from the navigation fails), every command and config choice
they name exists, and the records tables are the ones benchmarks/accuracy.py writes."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, compose_train

from cnn_lightning.train import null_groups_to_deletions

sys.path.insert(0, str(ROOT / "benchmarks"))
import accuracy  # noqa: E402  (benchmarks/ is scripts, not a package)

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
INLINE = re.compile(r"(`+)(.+?)\1", re.S)
MODULE = re.compile(r"python\s+-m\s+((?:cnn_lightning|gui)(?:\.\w+)*)(?!\.?<)")  # not python -m cnn_lightning.<x>
MAKE = re.compile(r"(?<![\w-])make ([a-z][\w-]*)")
SCRIPT = re.compile(r"python\s+(benchmarks/\w+\.py)")
# a config group's choice: model=tiny, trainer=gpu, hydra/launcher=parallel, +callbacks@callbacks.ema=ema;
# not a key's value (model.net.c2=18, ~callbacks.progress_bar=null, hydra.sweeper.seeds=...)
CHOICE = re.compile(r"(?<![\w.$/{~+-])(\+?)([a-z_]+(?:/[a-z_]+)?)(@[\w.]+)?=([a-z0-9_]+(?:,[a-z0-9_]+)*)(?![\w.\[<])")


def code_of(text: str) -> list[str]:
    """The code a page shows: its fenced blocks and its inline code spans."""
    blocks = [m.group(0) for m in FENCE.finditer(text)]
    prose = FENCE.sub("", text)
    return blocks + [m.group(2) for m in INLINE.finditer(prose)]


def named(pattern: re.Pattern) -> dict[tuple, set[str]]:
    """Every match of ``pattern`` in the code of the README and the docs, with the pages naming it."""
    found: dict[tuple, set[str]] = {}
    for page in PAGES:
        for code in code_of(page.read_text()):
            for m in pattern.finditer(code):
                found.setdefault(m.groups(), set()).add(str(page.relative_to(ROOT)))
    return found


def make_targets() -> set[str]:
    targets = set()
    for line in (ROOT / "Makefile").read_text().splitlines():
        m = re.match(r"^([\w.-]+(?:\s+[\w.-]+)*)\s*:(?!=)", line)
        if m and not line.startswith((".", "\t")):
            targets.update(m.group(1).split())
    return targets


def config_groups() -> set[str]:
    conf = ROOT / "conf"
    return {str(d.relative_to(conf)) for d in conf.rglob("*") if d.is_dir() and any(d.glob("*.yaml"))}


def test_site_builds_strict(tmp_path):
    env = os.environ | {"NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"mkdocs build --strict failed (make setup installs the docs extra):\n{result.stderr[-4000:]}"
    for page in ("index.html", "app/index.html", "results/index.html", "tried/index.html"):
        assert (tmp_path / "site" / page).is_file(), page
    assert (tmp_path / "site" / "app.png").is_file()


def test_every_page_is_in_the_navigation():
    nav = (ROOT / "mkdocs.yml").read_text()
    missing = [p.name for p in PAGES[1:] if f" {p.name}" not in nav]
    assert not missing, f"pages missing from mkdocs.yml's nav: {missing}"


def test_named_modules_exist():
    modules = named(MODULE)
    assert ("cnn_lightning.train",) in modules and ("gui",) in modules
    missing = []
    for (module,), pages in sorted(modules.items()):
        spec = importlib.util.find_spec(module)
        if spec is not None and spec.submodule_search_locations is not None:  # a package runs its __main__
            spec = importlib.util.find_spec(f"{module}.__main__")
        if spec is None:
            missing.append(f"python -m {module} ({', '.join(sorted(pages))})")
    assert not missing, f"no such module: {missing}"


def test_named_make_targets_and_scripts_exist():
    targets = make_targets()
    assert {"train", "test", "app", "docs", "docs-serve"} <= targets
    named_targets = named(MAKE)
    assert ("train",) in named_targets
    missing = [f"make {t} ({', '.join(sorted(p))})" for (t,), p in named_targets.items() if t not in targets]
    missing += [f"{s} ({', '.join(sorted(p))})" for (s,), p in named(SCRIPT).items() if not (ROOT / s).is_file()]
    assert not missing, f"no such make target or script: {missing}"


def test_named_config_choices_compose():
    groups = config_groups()
    choices = {(plus, group, package, value)
               for (plus, group, package, values) in named(CHOICE) if group in groups
               for value in values.split(",")}
    assert ("", "model", None, "lenet") in choices and ("", "experiment", None, "speedrun") in choices
    failed = []
    for plus, group, package, value in sorted(choices, key=lambda c: (c[1], c[3], c[0], c[2] or "")):
        override = f"{plus}{group}{package or ''}={value}"
        try:
            compose_train(*null_groups_to_deletions([override]))  # as the command line reads it
        except Exception as err:  # noqa: BLE001 (any failure to compose is the finding)
            failed.append(f"{override}: {type(err).__name__}: {str(err).splitlines()[0]}")
    assert not failed, "config choices named in the README or docs/ that do not compose:\n" + "\n".join(failed)


def test_records_tables_are_what_accuracy_py_writes(tmp_path):
    results = json.loads((ROOT / "benchmarks/results/accuracy.json").read_text())
    readme = (ROOT / "README.md").read_text()
    copy = tmp_path / "README.md"
    copy.write_text(readme)
    accuracy.write_readme_records(copy, results)  # what benchmarks/accuracy.py does to the README
    assert copy.read_text() == readme
    begin = readme.index(accuracy.README_BEGIN) + len(accuracy.README_BEGIN)
    assert readme[begin:readme.index(accuracy.README_END)].strip() == accuracy.records_table(results).strip(), (
        "README's records table differs from benchmarks/results/accuracy.json: "
        "rerun benchmarks/accuracy.py, or copy accuracy.records_table's output")
    results_page = (ROOT / "docs/results.md").read_text()
    rows = [line for line in accuracy.markdown(results).splitlines() if line.startswith("|")]
    assert rows and all(row in results_page for row in rows), "docs/results.md lacks accuracy.md's table"


def test_readme_is_a_front_door():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    first_screens = "\n".join(readme.splitlines()[:30])
    assert "make train" in first_screens and "make test" in first_screens and "docs/app.png" in first_screens
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme)
    broken = [link for link in links if "://" not in link and not (ROOT / link).exists()]
    assert links and not broken, f"README links to missing files: {broken}"


@pytest.mark.parametrize("path", sorted((ROOT / "conf").rglob("*.yaml")), ids=lambda p: str(p.relative_to(ROOT)))
def test_configs_say_what_briefly(path: Path):
    """At most five comment lines before the first key: what the file is, where its story lives."""
    lines = path.read_text().splitlines()
    header = next((i for i, line in enumerate(lines) if line.strip() and not line.lstrip().startswith("#")), len(lines))
    assert header <= 5, f"{path.relative_to(ROOT)}: {header} comment lines before its first key (docs/tried.md has room)"
