"""DVC workflows with real git and dvc in a temporary repository, on the tiny model and tiny data.

The tests share one repository and run in file order: the first full `dvc repro` is the baseline the
others compare against. Each point of docs/dvc.md has a test here.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from conftest import ROOT, TINY_PARAMS, doc_blocks, write_params, write_tiny_general

pytestmark = pytest.mark.pipeline
METRICS = ("evaluate/base", "evaluate/full", "evaluate/lora", "interpolate/full", "interpolate/lora", "export/full",
           "export/lora", "report", "prepare", "generate")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.update(HF_HUB_OFFLINE="1", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.com", DVC_NO_ANALYTICS="1")
    return env


def sh(cwd: Path, *cmd: str, check: bool = True, timeout: int = 300,
       env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env={**_env(), **(env or {})}, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def ran(proc: subprocess.CompletedProcess) -> set[str]:
    """Stages a `dvc repro` / `dvc exp run` actually ran."""
    return {line.split("'")[1] for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("Running stage")}


def restored(proc: subprocess.CompletedProcess) -> set[str]:
    """Stages a `dvc repro` restored from DVC's run-cache instead of running them."""
    return {line.split("'")[1] for line in (proc.stdout + proc.stderr).splitlines()
            if line.startswith("Stage '") and "is cached - skipping run" in line}


def would_run(repo: Path) -> set[str]:
    """Stages a `dvc repro` would run: those `--dry` finds changed, plus everything downstream of them.

    `--dry` cannot know that a downstream stage will rerun (its deps change only once the upstream
    stage has run), so descendants come from `dvc dag`; test_3 checks a real run of the LoRA case. The base
    stage also evaluates the base: an evaluate param reruns it, but models/base comes out byte-identical and
    nothing trains again. So where base is among the changed, it runs for real first (seconds on the tiny
    model; `_with_param` puts it back) and only what is still changed after it counts.
    """
    changed = ran(sh(repo, "dvc", "repro", "--dry"))
    first = set()
    if "base" in changed:
        sh(repo, "dvc", "repro", "--single-item", "base")
        first, changed = {"base"}, ran(sh(repo, "dvc", "repro", "--dry"))
    edges = [tuple(part.strip().strip('";') for part in line.split("->"))
             for line in sh(repo, "dvc", "dag", "--dot").stdout.splitlines() if "->" in line]
    out, todo = set(changed), list(changed)
    while todo:
        node = todo.pop()
        for a, b in edges:
            if a == node and b not in out:
                out.add(b)
                todo.append(b)
    return out | first


# what a LoRA param change reruns: the learning-rate search too (the rest of the recipe is part of its input)
LORA_CHAIN = {"tune@lora", "train@lora", "evaluate@lora", "interpolate@lora", "export@lora", "seeds@lora", "report"}


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def snapshot(repo: Path) -> dict[str, bytes]:
    return {m: (repo / "metrics" / f"{m}.json").read_bytes() for m in METRICS}


BASELINE = {"generate", "prepare", "base", "tune@full", "tune@lora", "train@full", "train@lora",
            "evaluate@full", "evaluate@lora", "interpolate@full", "interpolate@lora", "export@full", "export@lora",
            "seeds@full", "seeds@lora", "report"}


def _template(tmp_path_factory, tiny_model_dir) -> Path:
    """The tiny pipeline, run and committed once per test session: this file and tests/test_sharing.py each
    copy it. Under `make test` they run on two xdist workers at once; one builds while the other waits on a
    file lock in the workers' shared temp folder (one `dvc repro` of everything instead of two)."""
    from filelock import FileLock

    uid = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    base = tmp_path_factory.getbasetemp()
    shared = base.parent / f"pipeline-template-{uid}" if uid else base / "pipeline-template"
    with FileLock(str(shared) + ".lock"):
        repo = shared / "repo"
        if not (shared / "done").exists():
            shutil.rmtree(shared, ignore_errors=True)
            repo.mkdir(parents=True)
            for name in ("stages", "src"):
                shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
            for name in ("dvc.yaml", ".gitignore"):
                shutil.copy(ROOT / name, repo / name)
            params = json.loads(json.dumps(TINY_PARAMS))
            params["base"]["model"] = str(tiny_model_dir)
            params["evaluate"]["cluster"] = False  # UMAP's JIT costs ~9 s per evaluate; tested elsewhere
            write_params(repo / "params.yaml", params)
            write_tiny_general(repo / params["general"]["path"])
            sh(repo, "git", "init", "-q")
            sh(repo, "dvc", "init", "-q")
            sh(repo, "dvc", "config", "core.analytics", "false")
            sh(repo, "dvc", "config", "core.autostage", "true")
            assert ran(sh(repo, "dvc", "repro")) == BASELINE
            sh(repo, "git", "add", "-A")
            sh(repo, "git", "commit", "-qm", "baseline")
            (shared / "done").touch()
    return repo


@pytest.fixture(scope="module")
def repo(tmp_path_factory, tiny_model_dir):
    """A copy of the session's baseline repository (DVC's state database left behind: it is keyed by path),
    with a DVC remote of its own, committed."""
    root = tmp_path_factory.mktemp("pipe")
    repo = root / "repo"
    shutil.copytree(_template(tmp_path_factory, tiny_model_dir), repo, symlinks=True,
                    ignore=lambda folder, names: {"tmp"} if Path(folder).name == ".dvc" else set())
    sh(repo, "dvc", "remote", "add", "-d", "local", str(root / "remote"))
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "the team's remote")
    assert json.loads(sh(repo, "dvc", "status", "--json").stdout) == {}
    return repo


@pytest.fixture(scope="module")
def baseline(repo):
    return snapshot(repo)


def test_1_repro_is_idempotent(repo, baseline):
    assert json.loads(sh(repo, "dvc", "status", "--json").stdout) == {}
    proc = sh(repo, "dvc", "repro")
    assert ran(proc) == set()
    assert "Data and pipelines are up to date" in proc.stdout + proc.stderr


def _with_param(repo: Path, dotted: str, value) -> set[str]:
    path = repo / "params.yaml"
    original = path.read_bytes()
    data = YAML(typ="safe").load(original)
    node = data
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node[part]
    node[leaf] = value
    write_params(path, data)
    before = (repo / "dvc.lock").read_bytes()
    try:
        return would_run(repo)
    finally:
        path.write_bytes(original)
        if (repo / "dvc.lock").read_bytes() != before:  # would_run ran the base stage: back from the run-cache
            sh(repo, "dvc", "repro", "--single-item", "base")


def test_2_minimal_reruns(repo):
    assert _with_param(repo, "train.lora.r", 2) == LORA_CHAIN
    assert _with_param(repo, "train.full.lr", 5e-4) == {"tune@full", "train@full", "evaluate@full",
                                                        "interpolate@full", "export@full", "seeds@full", "report"}
    # the model cards quote the eval intervals: a new bootstrap re-exports (ONNX bytes come out identical)
    assert _with_param(repo, "evaluate.bootstrap", 40) == {"base", "evaluate@full", "evaluate@lora",
                                                           "interpolate@full", "interpolate@lora",
                                                           "export@full", "export@lora", "seeds@full", "seeds@lora",
                                                           "report"}
    assert _with_param(repo, "report.examples", 2) == {"report"}
    # the report shows what each export shipped: a tolerance that could change that reruns it too
    assert _with_param(repo, "export.int8_auc_tol", 0.3) == {"export@full", "export@lora", "report"}
    # the exports are the interpolate stage's operating points (export.operating_point: chosen)
    assert _with_param(repo, "interpolate.max_auc_drop", 0.1) == {"interpolate@full", "interpolate@lora",
                                                                  "export@full", "export@lora", "seeds@full",
                                                                  "seeds@lora", "report"}
    # more training seeds: only the seeds stages and the report (#32 point 4)
    assert _with_param(repo, "seeds.n", 2) == {"seeds@full", "seeds@lora", "report"}
    assert _with_param(repo, "export.operating_point", "tuned") == {"export@full", "export@lora", "report"}
    # the full-length check of a searched rate is the train stage's, not the search's: the trials are not rerun
    assert _with_param(repo, "tune.retries", 0) == {
        "train@full", "train@lora", "evaluate@full", "evaluate@lora", "interpolate@full", "interpolate@lora",
        "export@full", "export@lora", "seeds@full", "seeds@lora", "report"}
    everything = {"generate", "prepare", "base", "tune@full", "tune@lora", "train@full", "train@lora",
                  "evaluate@full", "evaluate@lora", "interpolate@full", "interpolate@lora", "export@full", "export@lora",
                  "seeds@full", "seeds@lora", "report"}
    assert _with_param(repo, "generate.n_train", 170) == everything
    assert would_run(repo) == set()


def test_2b_a_reverted_param_restores_from_the_run_cache(repo, baseline):
    """Back to an earlier param set: every stage comes from DVC's run-cache, nothing trains again."""
    adapter = md5(repo / "models/lora/adapter_model.safetensors")
    train_metrics = (repo / "metrics/train/lora.json").read_bytes()
    original = (repo / "params.yaml").read_bytes()
    data = YAML(typ="safe").load(original)
    data["train"]["lora"]["lr"] = 5e-3
    write_params(repo / "params.yaml", data)
    assert ran(sh(repo, "dvc", "repro")) == LORA_CHAIN
    (repo / "params.yaml").write_bytes(original)
    back = sh(repo, "dvc", "repro")
    assert ran(back) == set()
    assert restored(back) == LORA_CHAIN
    assert md5(repo / "models/lora/adapter_model.safetensors") == adapter
    assert (repo / "metrics/train/lora.json").read_bytes() == train_metrics  # the wall time too: not retrained
    assert snapshot(repo) == baseline
    assert json.loads(sh(repo, "dvc", "status", "--json").stdout) == {}


def test_2c_with_a_fixed_lr_a_search_param_retrains_nothing(repo, baseline):
    """train.lora.lr is a number in the tiny params: tune@lora reruns on its params but writes the same record,
    so DVC (comparing the record's hash) trains nothing; only the report, which shows the search params, reruns."""
    original = (repo / "params.yaml").read_bytes()
    data = YAML(typ="safe").load(original)
    data["tune"]["lora"] = [1e-3, 2e-2]
    write_params(repo / "params.yaml", data)
    try:
        assert ran(sh(repo, "dvc", "repro")) == {"tune@lora", "report"}
    finally:
        (repo / "params.yaml").write_bytes(original)
    back = sh(repo, "dvc", "repro")
    assert ran(back) | restored(back) == {"tune@lora", "report"}
    assert snapshot(repo) == baseline


def test_2d_a_method_added_to_the_list_runs_alone_through_every_stage(repo, baseline):
    """#36's done-when on the tiny model: DoRA, IA3 and a LoRA with every other option (PiSSA start, rsLoRA
    scaling, LoRA+ rates, all linear layers) added to train.methods get their own search, training, evaluation,
    interpolation, export and seeds stages and a place in the report; nothing of full or LoRA reruns. Each is
    loaded back through the guard; DoRA's operating point is merged weights (a scaled DoRA adapter is not the
    blend), IA3's and PiSSA's (converted to a plain LoRA) rescaled adapters. Back to two methods: the report
    alone, restored."""
    added = ("dora", "ia3", "mix")
    original = (repo / "params.yaml").read_bytes()
    data = YAML(typ="safe").load(original)
    data["train"]["dora"] = {**data["train"]["lora"], "dora": True}
    data["train"]["ia3"] = {"method": "ia3", "lr": 5e-2, "target_modules": ["key", "value", "ffn_out"],
                            "feedforward_modules": ["ffn_out"]}
    data["train"]["mix"] = {**data["train"]["lora"], "init": "pissa", "rslora": True, "loraplus_ratio": 16,
                            "target_modules": ["all_linear"], "lr": 2e-3}
    data["tune"].update(dora=[1e-3, 1e-2], ia3=[1e-2, 5e-2], mix=[1e-3, 2e-3])
    write_params(repo / "params.yaml", data)
    assert ran(sh(repo, "dvc", "repro")) == {"report"}  # sections alone, not listed: nothing trains
    data["train"]["methods"] = ["full", "lora", *added]
    write_params(repo / "params.yaml", data)
    new = {f"{stage}@{m}" for stage in ("tune", "train", "evaluate", "interpolate", "export", "seeds")
           for m in added}
    try:
        assert ran(sh(repo, "dvc", "repro", timeout=900)) == new | {"report"}
        assert snapshot(repo) == {**baseline, "report": snapshot(repo)["report"]}  # full's and LoRA's: as they were
        from pairtune import models

        assert models.read_manifest(repo / "models/dora")["mode"] == "lora"
        assert json.loads((repo / "models/dora/adapter_config.json").read_text())["use_dora"] is True
        assert models.read_manifest(repo / "models/ia3")["mode"] == "ia3"
        dora_op = models.read_manifest(repo / "models/interpolated/dora")
        assert dora_op["mode"] == "full" and dora_op["merged_from"] == "lora (DoRA)"
        assert (repo / "models/interpolated/ia3/adapter_model.safetensors").exists()
        assert (repo / "models/export/ia3/adapter").is_dir() and not (repo / "models/export/dora/adapter").exists()
        assert "DoRA" in (repo / "models/export/dora/README.md").read_text()
        mix = json.loads((repo / "models/mix/adapter_config.json").read_text())  # PiSSA as PEFT converts it
        assert (mix["r"], mix["init_lora_weights"], mix["use_rslora"]) == (8, True, True)
        assert models.read_manifest(repo / "models/mix")["mode"] == "lora"
        assert (repo / "models/export/mix/adapter").is_dir()
        card = (repo / "models/export/mix/README.md").read_text()
        assert "(PiSSA)" in card and "LoRA+" in card
        for m in added:
            models.load_model(repo / "models" / m)  # the guard: reproduces its probe, differs from the base
            models.load_model(repo / "models/interpolated" / m)  # its operating point, through the guard too
        report = json.loads((repo / "metrics/report.json").read_text())
        for m in added:
            assert f"{m}_vs_full_auc_diff" in report and f"op_{m}_vs_full_retention_diff" in report
        html = (repo / "plots/report.html").read_text()
        assert "base vs full fine-tuning vs LoRA vs dora vs ia3 vs mix" in html
    finally:
        (repo / "params.yaml").write_bytes(original)
        (block,) = doc_blocks("tests/test_pipeline.py::test_2d_a_method_added_to_the_list_runs_alone_through_every_stage")
        sh(repo, "bash", "-c", block)  # docs/methods.md: dropping a method prunes what DVC keeps of it
    back = sh(repo, "dvc", "repro")
    assert ran(back) | restored(back) == {"report"}
    assert snapshot(repo) == baseline
    # as committed: no leftover output, lock entry or .gitignore line of the two methods (DVC's autostage had
    # staged the .gitignore lines it added; prune put the files back)
    sh(repo, "git", "add", "-A")
    assert sh(repo, "git", "status", "--porcelain").stdout.strip() == ""


def test_3_experiment_and_show(repo):
    # train.lora.lr=5e-3 was trained in test_2b: the experiment restores that run from the run-cache
    # (`dvc exp apply` of an earlier setting costs seconds, not a retraining; see test_2b for a fresh one)
    proc = sh(repo, "dvc", "exp", "run", "-n", "lr5e-3", "-S", "train.lora.lr=5e-3")
    assert ran(proc) == set() and restored(proc) == LORA_CHAIN
    shown = json.loads(sh(repo, "dvc", "exp", "show", "--only-changed", "--json").stdout)
    text = json.dumps(shown)
    assert '"lr": 0.005' in text and '"lr": 0.01' in text
    exps = [e for rev in shown for e in (rev.get("experiments") or [])]
    data = exps[0]["revs"][0]["data"]
    lora = data["metrics"]["metrics/evaluate/lora.json"]["data"]["lora"]
    # purity is left out where HDBSCAN finds no cluster (possible on the tiny model), like any undefined value
    assert {"rho", "margin", "cohens_d", "auc", "auc_low", "auc_high", "f1", "fp"} <= set(lora) <= {
        "rho", "margin", "cohens_d", "auc", "auc_low", "auc_high", "f1", "purity", "fp"}
    # every DVC metric column has a short, unique name: no file-path prefixes in `dvc exp show`
    columns = [k for f in data["metrics"].values() for model in f["data"].values() for k in model]
    assert len(data["metrics"]) == 7 and len(columns) <= 3 * 9 + 2 * 2 + 2 * 4
    assert data["params"]["params.yaml"]["data"]["train"]["lora"]["lr"] == 0.005
    # `make compare` (docs/dvc.md, "Compare experiments"): readable in a 160-column terminal, nothing cut to "…"
    drop = ("Created|State|Executor|.*auc_(low|high)|.*/.*|dvclive"
            "|[a-z0-9_]+\\.(cohens_d|f1|fp|margin|purity|search_s|trial_steps_share|trials)$")
    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text()  # the same regexes as make compare's
    assert drop.split("dvclive")[1].replace("$", "$$") in makefile
    table = sh(repo, "env", "COLUMNS=160", "dvc", "exp", "show", "--no-pager", "--only-changed", "--drop", drop).stdout
    columns = sh(repo, "dvc", "exp", "show", "--no-pager", "--only-changed", "--csv").stdout.splitlines()[0]
    assert "…" not in table and "lora.auc" in table and "train.lora.lr" in table, (table, columns)
    assert max(map(len, table.splitlines())) <= 160, table
    assert "lora.cohens_d" in columns and "lora.cohens_d" not in table  # COMPARE_ALL=1 shows it
    # COMPARE_METHODS='full': the other models' metric columns go, the params stay
    cols = "auc|rho|cohens_d|f1|fp|margin|purity|lr|search_s|trial_steps_share|trials|train_s|mb"
    assert f"COMPARE_MODEL_COLS := {cols}\n" in makefile
    only_full = f"|(?!(base|full)\\.)[a-z0-9_]+\\.({cols})$"
    narrow = sh(repo, "dvc", "exp", "show", "--no-pager", "--only-changed", "--csv", "--drop", drop + only_full).stdout
    assert "lora.auc" not in narrow and "train.lora.lr" in narrow, narrow


def test_4_queued_sweep(repo):
    # The queue, its workers and `exp show` work alike whatever the param; a report-only param keeps this test
    # at seconds per experiment (an experiment that retrains is test_3's).
    sh(repo, "dvc", "exp", "run", "--queue", "-S", "report.examples=2,4")
    sh(repo, "dvc", "queue", "start", "--jobs", "1")  # with --jobs 2 and two seconds-long tasks, a worker that
    # found the queue empty stayed up for minutes (DVC 3.67), holding `queue start` and this call open
    status = _wait_for_queue(repo)
    assert status.count("Success") >= 2, status
    shown = json.dumps(json.loads(sh(repo, "dvc", "exp", "show", "--json").stdout))
    assert '"examples": 2' in shown and '"examples": 4' in shown


def _wait_for_queue(repo: Path, env: dict[str, str] | None = None) -> str:
    deadline = time.time() + 240
    while time.time() < deadline:
        status = sh(repo, "dvc", "queue", "status", env=env).stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(3)
    return status


def test_4b_a_queued_experiment_runs_its_own_code(repo, tmp_path):
    """#23: the workspace's src/ is what is installed (PYTHONPATH here, as the editable install of `make
    install`), and it changes after an experiment is queued: the experiment runs the code it was queued with
    (its own copy's src/, which is what DVC hashed for it), not the workspace's."""
    io_py = repo / "src/pairtune/io.py"
    original = io_py.read_text()
    sh(repo, "dvc", "exp", "run", "--queue", "-n", "owncode", "-S", "tune.lora=[0.001,0.03]")
    line = "    return json.dumps(obj, indent=2"
    marked = original.replace(line, '    obj = {**obj, "_workspace_code": 1} if isinstance(obj, dict) else obj\n' + line)
    assert marked != original
    installed = {"PYTHONPATH": str(repo / "src")}
    io_py.write_text(marked)
    try:
        # the marker is live for code run from the workspace: the check below can fail
        sh(repo, "python", "stages/tune.py", "--mode", "lora", "--data", "data/prepared", "--base", "models/base",
           "--out", str(tmp_path / "tune"), "--metrics", str(tmp_path / "tune.json"), env=installed)
        assert "_workspace_code" in (tmp_path / "tune.json").read_text()
        sh(repo, "dvc", "queue", "start", "--jobs", "1", env=installed)
        assert "Success" in _wait_for_queue(repo, installed)
    finally:
        io_py.write_text(original)
    shown = json.loads(sh(repo, "dvc", "exp", "show", "--json").stdout)
    exp = next(e for rev in shown for e in (rev.get("experiments") or []) if e.get("name") == "owncode")
    tune_metrics = exp["revs"][0]["data"]["metrics"]["metrics/tune/lora.json"]["data"]
    # written by the experiment's own io.py: no marker (the rate is whatever the workspace's params said)
    assert set(tune_metrics) == {"lora"} and set(tune_metrics["lora"]) == {"lr", "search_s", "trials"}


def test_5_diffs_between_commits(repo):
    sh(repo, "dvc", "exp", "apply", "lr5e-3")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "lora lr 5e-3")
    from conftest import doc_blocks

    # docs/dvc.md's first block as written, one commit after another (its diffs are checked in detail below)
    (block,) = doc_blocks("tests/test_pipeline.py::test_5_diffs_between_commits")
    proc = subprocess.run(["bash", "-ec", block], cwd=repo, env={**_env(), "BROWSER": "true"}, capture_output=True,
                          text=True, timeout=300)  # BROWSER=true: --open's browser is a no-op here
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    assert "Data and pipelines are up to date" in proc.stdout and "train.lora.lr" in proc.stdout
    assert "lora.auc" in proc.stdout and "dvc_plots" in proc.stdout + proc.stderr
    params = json.loads(sh(repo, "dvc", "params", "diff", "HEAD~1", "HEAD", "--json").stdout)
    assert {k: v for k, v in params["params.yaml"]["train.lora.lr"].items() if k != "diff"} == {"old": 0.01,
                                                                                              "new": 0.005}
    metrics = json.loads(sh(repo, "dvc", "metrics", "diff", "HEAD~1", "HEAD", "--json").stdout)
    assert "lora.auc" in metrics["metrics/evaluate/lora.json"]
    assert "metrics/evaluate/base.json" not in metrics  # the base did not change
    plots = json.loads(sh(repo, "dvc", "plots", "diff", "HEAD~1", "HEAD", "--json").stdout)["data"]
    assert {"ROC (eval)", "Cosine distribution per class (eval)", "Training loss", "Dev AUC per epoch"} <= set(plots)
    roc = plots["ROC (eval)"][0]
    assert roc["revisions"] == ["HEAD~1", "HEAD"] and '"rev": "HEAD~1"' in json.dumps(roc["content"])
    sh(repo, "git", "reset", "-q", "--hard", "HEAD~1")
    sh(repo, "dvc", "checkout", "-q")
    assert would_run(repo) == set()


# Forced here: the stages whose determinism only the pipeline shows. interpolate (its curve) and export (every
# file) have rerun tests of their own (tests/test_interpolation.py, tests/test_export.py); forcing them too
# would add ~40 s of process start-up to the suite.
FORCED = ("generate", "prepare", "base", "train@full", "train@lora", "evaluate@full", "evaluate@lora", "report")


def test_6_determinism(repo, baseline):
    """Rerun warm (`make repro WARM=1`'s way: each stage in a fork of one process that imported torch once) against
    the baseline built cold: the same bytes, so the warm path is tested through DVC here too."""
    proc = sh(repo, sys.executable, "-m", "pairtune.warm", "dvc", "repro", "--force", "--single-item", *FORCED)
    assert ran(proc) == set(FORCED)
    assert f"pairtune.warm: {len(FORCED)} stage(s) started warm" in proc.stderr
    # dvc.lock holds the hash of every output: unchanged means models and adapter are byte-identical too
    assert sh(repo, "git", "diff", "--stat", "dvc.lock").stdout == ""
    now = snapshot(repo)
    for name in METRICS:
        assert now[name] == baseline[name], f"metrics/{name}.json changed on a forced rerun"
    for mode in ("full", "lora"):  # identical except the wall time
        a = json.loads((repo / "metrics" / "train" / f"{mode}.json").read_text())[mode]
        b = json.loads(sh(repo, "git", "show", f"HEAD:metrics/train/{mode}.json").stdout)[mode]
        a.pop("train_s"), b.pop("train_s")
        assert a == b


def _cache_is_sound(repo: Path) -> None:
    files = [p for p in (repo / ".dvc" / "cache" / "files" / "md5").rglob("*") if p.is_file()]
    assert files
    for p in files:
        if not p.name.endswith(".dir"):
            assert md5(p) == p.parent.name + p.name, f"corrupt cache object {p}"


def test_7_interrupted_training_then_rerun(repo, baseline):
    adapter = md5(repo / "models/lora/adapter_model.safetensors")
    proc = subprocess.Popen(["dvc", "repro", "--force", "-s", "train@lora"], cwd=repo, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline and not list((repo / "models").glob(".lora.*.tmp")):
        time.sleep(0.05)
    time.sleep(1.0)  # inside model loading / training
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert json.loads(sh(repo, "dvc", "status", "--json").stdout) != {}  # the killed stage is not marked done
    rerun = sh(repo, "dvc", "repro")
    assert "train@lora" in ran(rerun) | restored(rerun)  # the run-cache may hold this exact run
    assert md5(repo / "models/lora/adapter_model.safetensors") == adapter
    assert snapshot(repo) == baseline
    assert json.loads(sh(repo, "dvc", "status", "--json").stdout) == {}
    # A SIGKILLed stage cannot remove its temp folder; the stage's next run does. Restored from the run-cache,
    # the stage does not run, so the leftover may stay until then: hidden, and ignored by git and DVC.
    assert ".tmp" not in sh(repo, "git", "status", "--porcelain", "--ignored=no").stdout
    _cache_is_sound(repo)
