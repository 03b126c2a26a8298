"""The package's import layers: the procedural world sits at the bottom of the import graph."""

from __future__ import annotations

import ast
from pathlib import Path

import noiseclr

PACKAGE = Path(noiseclr.__file__).parent
# The two leaf utilities the world may use: one-line user errors and atomic/safe file I/O.
FOUNDATION = {"noiseclr.errors", "noiseclr.fileio"}


def noiseclr_imports(path: Path) -> set[str]:
    """Absolute names of the noiseclr modules a file imports (at any depth, lazily or not)."""
    module = "noiseclr." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module.removesuffix(".__init__")
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name.startswith("noiseclr"):
                found.add(name)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("noiseclr"))
    return found


def test_world_imports_nothing_above_it():
    files = sorted((PACKAGE / "world").glob("*.py"))
    assert files
    for path in files:
        outside = {name for name in noiseclr_imports(path) if not name.startswith("noiseclr.world")} - FOUNDATION
        assert not outside, f"{path.name} imports {sorted(outside)}"


def test_foundation_modules_import_nothing_but_each_other():
    for name in FOUNDATION:
        path = PACKAGE / (name.split(".", 1)[1] + ".py")
        assert noiseclr_imports(path) <= FOUNDATION, name


def test_the_library_never_imports_base_model_training():
    # The shipped weights are an ordinary diffusers folder: nothing at run time needs basemodel/.
    for path in PACKAGE.rglob("*.py"):
        if "basemodel" in path.relative_to(PACKAGE).parts:
            continue
        assert not any(name.startswith("noiseclr.basemodel") for name in noiseclr_imports(path)), path.name
