"""pairtune.prune: a stage gone from the pipeline (a method out of train.methods) leaves nothing behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

DVC_YAML = """stages:
  train:
    matrix:
      mode: ${methods}
    cmd: mkdir -p res && echo ${item.mode} > res/${item.mode}.txt
    params:
      - methods
    outs:
      - res/${item.mode}.txt
"""


def _sh(cwd: Path, *cmd: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1"}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=True, timeout=120)


def test_prune_removes_a_dropped_stages_outputs_lock_entry_and_ignore_lines(tmp_path):
    _sh(tmp_path, "git", "init", "-q")
    _sh(tmp_path, "dvc", "init", "-q")
    (tmp_path / "dvc.yaml").write_text(DVC_YAML)
    (tmp_path / "params.yaml").write_text("methods: [full, lora]\n")
    _sh(tmp_path, "dvc", "repro", "-q")
    lock_two = (tmp_path / "dvc.lock").read_text()
    ignore_two = (tmp_path / "res/.gitignore").read_text()
    (tmp_path / "params.yaml").write_text("methods: [full, lora, dora]\n")
    _sh(tmp_path, "dvc", "repro", "-q")
    (tmp_path / "params.yaml").write_text("methods: [full, lora]\n")
    assert "train@dora" in (tmp_path / "dvc.lock").read_text()  # DVC keeps what it no longer runs
    dry = _sh(tmp_path, sys.executable, "-m", "pairtune.prune", "--dry-run")
    assert "would remove train@dora: res/dora.txt" in dry.stdout and (tmp_path / "res/dora.txt").exists()
    _sh(tmp_path, sys.executable, "-m", "pairtune.prune")
    assert not (tmp_path / "res/dora.txt").exists() and (tmp_path / "res/full.txt").exists()
    # lock and .gitignore as a run that never had the method (the lock's params record aside, which repro rewrites)
    _sh(tmp_path, "dvc", "repro", "-q")
    assert (tmp_path / "dvc.lock").read_text() == lock_two
    assert (tmp_path / "res/.gitignore").read_text() == ignore_two
    assert "nothing to prune" in _sh(tmp_path, sys.executable, "-m", "pairtune.prune").stdout
