"""pairtune.warm: stages run in forks of one process that imported torch and sentence-transformers once.

A real server (python -m pairtune.warm --serve) and real stage scripts in subprocesses; the DVC side (the
wrapper around `dvc repro`, every stage warm, dvc.lock unchanged) is tests/test_pipeline.py's test_6.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT

from pairtune.warm import WAIT_S


def _env(**extra: str) -> dict[str, str]:
    # PYTEST_CURRENT_TEST changes from test to test: a server started by a fixture would differ from each test
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PAIRTUNE_WARM", "PYTEST_CURRENT_TEST"))}
    return {**env, "HF_HUB_OFFLINE": "1", **extra}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A warm server for this module's tests; yields the PAIRTUNE_WARM value naming it."""
    tmp = tmp_path_factory.mktemp("warm")
    path, log = tmp / "socket", tmp / "stages.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "pairtune.warm", "--serve", str(path), "--log", str(log)],
                            env=_env(), start_new_session=True)
    deadline = time.time() + 120
    while not path.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert path.exists(), "the warm server did not start"
    yield {"PAIRTUNE_WARM": f"{proc.pid}:{path}"}, log
    proc.terminate()
    proc.wait(30)


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _evaluate(root: Path, tag: str, env: dict[str, str], model: str = "models/lora") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "stages/evaluate.py"), "--model", model, "--data",
                           "data/prepared", "--metrics", f"metrics/warm_{tag}.json", "--plots", f"plots/warm_{tag}"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=300)


def _warm_runs(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_a_warm_stage_writes_the_bytes_a_cold_one_does(trained, server):
    env, log = server
    before = len(_warm_runs(log))
    cold = _evaluate(trained, "cold", _env())
    warm = _evaluate(trained, "warm", _env(**env))
    assert cold.returncode == 0 and warm.returncode == 0, warm.stderr[-2000:]
    runs = _warm_runs(log)[before:]
    assert [Path(r["argv"][0]).name for r in runs] == ["evaluate.py"] and runs[0]["status"] == 0
    assert _digests(trained / "plots/warm_warm") == _digests(trained / "plots/warm_cold")
    assert (trained / "metrics/warm_warm.json").read_text() == (trained / "metrics/warm_cold.json").read_text()
    assert "INFO pairtune.models: loaded lora model" in warm.stderr  # the fork's stderr is the stage's


def test_bad_input_fails_warm_as_it_does_cold(trained, server):
    env, _ = server
    proc = _evaluate(trained, "bad", _env(**env), model="models/nope")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: models/nope/pairtune.json: missing")
    assert not (trained / "metrics/warm_bad.json").exists() and not (trained / "plots/warm_bad").exists()


def test_a_different_environment_runs_cold_and_says_why(trained, server):
    """Libraries read settings at import (thread counts, ISA caps): a stage that asks for other ones must not
    run in a process that imported them under the server's."""
    env, log = server
    before = len(_warm_runs(log))
    proc = _evaluate(trained, "otherenv", _env(**env, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0
    assert "differs from the warm server's (OMP_NUM_THREADS): running it cold" in proc.stderr
    assert len(_warm_runs(log)) == before


def test_no_server_means_cold_at_once(trained):
    start = time.perf_counter()
    proc = _evaluate(trained, "noserver", _env(PAIRTUNE_WARM="999999999:/nonexistent/socket"))
    assert proc.returncode == 0 and "pairtune.warm" not in proc.stderr
    assert (trained / "metrics/warm_noserver.json").exists()
    # no wait for a server that is not there: a cold stage takes seconds, the wait would be WAIT_S
    assert time.perf_counter() - start < WAIT_S / 4


def test_a_stale_setting_whose_pid_is_alive_runs_cold_at_once(trained):
    """PAIRTUNE_WARM left in a shell after its server went: the pid may belong to another live process."""
    start = time.perf_counter()
    proc = _evaluate(trained, "stale", _env(PAIRTUNE_WARM=f"{os.getpid()}:/nonexistent/pairtune-warm/socket"))
    assert proc.returncode == 0 and time.perf_counter() - start < WAIT_S / 4


SLOW = """
import _checkout  # noqa: F401
import os, sys, time
from pathlib import Path
Path(sys.argv[1]).write_text(str(os.getpid()))
time.sleep(20)
Path(sys.argv[2]).write_text("written after its stage was killed")
"""


def test_killing_a_stage_kills_its_fork(tmp_path, server):
    """SIGKILL cannot be forwarded: the server sees the stage's process go and kills the fork, so nothing
    writes a stage's outputs after DVC gave up on it."""
    env, _ = server
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages/_checkout.py").write_text((ROOT / "stages/_checkout.py").read_text())
    (tmp_path / "src").symlink_to(ROOT / "src")
    (tmp_path / "stages/slow.py").write_text(SLOW)
    pid_file, late = tmp_path / "pid", tmp_path / "late"
    client = subprocess.Popen([sys.executable, str(tmp_path / "stages/slow.py"), str(pid_file), str(late)],
                              env=_env(**env), start_new_session=True)
    deadline = time.time() + 60
    while not pid_file.exists() and time.time() < deadline:
        time.sleep(0.05)
    fork = int(pid_file.read_text())
    assert fork != client.pid  # it ran in the server's fork, not in the process DVC started
    os.killpg(client.pid, signal.SIGKILL)
    client.wait()
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            os.kill(fork, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"fork {fork} outlived its stage")
    assert not late.exists()


def test_another_python_runs_cold(trained, server, tmp_path):
    """A stage whose `python` is another interpreter or venv has other packages: it must not run in the
    server's. A venv without pairtune's stack: the stage hands over, is refused, and fails on its own imports."""
    env, log = server
    before = len(_warm_runs(log))
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "venv")], check=True)
    proc = subprocess.run([str(tmp_path / "venv/bin/python"), str(ROOT / "stages/evaluate.py"), "--model",
                           "models/lora", "--data", "data/prepared", "--metrics", "metrics/warm_venv.json",
                           "--plots", "plots/warm_venv"], cwd=trained, env=_env(**env), capture_output=True,
                          text=True, timeout=120)
    assert f"differs from the warm server's (the Python: {tmp_path / 'venv'} (Python" in proc.stderr
    assert proc.returncode != 0 and len(_warm_runs(log)) == before


def _stage_dir(tmp_path: Path, name: str, code: str) -> Path:
    """A stages/ folder with _checkout.py (which hands the stage to the server) and one script."""
    (tmp_path / "stages").mkdir(exist_ok=True)
    (tmp_path / "stages/_checkout.py").write_text((ROOT / "stages/_checkout.py").read_text())
    if not (tmp_path / "src").exists():
        (tmp_path / "src").symlink_to(ROOT / "src")
    (tmp_path / "stages" / name).write_text(code)
    return tmp_path / "stages" / name


def _wait_for(path: Path, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while not path.exists() and time.time() < deadline:
        time.sleep(0.05)
    assert path.exists(), f"{path} never appeared"


def _gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def _start_server(tmp: Path) -> tuple[subprocess.Popen, dict[str, str], Path]:
    path, log = tmp / "socket", tmp / "stages.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "pairtune.warm", "--serve", str(path), "--log", str(log)],
                            env=_env(), start_new_session=True)
    _wait_for(path, 120)
    return proc, {"PAIRTUNE_WARM": f"{proc.pid}:{path}"}, log


def test_a_vanished_or_garbled_client_costs_only_itself(trained, server):
    """A client that hangs up mid-handshake, or sends a request without its environment, is dropped; the
    server keeps serving (it used to raise out of its accept loop and kill every running stage)."""
    import socket

    from pairtune import warm

    env, log = server
    path = env["PAIRTUNE_WARM"].partition(":")[2]
    for payload in (b"\x00\x00\x10\x00{\"argv", None):
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(path)
        if payload is None:
            warm._send(conn, {"argv": ["x"], "cwd": "/"}, [0, 1, 2])  # no "env": KeyError in the server
            assert warm._recv_int(conn) is None  # dropped, not answered
        else:
            conn.sendall(payload)
        conn.close()
    before = len(_warm_runs(log))
    proc = _evaluate(trained, "aftergarble", _env(**env))
    assert proc.returncode == 0 and len(_warm_runs(log)) == before + 1


def test_a_killed_server_takes_its_forks(tmp_path):
    """SIGKILL to the server (no clean-up of its own can run): the kernel kills each fork (PDEATHSIG)."""
    proc, env, _ = _start_server(tmp_path)
    script = _stage_dir(tmp_path, "slow.py", SLOW)
    pid_file, late = tmp_path / "pid", tmp_path / "late"
    client = subprocess.Popen([sys.executable, str(script), str(pid_file), str(late)], env=_env(**env),
                              start_new_session=True)
    _wait_for(pid_file)
    fork = int(pid_file.read_text())
    assert fork != client.pid
    proc.kill()
    proc.wait()
    assert _gone(fork), f"fork {fork} outlived its server"
    client.wait(30)
    assert not late.exists()


CLEANUP = """
import _checkout  # noqa: F401
import atexit, os, sys, time
from pathlib import Path
atexit.register(lambda: Path(sys.argv[2]).write_text("atexit ran"))
try:
    Path(sys.argv[1]).write_text(str(os.getpid()))
    time.sleep(0 if len(sys.argv) > 3 else 30)
finally:
    Path(sys.argv[1] + ".finally").write_text("finally ran")
"""


def test_ctrl_c_and_exit_run_a_warm_stage_s_clean_up(tmp_path, server):
    """As in a cold stage: SIGINT raises KeyboardInterrupt in the fork (finally blocks run: atomic_dir's
    clean-up), and atexit handlers run at exit."""
    env, _ = server
    script = _stage_dir(tmp_path, "cleanup.py", CLEANUP)
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "quick"), str(tmp_path / "quick.atexit"),
                           "now"], env=_env(**env), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert int((tmp_path / "quick").read_text()) != 0 and (tmp_path / "quick.atexit").exists()
    client = subprocess.Popen([sys.executable, str(script), str(tmp_path / "pid"), str(tmp_path / "atexit")],
                              env=_env(**env), start_new_session=True, stderr=subprocess.PIPE, text=True)
    _wait_for(tmp_path / "pid")
    assert int((tmp_path / "pid").read_text()) != client.pid  # it runs in a fork
    client.send_signal(signal.SIGINT)  # what DVC does to a stage on Ctrl-C
    _, err = client.communicate(timeout=30)
    assert client.returncode != 0 and "KeyboardInterrupt" in err
    assert (tmp_path / "pid.finally").exists() and (tmp_path / "atexit").exists()


INTERRUPTED = """
import signal, sys, time
from pathlib import Path
def stop(*_):
    time.sleep(1)  # bookkeeping longer than subprocess.call's 0.25 s grace before its SIGKILL
    Path(sys.argv[1]).write_text("finished its interrupt handling")
    sys.exit(130)
signal.signal(signal.SIGINT, stop)
Path(sys.argv[1] + ".started").write_text("")
time.sleep(60)
"""


def _as_from_a_terminal() -> None:
    """SIGINT as a terminal's shell starts a command with. A CI runner may start the tests with SIGINT ignored
    (a background job), which every child inherits and Python then leaves ignored: the wrapper would never hear
    the Ctrl-C this test sends (it timed out so in CI), as a backgrounded `make repro` rightly does not."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_reaches_the_command_and_is_waited_for(tmp_path):
    """Ctrl-C under `make repro`: the command (dvc) gets SIGINT and the wrapper waits for it to finish its own
    interrupt handling, then exits with its status (it used to SIGKILL dvc 0.25 s later)."""
    (tmp_path / "cmd.py").write_text(INTERRUPTED)
    mark = tmp_path / "mark"
    wrapper = subprocess.Popen([sys.executable, "-m", "pairtune.warm", sys.executable, str(tmp_path / "cmd.py"),
                                str(mark)], env=_env(), start_new_session=True, stdin=subprocess.DEVNULL,
                               preexec_fn=_as_from_a_terminal)
    _wait_for(tmp_path / "mark.started", 120)
    wrapper.send_signal(signal.SIGINT)  # to the wrapper alone: it sends it on
    assert wrapper.wait(60) == 130
    assert mark.read_text() == "finished its interrupt handling"


def test_other_interpreter_flags_run_cold(tmp_path, server):
    """A fork keeps the server's interpreter flags: a stage run as `python -W error ...` must run cold."""
    env, log = server
    script = _stage_dir(tmp_path, "flags.py", "import _checkout  # noqa: F401\nimport sys\nprint(sys.warnoptions)\n")
    before = len(_warm_runs(log))
    proc = subprocess.run([sys.executable, "-W", "error::DeprecationWarning", str(script)], env=_env(**env),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "['error::DeprecationWarning']" in proc.stdout
    assert "running it cold" in proc.stderr and "flags" in proc.stderr and len(_warm_runs(log)) == before


def test_fork_is_refused_where_it_is_unsafe(monkeypatch):
    """Checked before each fork, not assumed: another OS, a started thread pool."""
    from pairtune import warm

    monkeypatch.setattr(warm, "_BASELINE_THREADS", warm._native_threads())
    assert warm._fork_unsafe() == ""
    monkeypatch.setattr(warm, "_BASELINE_THREADS", warm._native_threads() - 1)
    assert "thread pool" in warm._fork_unsafe()
    monkeypatch.setattr(warm.sys, "platform", "darwin")
    assert warm._fork_unsafe() == "fork is not safe on darwin"
