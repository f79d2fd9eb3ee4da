"""Processes of a peer bench: started in their own process groups, their output timestamped,
the peak memory of a process tree, and every group killed at the end (or at exit).

A bench script imports this as ``from _peer_procs import ...`` (its own folder is on ``sys.path``).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path


class BenchError(RuntimeError):
    """A run that could not be measured; the message says which step failed and where its log is."""


#: every process group started and not yet reaped, killed at exit whatever happened
_LIVE: set[subprocess.Popen] = set()


def _kill_group(proc: subprocess.Popen, grace: float = 3.0) -> None:
    """SIGTERM the process's group, then SIGKILL it if it is still there after ``grace`` s."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
            with contextlib.suppress(ProcessLookupError):  # the leader exited; members of its group may live on
                os.killpg(proc.pid, signal.SIGKILL)
            break
        except subprocess.TimeoutExpired:
            continue
    _LIVE.discard(proc)


@atexit.register
def kill_all() -> None:
    """Kill every process group this bench started that is still alive."""
    for proc in list(_LIVE):
        _kill_group(proc, grace=1.0)


class Lines(threading.Thread):
    """Reads a process's output line by line into its log file, keeping (time.time(), line)."""

    def __init__(self, proc: subprocess.Popen, log: Path) -> None:
        super().__init__(daemon=True, name=f"lines-{proc.pid}")
        self.proc, self.log, self.lines = proc, log, []  # type: ignore[var-annotated]
        self.start()

    def run(self) -> None:
        assert self.proc.stdout is not None
        with self.log.open("w", encoding="utf-8") as out:
            for line in self.proc.stdout:
                self.lines.append((time.time(), line.rstrip("\n")))
                out.write(line)
                out.flush()

    def stamps(self, matches: Callable[[str], bool]) -> list[float]:
        """When each line that ``matches`` arrived."""
        return [t for t, line in self.lines if matches(line)]


def start(cmd: Sequence[str], cwd: Path, log: Path, env: Mapping[str, str] | None = None) -> tuple[subprocess.Popen, Lines]:
    """Start ``cmd`` in a new process group, its stdout+stderr read by a :class:`Lines`."""
    proc = subprocess.Popen(
        list(cmd), cwd=cwd, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", start_new_session=True,
    )
    _LIVE.add(proc)
    return proc, Lines(proc, log)


def stop(procs: Sequence[subprocess.Popen]) -> None:
    """Kill the process groups of ``procs``, then any descendant that had moved to a group or
    session of its own (Flower's SuperExec does) and outlived its parent's exit."""
    tree = _children()
    descendants: dict[int, str] = {}
    todo = [proc.pid for proc in procs]
    while todo:
        children = tree.get(todo.pop(), [])
        descendants.update((pid, cmdline(pid)) for pid in children)
        todo += children
    for proc in procs:
        _kill_group(proc)
    for pid, line in descendants.items():
        if line and cmdline(pid) == line:  # still the same process, not a new one with its pid
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


def wait_all(procs: Mapping[str, subprocess.Popen], deadline: float, logs: Path, first: str) -> None:
    """Wait until every process exits; raise at the deadline or as soon as one fails.

    ``first`` is the aggregator: when it exits cleanly the others get a few seconds to follow."""
    while True:
        codes = {name: proc.poll() for name, proc in procs.items()}
        failed = [name for name, code in codes.items() if code not in (None, 0)]
        if failed:
            raise BenchError(f"{failed[0]} exited with {codes[failed[0]]}; see {logs / (failed[0] + '.log')}")
        if all(code == 0 for code in codes.values()):
            return
        if codes[first] == 0:
            deadline = min(deadline, time.time() + 20.0)
        if time.time() > deadline:
            late = [name for name, code in codes.items() if code is None]
            raise BenchError(f"{', '.join(late)} still running at the deadline; see the logs in {logs}")
        time.sleep(0.1)


def run_step(cmd: Sequence[str], cwd: Path, log: Path, env: Mapping[str, str] | None = None, timeout: float = 300.0) -> None:
    """Run one setup command to its end; raise a :class:`BenchError` naming it if it fails."""
    with log.open("a", encoding="utf-8") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        proc = subprocess.Popen(list(cmd), cwd=cwd, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        _LIVE.add(proc)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            _kill_group(proc, grace=1.0)
    if code != 0:
        what = "timed out" if code is None else f"exited with {code}"
        raise BenchError(f"`{' '.join([Path(cmd[0]).name, *cmd[1:]])}` {what}; see {log}")


def _status_kb(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children() -> dict[int, list[int]]:
    """parent pid -> child pids, of every process now alive."""
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as stat:
                    parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            tree.setdefault(parent, []).append(int(entry))
    return tree


def cmdline(pid: int) -> str:
    """A process's command line, its arguments joined by spaces ('' once it is gone)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as raw:
            return raw.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class TreePeak(threading.Thread):
    """The peak memory of a process tree: the sum over its processes of each one's VmHWM (its
    own peak RSS), read every ``interval`` s while it lives. For a tree of one process this is
    that process's VmHWM; for several it bounds the tree's peak from above (their peaks may
    not coincide). ``roots`` gives the tree's root pids (it may change as processes start)."""

    def __init__(self, roots: Callable[[], Sequence[int]], interval: float = 0.05) -> None:
        super().__init__(daemon=True, name="tree-peak")
        self.roots, self.interval = roots, interval
        self.hwm_kb: dict[int, int] = {}
        self.names: dict[int, str] = {}
        self._halt = threading.Event()
        self.start()

    def run(self) -> None:
        while not self._halt.is_set():
            tree = _children()
            todo, seen = list(self.roots()), set()
            while todo:
                pid = todo.pop()
                if pid in seen:
                    continue
                seen.add(pid)
                todo.extend(tree.get(pid, ()))
                hwm = _status_kb(pid, "VmHWM")
                if hwm:
                    self.hwm_kb[pid] = max(self.hwm_kb.get(pid, 0), hwm)
                    self.names.setdefault(pid, cmdline(pid)[:80])
            self._halt.wait(self.interval)

    def stop(self) -> float:
        """Stop sampling; the tree's peak in MB."""
        self._halt.set()
        self.join(timeout=2.0)
        return sum(self.hwm_kb.values()) / 1024.0


def children_matching(parent: int, text: str) -> list[int]:
    """The children of ``parent`` whose command line contains ``text``."""
    return [pid for pid in _children().get(parent, []) if text in cmdline(pid)]
