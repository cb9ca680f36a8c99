"""Sharing runs between clones, with real git and dvc: push / clone / pull, an S3 remote (moto's server on
127.0.0.1), experiments pushed and pulled through a bare `origin`, and a param set restored from the run-cache
with no training (#23). Its own repository (the same tiny baseline as tests/test_pipeline.py), so that the two
files run on both of `make test`'s workers at once.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ruamel.yaml import YAML
from test_pipeline import md5, ran, repo, restored, sh  # noqa: F401 (repo: the module-scoped fixture)

from conftest import write_params

pytestmark = pytest.mark.pipeline


def test_1_push_clone_pull(repo, tmp_path):
    # the reruns above re-rendered the report (it shows training wall times): share what is committed
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "after reruns", "--allow-empty")
    sh(repo, "dvc", "push", "--run-cache")
    clone = tmp_path / "clone"
    sh(tmp_path, "git", "clone", "-q", str(repo), str(clone))
    assert not (clone / "models/lora").exists()
    sh(clone, "dvc", "pull", "--run-cache")
    for rel in ("models/lora/adapter_model.safetensors", "models/full/model.safetensors", "data/prepared/eval.jsonl",
                "metrics/evaluate/lora.json", "plots/report.html"):
        assert md5(clone / rel) == md5(repo / rel), rel
    assert ran(sh(clone, "dvc", "repro")) == set()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_url():
    """moto's S3 server on 127.0.0.1 with a bucket `pairtune`; AWS credentials in os.environ while it runs."""
    port = _free_port()
    server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    os.environ.update(env)
    try:
        import boto3

        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 30
        while True:
            try:
                boto3.client("s3", endpoint_url=url).create_bucket(Bucket="pairtune")
                break
            except Exception:
                if time.time() > deadline:
                    raise
                time.sleep(0.3)
        yield url
    finally:
        for k in env:
            os.environ.pop(k, None)
        server.terminate()
        server.wait(10)


def _add_s3(clone: Path, url: str, prefix: str) -> None:
    sh(clone, "dvc", "remote", "add", "--local", "--force", "s3", f"s3://pairtune/{prefix}")
    sh(clone, "dvc", "remote", "modify", "--local", "s3", "endpointurl", url)


# what an experiment or a restored run must bring back: models, adapter, metrics, the report
SHARED = ("models/lora/adapter_model.safetensors", "models/full/model.safetensors", "metrics/evaluate/lora.json",
          "metrics/train/lora.json", "metrics/export/lora.json", "plots/evaluate/lora/details.json",
          "plots/report.html", "dvc.lock")


def _files(repo: Path) -> dict[str, str]:
    return {rel: md5(repo / rel) for rel in SHARED}


def _origin(repo: Path, tmp_path: Path) -> Path:
    """A bare git repository as the team's `origin`, holding repo's current branch."""
    origin = tmp_path / "origin.git"
    sh(tmp_path, "git", "init", "-q", "--bare", str(origin))
    sh(repo, "git", "remote", "remove", "origin", check=False)
    sh(repo, "git", "remote", "add", "origin", str(origin))
    sh(repo, "git", "push", "-q", "origin", "HEAD:refs/heads/main")
    sh(origin, "git", "symbolic-ref", "HEAD", "refs/heads/main")
    return origin


def test_2_experiments_travel_between_clones(repo, tmp_path):
    """#23: A runs two experiments and pushes them (`dvc exp push origin`: git refs, and DVC objects to the
    default remote); B, a fresh clone, pulls them, lists their metrics, applies each and restores it with no
    stage run, byte for byte. (test_3 pushes to S3 and restores every stage from it.)"""
    a = repo
    origin = _origin(a, tmp_path)
    # one experiment retrains LoRA (models must travel), the other only re-chooses alpha (cheap; metrics travel)
    names = {"share-r2": "train.lora.r=2", "share-drop": "interpolate.max_auc_drop=0.2"}
    expected, metrics = {}, {}
    for name, setting in names.items():
        sh(a, "dvc", "exp", "run", "-n", name, "-S", setting)
        expected[name] = _files(a)
        metrics[name] = json.loads((a / "metrics/evaluate/lora.json").read_text())["lora"]
    sh(a, "git", "checkout", "-q", "--", ".")
    sh(a, "dvc", "checkout", "-q")
    sh(a, "dvc", "exp", "push", "origin", *names)

    b = tmp_path / "b"
    sh(tmp_path, "git", "clone", "-q", str(origin), str(b))
    assert sh(b, "dvc", "exp", "list", "origin").stdout.count("share-") == 2
    sh(b, "dvc", "exp", "pull", "origin", *names)
    shown = json.loads(sh(b, "dvc", "exp", "show", "--json").stdout)
    exps = {e["name"]: e["revs"][0]["data"] for rev in shown for e in (rev.get("experiments") or [])}
    assert set(names) <= set(exps)
    for name in names:  # the metrics of each, as A measured them
        assert exps[name]["metrics"]["metrics/evaluate/lora.json"]["data"]["lora"] == metrics[name]
    for name in names:
        sh(b, "dvc", "exp", "apply", name)
        proc = sh(b, "dvc", "repro")
        assert ran(proc) == set() and restored(proc) == set(), proc.stdout
        assert _files(b) == expected[name], name
    assert expected["share-r2"] != expected["share-drop"]


def test_3_a_param_set_run_elsewhere_restores_without_training(repo, tmp_path, s3_url):
    """#23: a param set run in A (then reverted) and pushed with `make push` (the run-cache and every run's
    objects, metrics included), to the local-folder remote and to S3 (moto): a fresh clone B that sets the same
    params and runs `dvc repro --pull` trains nothing and gets A's bytes, from either remote."""
    a = repo
    _add_s3(a, s3_url, f"runs-{tmp_path.name}")
    original = (a / "params.yaml").read_bytes()
    data = YAML(typ="safe").load(original)
    data["train"]["lora"]["r"] = 3  # a setting no earlier test ran
    write_params(a / "params.yaml", data)
    setting = (a / "params.yaml").read_bytes()
    assert "train@lora" in ran(sh(a, "dvc", "repro"))
    expected = _files(a)
    (a / "params.yaml").write_bytes(original)
    sh(a, "dvc", "repro")  # back to the committed run: what A pushes is its workspace, not the r=3 run
    assert _files(a) != expected
    for flags in ([], ["-r", "s3"]):
        sh(a, "dvc", "push", "--run-cache", *flags)  # = make push (REMOTE=s3)
        sh(a, "python", "-m", "pairtune.share", *flags)
    for remote in ("local", "s3"):
        b = tmp_path / f"b-{remote}"
        sh(tmp_path, "git", "clone", "-q", str(a), str(b))
        if remote == "s3":
            _add_s3(b, s3_url, f"runs-{tmp_path.name}")
            sh(b, "dvc", "remote", "default", "--local", "s3")
        (b / "params.yaml").write_bytes(setting)
        proc = sh(b, "dvc", "repro", "--pull")
        assert ran(proc) == set(), (remote, proc.stdout)
        assert {"train@lora", "evaluate@lora", "report"} <= restored(proc)
        assert _files(b) == expected, remote


def _bash(cwd: Path, script: str) -> subprocess.CompletedProcess:
    """Run a documented block with `set -e`, as a person would type it: no AWS credentials in the environment
    (they must come from .dvc/config.local), the test's Python first on PATH."""
    from test_pipeline import _env

    env = {k: v for k, v in _env().items() if not k.startswith("AWS_")}
    proc = subprocess.run(["bash", "-ec", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{script}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_4_the_documented_steps_share_a_run(repo, tmp_path, s3_url):
    """#34: docs/dvc.md's two blocks, run as written (placeholders filled in) over moto's S3 on 127.0.0.1:
    the teammate's `dvc pull` restores the models and the report, `dvc repro` finds nothing to do, and no
    credential reaches a committed file."""
    import shutil

    from conftest import ROOT

    a = repo
    sh(a, "git", "add", "-A")
    sh(a, "git", "commit", "-qm", "before sharing", "--allow-empty")
    sh(a, "git", "branch", "-M", "main")
    origin = _origin(a, tmp_path)
    # `make push` here is the project's Makefile over the test's venv (already installed: older prerequisites)
    for name in ("Makefile", "requirements.lock", "pyproject.toml"):
        shutil.copy(ROOT / name, a / name)
        os.utime(a / name, (0, 0))
    (a / ".venv").symlink_to(ROOT / ".venv")
    fill = {"s3://your-bucket/pairtune": "s3://pairtune/team", "https://s3.your-provider.example": s3_url,
            "YOUR_KEY_ID": "AKIAPAIRTUNEYOURS", "YOUR_SECRET": "your-secret-pairtune",
            "THEIR_KEY_ID": "AKIAPAIRTUNETHEIRS", "THEIR_SECRET": "their-secret-pairtune", "YOUR_GIT_URL": str(origin)}
    from conftest import doc_blocks

    you, teammate = doc_blocks("tests/test_sharing.py::test_4_the_documented_steps_share_a_run")
    for placeholder, value in fill.items():
        you, teammate = you.replace(placeholder, value), teammate.replace(placeholder, value)
    teammate = teammate.replace("make install", f"ln -s {ROOT / '.venv'} .venv")  # the venv stands in for it
    _bash(a, you)
    _bash(tmp_path, teammate)
    b = tmp_path / "pairtune"
    for rel in ("models/lora/adapter_model.safetensors", "models/full/model.safetensors", "plots/report.html",
                "metrics/evaluate/lora.json"):
        assert md5(b / rel) == md5(a / rel), rel
    assert "Data and pipelines are up to date" in _bash(b, "source .venv/bin/activate && dvc repro").stdout
    for clone in (a, b):
        for secret in ("AKIAPAIRTUNE", "secret-pairtune"):  # no credential in any committed file
            assert sh(clone, "git", "grep", "-l", secret, check=False).stdout == ""
        assert "access_key_id" in (clone / ".dvc/config.local").read_text()
        assert "access_key_id" not in (clone / ".dvc/config").read_text()
    # the committed config names the team's remote as the default (DVC's own reader: its section headers,
    # ['remote "team"'], are not git-config syntax)
    assert _bash(b, "source .venv/bin/activate && dvc config --project core.remote").stdout.strip() == "team"
