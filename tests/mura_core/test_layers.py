"""The layout (docs/layout.md), read from the source, no import needed: imports point one way,
`jobs → pipelines → mura_core`; `pipelines/` is a package per capability; one archive
layer: only it asks whether a source is a PACS, and screening and ingest reach archives
through it, never through each other."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("mura_core", "pipelines", "jobs", "bench")
ARCHIVE_LAYER = ROOT / "mura_core" / "archive"


def _sources() -> list[Path]:
    files = [p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))]
    assert len(files) > 50, "the walk found too few modules to mean anything"
    return files


def _imported(path: Path) -> set[str]:
    """The absolute names of the modules `path` imports (relative imports resolved)."""
    package = list(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def test_only_the_archive_layer_asks_whether_a_source_is_a_pacs() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for path in _sources()
        if "is_pacs_address" in path.read_text() and not path.is_relative_to(ARCHIVE_LAYER)
    ]
    assert offenders == []


def test_screening_and_ingest_do_not_import_each_other() -> None:
    pairs = {"pipelines/screen": "pipelines.ingest", "pipelines/ingest": "pipelines.screen"}
    offenders = []
    for folder, forbidden in pairs.items():
        files = sorted((ROOT / folder).rglob("*.py"))
        assert files, folder
        for path in files:
            bad = [n for n in _imported(path) if n == forbidden or n.startswith(forbidden + ".")]
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in sorted(bad)]
    assert offenders == []


def test_the_resolver_sees_the_imports() -> None:
    """The checks here would pass vacuously if imports were misread."""
    names = _imported(ROOT / "pipelines" / "screen" / "inputs.py")
    assert "pipelines.archives" in names and "mura_core.archive" in names


def test_imports_point_one_way() -> None:
    """mura_core imports neither pipelines nor jobs; pipelines does not import jobs."""
    below = {"mura_core": ("pipelines", "jobs", "bench"), "pipelines": ("jobs", "bench")}
    offenders = []
    for package, forbidden in below.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            bad = [n for n in _imported(path) if n.split(".")[0] in forbidden]
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in sorted(bad)]
    assert offenders == []


def test_pipelines_is_a_package_per_capability() -> None:
    """No loose modules in `pipelines/`: each capability is a package with a docstring."""
    loose = [p.name for p in (ROOT / "pipelines").glob("*.py") if p.name != "__init__.py"]
    assert loose == []
    packages = [p for p in (ROOT / "pipelines").iterdir() if (p / "__init__.py").exists()]
    assert len(packages) >= 8
    undocumented = [
        p.name
        for p in packages
        if not ast.get_docstring(ast.parse((p / "__init__.py").read_text()))
    ]
    assert undocumented == []
