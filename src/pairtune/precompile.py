"""Compile the installed stack once, at install, on every core: Python bytecode and numba's JIT cache.

`make install` runs `python -m pairtune.precompile` after pip (which it tells not to compile: pip compiles
bytecode file by file on one core, ~84 s of a first install on a 2-core CPU), and before that
`python -P src/pairtune/precompile.py --only torch` beside pip's install of the lock (pip unpacks on one core; torch
is installed first). Two jobs run side by side:

- Bytecode for all of site-packages with `compileall` on every core (~47 s there). Needed, not just nice:
  where PYTHONDONTWRITEBYTECODE is set (CI images often set it) Python never writes a .pyc, so a module pip
  did not compile is compiled again in every process (+12 s for each stage's imports, measured).
- numba's on-disk cache for UMAP, pynndescent and HDBSCAN: a fresh venv's first `import umap` JIT-compiles
  pynndescent (~17 s) and its first UMAP fit umap's own functions (~10 s), paid otherwise by the first
  evaluate stage on one core. A small seeded fit through `metrics.cluster_purity` compiles the same
  functions the stage uses (float32 points, cosine UMAP, HDBSCAN); numba keys its cache on the function's
  source and the CPU, so a changed package or another CPU compiles afresh, as without this.

Files that do not compile (test helpers for another Python version) are skipped, as pip skips them.
"""

from __future__ import annotations

import argparse
import compileall
import os
import re
import subprocess
import sys
import sysconfig
import time

# Never imported by a running stage: folders of a package's own tests (pandas' alone are 1,143 files). pip
# compiles them; we leave them to compile on import, which nothing does.
NOT_IMPORTED = re.compile(r"[/\\]tests?[/\\]")
# Points for the numba warm-up: UMAP's exact-neighbour path and HDBSCAN, as the evaluate stage runs them on the
# demo. After a 40-point fit a 400-point one took 5.6 s against 4.7 s once a 400-point fit had filled the cache;
# after this one, 4.4-6.2 s (four fresh installs). Data past UMAP's exact-neighbour size compiles
# pynndescent's search once.
WARM_POINTS = 200


def warm_jit(points: int = WARM_POINTS) -> None:
    """One small cluster_purity fit: numba compiles and caches what the evaluate stage calls."""
    import numpy as np

    from pairtune.metrics import cluster_purity

    rng = np.random.default_rng(0)
    x = rng.normal(size=(points, 768)).astype(np.float32)
    y = (rng.random(points) > 0.5).astype(float)
    cluster_purity(x, y, neighbors=15, min_dist=0.1, min_cluster=10, min_samples=5, seed=0, seeds=1)


def build(folders: list[str], warm: bool = True, workers: int = 0) -> float:
    """Bytecode for every .py under `folders` (`workers` processes, 0: one a core) and, with `warm`, numba's
    cache beside it; seconds."""
    start = time.perf_counter()
    jit = (subprocess.Popen([sys.executable, "-c", "from pairtune.precompile import warm_jit; warm_jit()"])
           if warm else None)
    # quiet=2: no listing and no errors (a py312-only file in torch's tests); a file left uncompiled is only
    # compiled at import, as before.
    for folder in folders:
        compileall.compile_dir(folder, quiet=2, workers=workers or os.cpu_count() or 1, rx=NOT_IMPORTED)
    if jit is not None and jit.wait():
        raise SystemExit(f"pairtune.precompile: numba warm-up (UMAP + HDBSCAN) failed with exit status "
                         f"{jit.returncode}: the evaluate stage would fail the same way")
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="+", default=[], metavar="PACKAGE",
                    help="bytecode for these installed packages only, on one core, no numba warm-up (make install "
                         "compiles torch while pip unpacks the rest, a single-core job)")
    args = ap.parse_args()
    site = sysconfig.get_paths()["purelib"]
    if args.only:
        build([os.path.join(site, p) for p in args.only], warm=False, workers=1)
        return
    seconds = build([site])
    print(f"pairtune.precompile: bytecode and numba cache built in {seconds:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
