"""pairtune.precompile: what `make install` runs after pip (bytecode on every core, numba's cache)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from pairtune.precompile import build


def test_build_compiles_every_module_and_skips_what_this_python_cannot_parse(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    good = [pkg / "__init__.py", pkg / "sub" / "mod.py"]
    for f in good:
        f.write_text("X = 1\n")
    # torch ships test helpers in Python 3.12 syntax: pip skips them, and so must the install, not fail on them
    newer = pkg / "py312_only.py"
    newer.write_text('def f[T](a: "x"):\n    return a\n')
    (pkg / "tests").mkdir()
    own_tests = pkg / "tests" / "test_pkg.py"  # a package's own tests: never imported by a stage
    own_tests.write_text("Y = 2\n")
    build([str(tmp_path)], warm=False)
    for f in good:
        assert Path(importlib.util.cache_from_source(str(f))).is_file(), f
    for f in (newer, own_tests):
        assert not Path(importlib.util.cache_from_source(str(f))).exists(), f
