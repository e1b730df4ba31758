"""Processes on this host: is it alive, stop it (and its group), who holds a lock file.

Every pid and process-group helper of ecod-jobs is here: the lease's and the
local job manager's liveness checks, stopping a run's Snakemake (``cancel``,
and ``run`` when it is told to stop), the chunk runner's item groups, and
finding the processes that still hold a dead run's chunk locks. Linux's
``/proc`` is read where it tells more than ``kill(pid, 0)`` (zombies, process
start times, process groups); without it, existence is all that is checked.
Standard library only: the chunk runner imports it on compute nodes.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import time
from pathlib import Path

KILL_WAIT = 5.0  # seconds between SIGTERM and SIGKILL of a group, as SLURM's KillWait

_PROC = Path("/proc")


def proc_stat(pid: int) -> tuple[int, str, int] | None:
    """(start time in clock ticks, state letter, process group) of a live pid, from /proc."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[19]), fields[0], int(fields[2])


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks (with the pid, names one process for good)."""
    return (proc_stat(pid) or (None,))[0]


def process_alive(pid: int | None, start: int | None = None) -> bool:
    """The process runs (not a zombie awaiting its reaper) and, given ``start``, is the
    same process (its start time matches: not another that reused the pid)."""
    if not pid:
        return False
    stat = proc_stat(pid)
    if stat is None:
        if (_PROC / "self/stat").exists():
            return False
        try:  # no /proc (not Linux): existence is all we can check
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    started, state, _ = stat
    return state not in ("Z", "X") and (start is None or started == start)


def pid_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    return process_alive(pid)


def is_snakemake(pid: int) -> bool:
    """The pid is (still) a Snakemake process, not one that reused a recorded pid."""
    try:
        return b"snakemake" in (_PROC / str(pid) / "cmdline").read_bytes()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc to tell: trust the pid
        return True


def group_alive(pgid: int) -> bool:
    """Any non-zombie process left in the group (orphans' zombies may linger unreaped)."""
    if not (_PROC / "self/stat").exists():
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    for entry in _PROC.iterdir():
        if entry.name.isdigit():
            stat = proc_stat(int(entry.name))
            if stat is not None and stat[2] == pgid and stat[1] not in ("Z", "X"):
                return True
    return False


def signal_group(pgid: int, sig: int) -> None:
    """Send ``sig`` to the process group, if it is still there."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def kill_group(pgid: int, kill_wait: float = KILL_WAIT) -> None:
    """SIGTERM the process group, then SIGKILL what is left after ``kill_wait`` seconds."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + kill_wait
    while time.monotonic() < deadline:
        if not group_alive(pgid):
            return
        time.sleep(0.05)
    signal_group(pgid, signal.SIGKILL)


# --------------------------------------------------------------------------- stopping a workflow

STOP_STEPS: tuple[tuple[signal.Signals, float], ...] = (
    (signal.SIGINT, 30),  # as Ctrl-C: Snakemake cancels its SLURM jobs and runs onerror
    (signal.SIGTERM, 10),
    (signal.SIGKILL, 10),  # Snakemake waiting for missing outputs ignores both
)


def stop_workflow(pid: int, steps: tuple[tuple[signal.Signals, float], ...] = STOP_STEPS) -> list[str]:
    """Stop a Snakemake process and, when it leads one, its whole process group (its local
    jobs): each signal in turn, waiting its bounded time for everything to be gone.

    Returns the signals sent, e.g. ``['SIGINT']``, or ``['SIGINT', 'SIGTERM', 'SIGKILL']``
    when the first two were ignored; ``[]`` when it was already gone.
    """
    try:
        group = os.getpgid(pid) == pid
    except ProcessLookupError:
        return []

    def alive() -> bool:
        return group_alive(pid) if group else pid_alive(pid)

    sent: list[str] = []
    for sig, wait in steps:
        if not alive():
            break
        try:
            os.killpg(pid, sig) if group else os.kill(pid, sig)
        except ProcessLookupError:
            break
        sent.append(sig.name)
        deadline = time.monotonic() + wait
        while alive() and time.monotonic() < deadline:
            time.sleep(0.2)
    return sent


def describe_stop(sent: list[str]) -> str:
    """``with SIGINT``; ``with SIGKILL after SIGINT and SIGTERM were ignored``."""
    if not sent:
        return "already gone"
    if len(sent) == 1:
        return f"with {sent[0]}"
    return f"with {sent[-1]} after {' and '.join(sent[:-1])} {'was' if len(sent) == 2 else 'were'} ignored"


# --------------------------------------------------------------------------- lock holders


def lock_free(path: Path) -> bool:
    """Nobody holds an flock on the file (a missing file is free)."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError:  # no locking on this filesystem: nothing can be holding it either
        return True
    finally:
        os.close(fd)  # closing drops our lock again


def lock_holders(path: Path) -> list[int]:
    """Processes on this host with the file open (other than this one)."""
    target = os.path.realpath(path)
    holders = []
    for proc in _PROC.iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            fds = list((proc / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) == target:
                    holders.append(int(proc.name))
                    break
            except OSError:
                continue
    return holders


def stop_lock_holders(paths: list[Path], grace: float, timeout: float) -> tuple[int, list[Path]]:
    """SIGTERM every process on this host holding one of the locks, SIGKILL those left after
    ``grace`` seconds, and wait up to ``timeout`` for the locks to be free. Returns the
    number of processes signalled and the locks still held (by processes elsewhere)."""
    held = [p for p in paths if not lock_free(p)]
    stopped: set[int] = set()
    start = time.monotonic()
    for sig, until in ((signal.SIGTERM, grace), (signal.SIGKILL, timeout)):
        for path in held:
            for pid in lock_holders(path):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
                    stopped.add(pid)
        while held and time.monotonic() - start < until:
            held = [p for p in held if not lock_free(p)]
            if held:
                time.sleep(0.2)
    return len(stopped), held
