"""Warm stages: one process imports torch and sentence-transformers once; each stage runs in a fork of it.

A stage that embeds or trains spends ~6 s of its start importing sentence-transformers (torch, transformers'
model code, scikit-learn, pandas), single-threaded, before it does any work: ~30 s of a one-param LoRA
experiment's five such stages, ~60 s of a clean `dvc repro`. `python -m pairtune.warm CMD...` (what
`make repro` and `make exp` run) starts a server that has imported them, then runs CMD (`dvc repro`, `dvc exp
run ...`) with PAIRTUNE_WARM naming the server. Each stage script's first import (stages/_checkout.py) then
hands its argv, working directory, environment and stdin/stdout/stderr to the server, which forks: the child
runs the stage as `python stages/x.py ...` would, in the stage's folder and environment, with this
checkout's pairtune imported afresh (only third-party packages come pre-imported), and its exit status goes
back to the stage's process, which exits with it. DVC sees an ordinary command; outputs are byte-identical.

A stage runs cold (in its own process, as without the server) whenever the server is not there or not ready,
or its environment differs from the server's in anything but DVC's per-stage variables: settings that
libraries read at import (thread counts, ISA caps, offline switches) must be the ones the stage asked for.
The server exits with CMD. It never runs a torch op itself, so no thread pool exists before a fork.
Not used by `dvc repro` typed alone: that runs every stage cold, as before.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ENV = "PAIRTUNE_WARM"  # "<server pid>:<socket path>", set for the command the wrapper runs
KEEP_LOG = "PAIRTUNE_WARM_LOG"  # a file to keep the stages' log in (JSON lines: argv, start, end, status)
CHILD = "PAIRTUNE_WARM_CHILD"  # set in a forked stage (and its subprocesses): never hand over again
# Imported once by the server: what the stages import and take seconds to. Not umap (pairtune.metrics
# imports it with numba's on-disk cache switched on) and not pairtune (each stage imports its checkout's).
PRELOAD = ("torch", "transformers", "sentence_transformers", "peft", "sklearn.metrics", "scipy.stats",
           "onnxruntime", "onnx")
# Environment variables that may differ between the wrapper and a stage: DVC sets its own per stage / run.
VOLATILE = ("PWD", "OLDPWD", "SHLVL", "_", "PS1", "PS2", "PS4", ENV, CHILD)  # DVC sets PS1 for its shell
WAIT_S = 120.0  # how long a stage waits for the server to finish importing (it would spend that importing)
_INT = struct.Struct("!i")


def _interpreter() -> str:
    """Which Python runs: a stage whose `python` is another interpreter or venv (other packages) must not run
    here. sys.prefix, not the executable: a venv's python links to its base interpreter. Its flags too
    (-u, -O, -X ..., -W ...): a fork keeps the server's."""
    flags = f"{tuple(sys.flags)} -X {sorted(sys._xoptions.items())} -W {sys.warnoptions}"  # noqa: SLF001
    return f"{sys.prefix} (Python {sys.version.split()[0]}, flags {flags})"


def _stable(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k not in VOLATILE and not k.startswith("DVC_")}


def _send(conn: socket.socket, payload: dict[str, object], fds: list[int]) -> None:
    data = json.dumps(payload).encode()
    socket.send_fds(conn, [_INT.pack(len(data)) + data], fds)


def _recv(conn: socket.socket) -> tuple[dict[str, object], list[int]]:
    data, fds, _, _ = socket.recv_fds(conn, 1 << 16, 3)
    size = _INT.unpack(data[:4])[0]
    data = data[4:]
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("request cut short")
        data += chunk
    return json.loads(data), fds


def _recv_int(conn: socket.socket) -> int | None:
    data = b""
    while len(data) < 4:
        chunk = conn.recv(4 - len(data))
        if not chunk:
            return None
        data += chunk
    return int(_INT.unpack(data)[0])


# --- the stage's side ------------------------------------------------------------------------------------


def delegate() -> None:
    """Run this stage in the warm server and exit with its status; return (run cold) if that cannot be done."""
    spec = os.environ.get(ENV, "")
    if not spec or os.environ.get(CHILD):
        return
    pid_s, _, path = spec.partition(":")
    if not os.path.isdir(os.path.dirname(path) or "."):
        return  # a stale PAIRTUNE_WARM (its server's folder is gone): cold at once, not after WAIT_S
    deadline = time.monotonic() + WAIT_S
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    while True:
        try:
            conn.connect(path)
            break
        except OSError:
            if time.monotonic() > deadline or not _alive(int(pid_s or 0)):
                conn.close()
                return  # no server (it failed to start, or was stopped): cold
            time.sleep(0.05)
    try:
        _send(conn, {"argv": [str(Path(sys.argv[0]).resolve()), *sys.argv[1:]], "cwd": os.getcwd(),
                     "env": dict(os.environ), "python": _interpreter()}, [0, 1, 2])
        child = _recv_int(conn)
    except OSError:
        child = None
    if not child:  # 0: the server's environment differs from ours (it says where); None: it went away
        differ = _read_rest(conn) if child == 0 else ""
        conn.close()
        if child == 0:
            print(f"pairtune.warm: {differ}: running it cold", file=sys.stderr, flush=True)
        return
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda s, _f, c=child: _signal_group(c, s))  # DVC stopping the stage stops the fork
    status = _recv_int(conn)
    os._exit(1 if status is None else status)


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)  # the fork leads its own process group (its torchrun workers, if any, too)
    except OSError:
        pass


def _read_rest(conn: socket.socket) -> str:
    data = b""
    while chunk := conn.recv(4096):
        data += chunk
    return data.decode(errors="replace")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return pid > 0
    except OSError:
        return False


# --- the server's side -----------------------------------------------------------------------------------


def serve(path: str, log: str) -> None:
    """Import PRELOAD, listen on `path`, fork one child per stage until the parent process is gone."""
    own = _stable(dict(os.environ))  # what a stage's environment must equal, before any import changes it
    before = dict(os.environ)
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass  # an optional package (onnx tools) not installed: the stage imports what it has
    global _BASELINE_THREADS  # noqa: PLW0603 - measured once, after the imports, before any fork
    _BASELINE_THREADS = _native_threads() if sys.platform == "linux" else 0
    # Variables the imports set for themselves (torch: CUDA_MODULE_LOADING, ...): a cold stage has them too.
    added = {k: v for k, v in os.environ.items() if k not in before}
    parent = os.getppid()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path + ".bind")
    os.rename(path + ".bind", path)  # clients connect only once every import above is done
    server.listen(16)
    server.settimeout(1.0)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # the wrapper stops us: through `finally` below
    try:
        _accept(server, own, added, parent, log)
    finally:
        for pid in list(_CHILDREN):  # a stage still running when its command is gone has no one to report to
            _signal_group(pid, signal.SIGKILL)


_CHILDREN: set[int] = set()


def _fork_unsafe() -> str:
    """Why forking this server now would be unsafe, or "" (checked before each fork, not assumed).

    Linux only: macOS frameworks (Accelerate, Objective-C runtime) abort or deadlock in a forked child. No CUDA
    context: a forked child cannot use its parent's. Native threads: the imports start a few (4 after
    sentence-transformers, 5 after onnxruntime, measured on Linux), which a fork leaves behind; torch's
    OpenMP pool is not among them as long as the server runs no torch op, which it never does: the check is
    that no thread started since the imports.
    """
    if sys.platform != "linux":
        return f"fork is not safe on {sys.platform}"
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        return "the warm server holds a CUDA context (a fork cannot use it)"
    if _native_threads() > _BASELINE_THREADS:
        return "the warm server has started a thread pool since its imports (a fork would inherit a broken one)"
    return ""


def _native_threads() -> int:
    """Threads of this process that Python did not start (thread pools of native libraries)."""
    return len(os.listdir("/proc/self/task")) - threading.active_count()


_BASELINE_THREADS = 1 << 30  # set by serve() after its imports (what the imports started; no torch pool)


def _accept(server: socket.socket, own: dict[str, str], added: dict[str, str], parent: int, log: str) -> None:
    while os.getppid() == parent:
        try:
            conn, _ = server.accept()
        except TimeoutError:
            continue
        try:
            _serve_one(server, conn, own, added, log)
        except (OSError, ValueError, KeyError, TypeError) as err:  # a client that vanished or sent nonsense
            print(f"pairtune.warm: a stage's request failed ({err!r}): it runs cold or not at all",
                  file=sys.stderr, flush=True)
            conn.close()


def _serve_one(server: socket.socket, conn: socket.socket, own: dict[str, str], added: dict[str, str], log: str) -> None:
    """Answer one stage: refuse it (its environment differs) or fork it and report its status."""
    conn.settimeout(None)
    fds: list[int] = []
    try:
        req, fds = _recv(conn)
        theirs = _stable(req["env"])  # type: ignore[arg-type]
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    if theirs != own or req.get("python") != _interpreter():
        differ = sorted(k for k in {*own, *theirs} if own.get(k) != theirs.get(k))
        differ += [] if req.get("python") == _interpreter() else [f"the Python: {req.get('python')}"]
        for fd in fds:
            os.close(fd)
        reason = f"this stage's environment differs from the warm server's ({', '.join(differ)})"
        conn.sendall(_INT.pack(0) + reason.encode())
        conn.close()
        return
    unsafe = _fork_unsafe()
    if unsafe:
        for fd in fds:
            os.close(fd)
        conn.sendall(_INT.pack(0) + unsafe.encode())
        conn.close()
        return
    sys.stdout.flush()
    sys.stderr.flush()
    server_pid = os.getpid()
    pid = os.fork()
    if pid == 0:
        server.close()
        conn.close()
        _run_child({**req, "env": {**added, **req["env"]}}, fds, server_pid)  # type: ignore[dict-item]
    try:
        os.setpgid(pid, pid)  # as the child does: whichever runs first, a kill of its group reaches it
    except OSError:
        pass
    _CHILDREN.add(pid)
    for fd in fds:
        os.close(fd)
    try:
        conn.sendall(_INT.pack(pid))
    except OSError:  # the stage's process went away before it heard of its fork: nobody waits for that fork
        _signal_group(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        _CHILDREN.discard(pid)
        raise
    threading.Thread(target=_report, args=(pid, conn, req["argv"], time.time(), log), daemon=True).start()


def _report(pid: int, conn: socket.socket, argv: list[str], start: float, log: str) -> None:
    """Wait for the stage's fork, send its exit status back, log it (argv, start, end, status). If the stage's
    own process goes away first (killed: SIGKILL cannot be forwarded), the fork is killed with it: nothing may
    write a stage's outputs after DVC has given up on it."""
    import select

    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        readable, _, _ = select.select([conn], [], [], 0.2)
        if readable and not conn.recv(1):  # EOF: the client is gone
            _signal_group(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            break
    _CHILDREN.discard(pid)
    code = os.waitstatus_to_exitcode(status)
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"argv": argv, "start": start, "end": time.time(), "status": code}) + "\n")
    try:
        conn.sendall(_INT.pack(code if code >= 0 else 128 - code))  # killed by signal N: 128 + N, as a shell
    except OSError:
        pass
    conn.close()


def _die_with_parent(parent: int) -> None:
    """Linux: the kernel sends this process SIGKILL when the server dies, even by SIGKILL (no orphan stage goes
    on writing outputs after DVC gave up on it)."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the server died before prctl took effect
        os._exit(137)


def _run_child(req: dict[str, object], fds: list[int], server_pid: int) -> None:
    """Become the stage: its stdio, folder, environment and argv; this checkout's pairtune, imported afresh."""
    import runpy
    import traceback

    code = 1
    try:
        os.setpgid(0, 0)  # its own group: signals and a kill reach its subprocesses (torchrun) too
        _die_with_parent(server_pid)
        # As a cold stage's interpreter: Ctrl-C raises KeyboardInterrupt (finally blocks, atomic_dir clean-up
        # run), SIGTERM and SIGHUP end the process.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        argv = [str(a) for a in req["argv"]]  # type: ignore[union-attr]
        os.chdir(str(req["cwd"]))
        os.environ.clear()
        os.environ.update(req["env"])  # type: ignore[arg-type]
        os.environ[CHILD] = "1"
        for name in [m for m in sys.modules if m in ("pairtune", "_checkout") or m.startswith("pairtune.")]:
            del sys.modules[name]
        sys.argv = argv
        sys.path[0] = str(Path(argv[0]).parent)
        runpy.run_path(argv[0], run_name="__main__")
        code = 0
    except SystemExit as exit_:
        if exit_.code is None or isinstance(exit_.code, int):
            code = exit_.code or 0
        else:
            print(exit_.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001 (whatever the stage raised, as Python would print it)
        traceback.print_exc()
    finally:
        import atexit

        atexit._run_exitfuncs()  # noqa: SLF001 - as a cold stage's interpreter would at exit; os._exit skips them
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)


def run(cmd: list[str]) -> int:
    """Run `cmd` with a warm server beside it; return its exit status. The server stops with it."""
    tmp = tempfile.mkdtemp(prefix="pairtune-warm-")
    path, log = os.path.join(tmp, "socket"), os.path.join(tmp, "stages.jsonl")
    # Its own session: a Ctrl-C reaches each stage through the stage's process (which forwards it), not the
    # server, which would otherwise kill every stage at once.
    server = subprocess.Popen([sys.executable, "-m", "pairtune.warm", "--serve", path, "--log", log],
                              stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        code = _wait_through_interrupts(subprocess.Popen(cmd, env={**os.environ, ENV: f"{server.pid}:{path}"}))
    finally:
        server.terminate()
        server.wait()
        warm = Path(log).read_text(encoding="utf-8").count("\n") if Path(log).exists() else 0
        if os.environ.get(KEEP_LOG) and Path(log).exists():
            shutil.copyfile(log, os.environ[KEEP_LOG])
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"pairtune.warm: {warm} stage(s) started warm", file=sys.stderr)
    return code


def _wait_through_interrupts(proc: subprocess.Popen) -> int:
    """Wait for `proc` as a shell would. A Ctrl-C reaches it from the terminal (same process group); it is sent
    on by hand when the interrupt came to us alone. Either way we keep waiting, so DVC finishes its own
    interrupt handling (stage clean-up, lock release, experiment bookkeeping) instead of being killed
    (subprocess.call SIGKILLs its child 0.25 s after an interrupt)."""
    while True:
        try:
            return proc.wait()
        except KeyboardInterrupt:
            if os.getpgid(proc.pid) != os.getpgrp() or not os.isatty(0):
                proc.send_signal(signal.SIGINT)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--serve"]:
        serve(args[1], args[3])
        return
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        raise SystemExit("usage: python -m pairtune.warm CMD... (e.g. dvc repro, dvc exp run -S train.lora.r=16)")
    sys.exit(run(args))


if __name__ == "__main__":
    main()
