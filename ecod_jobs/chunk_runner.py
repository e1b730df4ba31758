"""Run one chunk: every item of its manifest through the job type's command.

    python -m ecod_jobs.chunk_runner --run-dir DIR --chunk c00042

This is what a SLURM array task (or a local core) executes; it never touches
PostgreSQL. An item that fails (non-zero exit, missing input, its own timeout)
is recorded as an error and the chunk goes on; the chunk itself fails (exit
non-zero) only when it cannot work at all (unreadable manifest, environment
modules that do not load, output directory not writable) or when it is killed
(time limit, memory, cancel), in which case the items finished so far are
still in ``{chunk}.partial.jsonl``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import json
import os
import resource
import shlex
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .gates import MetricsError, parse_metrics
from .layout import RunLayout, read_jsonl, write_atomic, write_jsonl_atomic
from .plan_file import Plan, chunk_items, item_template_values, render_output
from .processes import kill_group, signal_group

STDERR_TAIL = 2000
_current: subprocess.Popen[bytes] | None = None  # the running item, until its end is known
_stop = 0  # the stop signal received while an item was in hand, 0 if none


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def scheduler_ids(environ: Mapping[str, str]) -> dict[str, str | None]:
    """SLURM's ids for this process: job id (``A_T`` for array tasks), array job and task."""
    array_job = environ.get("SLURM_ARRAY_JOB_ID")
    task = environ.get("SLURM_ARRAY_TASK_ID")
    job = environ.get("SLURM_JOB_ID")
    return {
        "slurm_job_id": f"{array_job}_{task}" if array_job and task else job,
        "slurm_array_job_id": array_job,
        "slurm_array_task_id": task,
        "node": environ.get("SLURMD_NODENAME") or socket.gethostname(),
    }


def check_task(environ: Mapping[str, str], run_id: str, chunk: str) -> str | None:
    """None when this process may run ``chunk`` of ``run_id``; otherwise why not.

    A SLURM array task of the ``ecod-slurm`` executor runs a script written for it,
    which exports the task's index and the job's wildcards (``ECOD_JOBS_TASK_INDEX``,
    ``ECOD_JOBS_TASK_RUN``, ``ECOD_JOBS_TASK_CHUNK``). A task that runs another task's
    script, or a command for another chunk (the SLURM plugin 2.8.0's large arrays ran
    every task as the first chunk), must not run: it would run that chunk's items
    again and leave its own.
    """
    ids = scheduler_ids(environ)
    want_index, task_index = environ.get("ECOD_JOBS_TASK_INDEX"), ids["slurm_array_task_id"]
    if want_index and task_index and want_index != task_index:
        return (
            f"SLURM task {ids['slurm_job_id']} ran the script of array task {want_index} (chunk {chunk}):"
            " the array submission is broken"
        )
    want_chunk, want_run = environ.get("ECOD_JOBS_TASK_CHUNK"), environ.get("ECOD_JOBS_TASK_RUN")
    if (want_chunk and want_chunk != chunk) or (want_run and want_run != run_id):
        task = ids["slurm_job_id"]
        return (
            f"{f'SLURM task {task}' if task else 'a task'} was submitted for chunk {want_chunk or chunk}"
            f"{f' of run {want_run}' if want_run else ''} but was told to run chunk {chunk} of run {run_id}:"
            " the array submission is broken"
        )
    return None


def render_command(template: str, values: Mapping[str, Any], out: Mapping[str, str] | None = None) -> str:
    """Substitute placeholders shell-quoted: a value is always one literal argument.
    ``out``: the paths ``{out[FILE_TYPE]}`` names."""
    quoted = {k: shlex.quote("" if v is None else str(v)) for k, v in values.items()}
    return template.format(**quoted, out={k: shlex.quote(v) for k, v in (out or {}).items()})


METRICS_ENV = "ECOD_JOBS_METRICS"


def item_outputs(plan: Plan, item: Mapping[str, Any]) -> dict[str, str]:
    """Paths (relative to the base path) of the outputs the command may name: its own and
    its upstream stages'."""
    values = item_template_values(
        item["process_id"], item.get("protein_id"), plan.batch_id, item.get("relative_path")
    )
    return {ft: render_output(template, values) for ft, template in plan.out_templates.items()}


def item_command(plan: Plan, item: Mapping[str, Any], outputs: Mapping[str, str]) -> str:
    """The shell command an item runs (``outputs``: :func:`item_outputs`); a function of the
    plan and the manifest alone, so ``ecod-jobs logs`` can name it again for older records."""
    return render_command(
        plan.command,
        {
            "item_id": item["process_id"],
            "path": item["path"],
            "output_dir": plan.output_dir,
            "threads": plan.threads,
            "batch_id": plan.batch_id,
            "protein_id": item.get("protein_id"),
        },
        {ft: os.path.join(plan.base_path or plan.output_dir, rel) for ft, rel in outputs.items()},
    )


def check_stage_results(
    plan: Plan, outputs: Mapping[str, str], metrics_file: Path | None, record: dict[str, Any]
) -> str | None:
    """After a pipeline stage's command succeeded: every declared output present and
    non-empty, the metrics well-formed and complete. Fills ``record`` with ``files``
    and ``metrics``; returns what is wrong, or None."""
    base = plan.base_path or plan.output_dir
    files = []
    for file_type in plan.outputs:
        path = os.path.join(base, outputs[file_type])
        try:
            info = os.stat(path)
        except OSError:
            return f"output {file_type} is missing: {outputs[file_type]}"
        if not stat.S_ISREG(info.st_mode) or info.st_size == 0:
            what = "empty" if stat.S_ISREG(info.st_mode) else "not a regular file"
            return f"output {file_type} is {what}: {outputs[file_type]}"
        files.append([file_type, outputs[file_type], info.st_size])
    record["files"] = files
    metrics: dict[str, Any] = {}
    if metrics_file is not None and metrics_file.exists():
        try:
            metrics = parse_metrics(metrics_file.read_text(errors="replace"), f"${METRICS_ENV}")
        except MetricsError as exc:
            return str(exc)
        finally:
            metrics_file.unlink(missing_ok=True)
    if missing := [m for m in plan.metrics if m not in metrics]:
        return f"the command did not report {', '.join(missing)} (KEY=VALUE lines to ${METRICS_ENV})"
    record["metrics"] = metrics
    return None


# Where ``module`` comes from when the environment does not define it already (an
# exported function, or BASH_ENV, from the login shell that started ecod-jobs or
# submitted the job): the files named in ECOD_JOBS_MODULE_INIT (':'-separated), else
# $MODULESHOME's init, else where Lmod and environment-modules put theirs. A
# non-login shell and this list, not `bash -l`: a login shell's /etc/profile resets
# PATH (Debian's does), and a user's profile may print to stdout.
MODULE_INIT_ENV = "ECOD_JOBS_MODULE_INIT"
MODULE_INITS = (
    "/etc/profile.d/lmod.sh",
    "/usr/share/lmod/lmod/init/bash",
    "/etc/profile.d/modules.sh",
    "/usr/share/modules/init/bash",
)
MODULE_TIMEOUT = 300  # seconds; a module system on a hung filesystem must not hang the chunk


def module_init_script() -> str:
    """Bash that defines ``module`` when it is not defined yet (it may still not be after)."""
    default = "${MODULESHOME:+$MODULESHOME/init/bash:}" + ":".join(MODULE_INITS)
    return (
        "if ! type module >/dev/null 2>&1; then\n"
        f'    IFS=: read -r -a __ecod_inits <<< "${{{MODULE_INIT_ENV}-{default}}}"\n'
        '    for __ecod_init in "${__ecod_inits[@]}"; do\n'
        '        if [ -r "$__ecod_init" ]; then . "$__ecod_init" >&2; fi\n'
        "        if type module >/dev/null 2>&1; then break; fi\n"
        "    done\n"
        "    unset __ecod_init __ecod_inits\n"
        "fi\n"
    )


# Run with the modules as arguments. Exit 100: no module command; 101: purge failed;
# 102: some did not load (stdout: each one's name and load's exit status, NUL-separated);
# 103: a load failed although all are loaded; 0: stdout is the environment (env -0).
# One load per module, as a job script has them: Lmod loads none of `module load a b`
# when b is unknown, and the error must name b alone. Loaded is what `module
# is-loaded` says, not load's exit status: some module systems (and versions of them)
# exit 0 after a module they could not find.
_LOAD_SCRIPT = """type module >/dev/null 2>&1 || exit 100
module purge >&2 || exit 101
__ecod_failed=0
__ecod_missing=0
for __ecod_m in "$@"; do
    module load "$__ecod_m" >&2
    __ecod_status=$?
    if ! module is-loaded "$__ecod_m" >/dev/null 2>&1; then
        printf '%s\\0%s\\0' "$__ecod_m" "$__ecod_status"
        __ecod_missing=1
    elif [ "$__ecod_status" != 0 ]; then
        __ecod_failed=$__ecod_status
    fi
done
[ $__ecod_missing = 0 ] || exit 102
[ $__ecod_failed = 0 ] || { printf '%s' "$__ecod_failed"; exit 103; }
exec env -0
"""


class ModuleLoadError(RuntimeError):
    """The chunk's environment modules cannot be loaded: the message says which and why."""


def _said(stderr: bytes, limit: int = 200) -> str:
    """What the module system printed, on one line (Lmod's messages span many)."""
    text = " ".join(stderr.decode(errors="replace").split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def module_environment(modules: Sequence[str], base: Mapping[str, str]) -> dict[str, str]:
    """The environment after ``module purge; module load ...`` (loaded once per chunk).

    Raises :class:`ModuleLoadError` naming the modules that did not load, or saying
    that there is no ``module`` command at all.
    """
    names = ", ".join(map(repr, modules))
    proc = subprocess.Popen(
        ["bash", "-c", module_init_script() + _LOAD_SCRIPT, "ecod-jobs-modules", *modules],
        env=dict(base),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # a group of its own: a timeout kills Lmod's children too
    )
    try:
        out, err = proc.communicate(timeout=MODULE_TIMEOUT)
    except subprocess.TimeoutExpired:
        signal_group(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise ModuleLoadError(f"loading environment modules [{names}] took over {MODULE_TIMEOUT} s") from None
    said = _said(err)
    if proc.returncode == 0:
        pairs = (entry.split("=", 1) for entry in out.decode(errors="replace").split("\0"))
        return {pair[0]: pair[1] for pair in pairs if len(pair) == 2}
    if proc.returncode == 100:
        raise ModuleLoadError(
            f"modules [{names}] requested but no 'module' command is available (install Lmod or"
            f" environment-modules, or name the file that defines it in {MODULE_INIT_ENV})"
        )
    if proc.returncode == 101:
        raise ModuleLoadError(f"module purge failed before loading [{names}]: {said}")
    if proc.returncode == 102:
        fields = out.decode(errors="replace").split("\0")
        missing = dict(zip(fields[0:-1:2], fields[1::2], strict=True))
        which = (
            f"environment module {next(iter(missing))!r} is not available"
            if len(missing) == 1
            else f"environment modules {', '.join(map(repr, missing))} are not available"
        )
        failed = any(status != "0" for status in missing.values())
        how = "module load failed" if failed else "module load exited 0 but did not load it"
        raise ModuleLoadError(f"{which} ({how}: {said or 'no message'})")
    status = out.decode(errors="replace") if proc.returncode == 103 else proc.returncode
    raise ModuleLoadError(f"loading environment modules [{names}] failed (exit {status}): {said}")


def _die_with_runner() -> None:
    """In the item's process: be killed if the runner dies, even by SIGKILL.

    The item runs in its own session (so a timeout can kill its whole group), which
    hides it from signals sent to the runner's group; without this, a runner killed
    by its scheduler would leave the item running on as an orphan, and the item's
    effects would happen after the next run had already been told to redo it.
    """
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    # The runner may have died between the fork and the prctl (a scancel at the very
    # start of a chunk): then no death signal will ever come, and the item would run on
    # as an orphan that SLURM's linuxproc tracking has lost. Die now instead.
    if _runner_pid and os.getppid() != _runner_pid:
        os.kill(os.getpid(), signal.SIGKILL)


_PR_SET_PDEATHSIG = 1
_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGKILL}
# Held back from an item's end until its record is on disk (see run_chunk).
_DEFERRED = {signal.SIGTERM, signal.SIGINT}
STOP_GRACE = 1.0  # seconds


_runner_pid = 0  # set by main(); a forked item runs this module's handler until it execs


def _on_term(signum: int, _frame: Any) -> None:
    """Killed by SLURM (time limit, scancel) or Snakemake: take the running item with us.

    With no item in hand the runner exits at once. Otherwise it stops the item's group
    (SIGTERM, SIGKILL after KILL_WAIT) and returns: the main thread sees the item end
    and exits after recording it if it succeeded (it ended on its own, possibly just
    before the stop: its effects happened) or without a record if not (rerun). Waiting
    here with ``Popen.wait`` could not reap the item while the main thread sat in its
    own ``wait`` (it holds Popen's waitpid lock), and exiting from here lost items that
    had finished but were not recorded yet.
    """
    global _stop
    if os.getpid() != _runner_pid:
        # An item between fork and exec (start_new_session already made it a group
        # of its own) got the stop: die of it as the item would, not by raising
        # SystemExit inside Popen's preexec_fn, which crashed the runner.
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    if _current is None:
        sys.exit(128 + signum)
    if _stop:  # a second signal while the first one stops the item
        return
    _stop = signum
    with contextlib.suppress(PermissionError):
        kill_group(_current.pid)


def run_item(
    item: Mapping[str, Any],
    plan: Plan,
    env: Mapping[str, str],
    log: Any,
    keep_fds: tuple[int, ...] = (),
) -> dict[str, Any]:
    global _current
    started = time.time()
    record: dict[str, Any] = {
        "process_id": item["process_id"],
        "path": item["path"],
        "start": _now(),
    }

    def finish(status: str, exit_code: int | None, error: str | None, tail: str = "") -> dict[str, Any]:
        record.update(
            status=status,
            exit_code=exit_code,
            error=error,
            stderr_tail=tail[-STDERR_TAIL:],
            end=_now(),
            seconds=round(time.time() - started, 3),
        )
        return record

    if plan.check_inputs and not os.path.exists(item["path"]):
        return finish("error", None, f"input path does not exist: {item['path']}")
    try:
        outputs = item_outputs(plan, item)
    except (ValueError, KeyError) as exc:
        return finish("error", None, f"cannot name the item's outputs: {exc}")
    command = item_command(plan, item, outputs)
    metrics_file = None
    if plan.pipeline_stage:  # the command reports numbers here (README, "Pipelines")
        metrics_file = Path(plan.output_dir) / ".ecod_jobs_metrics" / f"{os.getpid()}.{item['process_id']}"
        metrics_file.parent.mkdir(parents=True, exist_ok=True)
        metrics_file.unlink(missing_ok=True)
        env = {**env, METRICS_ENV: str(metrics_file)}
    record["command"] = command
    # Where the item's output lands in the chunk log, so that `ecod-jobs logs` reads
    # only its bytes: the header, then its stdout (the item writes straight to the
    # log's file), then its stderr (written here once it ends). Sizes after a flush:
    # the log is opened for appending, and the item's writes move no offset of ours.
    log.flush()
    header_at = _size(log)
    log.write(f"### item {item['process_id']} {_now()}: {command}\n".encode(errors="replace"))
    log.flush()
    stdout_at = _size(log)

    def write_stderr(err: bytes) -> None:
        stderr_at = _size(log)
        log.write(err)
        log.flush()
        record["log"] = {
            "header": header_at,
            "stdout": [stdout_at, stderr_at - stdout_at],
            "stderr": [stderr_at, len(err)],
        }

    timeout = plan.item_timeout or None
    proc = subprocess.Popen(
        ["bash", "-c", command],
        pass_fds=keep_fds,  # the chunk lock: held while any process of the item lives
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.PIPE,
        env=dict(env),
        cwd=plan.output_dir,
        start_new_session=True,  # its own process group: a timeout kills all of it
        preexec_fn=_die_with_runner,
    )
    _current = proc
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        signal_group(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        tail = err.decode(errors="replace")
        write_stderr(err)
        return finish("error", None, f"timed out after {timeout} s", tail)
    finally:
        # The item has ended: a stop from now on waits until its record is written
        # (run_chunk lets it in), so that an item that finished is never lost.
        signal.pthread_sigmask(signal.SIG_BLOCK, _DEFERRED)
        _current = None
    write_stderr(err)
    if _stop and proc.returncode != 0:
        sys.exit(128 + _stop)  # stopped, not failed: the next attempt runs it again
    tail = err.decode(errors="replace")
    if -proc.returncode in _STOP_SIGNALS or proc.returncode - 128 in _STOP_SIGNALS:
        # SLURM's cancel signals every process of the job one by one, children before
        # their parents, the runner after its item: the item (or the shell, 128 + n,
        # that ran it) may die a moment before our own stop. Give that stop the chance
        # to arrive, so that an interrupted item is rerun rather than recorded failed.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _DEFERRED)
        time.sleep(STOP_GRACE)
        signal.pthread_sigmask(signal.SIG_BLOCK, _DEFERRED)
    if proc.returncode == 0:
        if plan.pipeline_stage:
            problem = check_stage_results(plan, outputs, metrics_file, record)
            if problem is not None:
                return finish("error", 0, problem, tail)
        return finish("success", 0, None, tail)
    if proc.returncode < 0:
        error = f"killed by signal {-proc.returncode}"
    else:
        last = tail.strip().splitlines()[-1] if tail.strip() else ""
        error = f"exit code {proc.returncode}" + (f": {last[:300]}" if last else "")
    return finish("error", proc.returncode, error, tail)


def _size(log: Any) -> int:
    """The size of the (flushed) chunk log: where the next write lands."""
    return os.fstat(log.fileno()).st_size


def hold_chunk_lock(path: Path, wait: float = 120) -> int:
    """Take the chunk's lock, waiting for an earlier attempt's processes to be gone.

    The lock's file descriptor is inherited by every item process, so the lock is
    free only when nothing of this attempt can still act on an item: a retry never
    overlaps its predecessor, and recovery of a dead run knows when its chunks are
    really stopped (see :func:`ecod_jobs.recovery.stop_chunk_processes`).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o640)
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{path} is still held by an earlier attempt after {wait:.0f} s") from None
            time.sleep(0.5)
        except OSError as exc:  # e.g. ENOLCK: a filesystem mounted without locking
            print(f"warning: cannot lock {path} ({exc.strerror}); running unguarded", file=sys.stderr)
            return fd


def run_chunk(run_dir: Path, chunk: str, environ: Mapping[str, str] | None = None) -> int:
    environ = dict(os.environ if environ is None else environ)
    # The run's id is the plan's: a pipeline stage window's directory is named after
    # its window (runs/{run}/stages/{stage}/{window}), not after the run.
    plan = Plan.read(RunLayout(run_dir, run_dir.name))
    layout = RunLayout(run_dir, plan.run_id)
    misrouted = check_task(environ, layout.run_id, chunk)
    if misrouted is not None:
        print(f"ecod-jobs runner: refusing to run: {misrouted}", file=sys.stderr)
        own = environ.get("ECOD_JOBS_TASK_CHUNK") or chunk
        if environ.get("ECOD_JOBS_TASK_RUN", layout.run_id) == layout.run_id:
            write_atomic(layout.misrouted(own), json.dumps({"error": misrouted, "at": _now()}))
        return 4
    items = list(chunk_items(layout, chunk))
    expected = planned.items if (planned := plan.chunk(chunk)) is not None else None
    if expected is None or len(items) != expected:
        print(f"chunk {chunk}: manifest has {len(items)} items, plan says {expected}", file=sys.stderr)
        return 3
    os.umask(0o027)  # results and logs are never world-writable
    lock_fd = hold_chunk_lock(layout.lock(chunk))
    attempt = len(layout.attempts(chunk)) + 1
    ids = scheduler_ids(environ)
    meta = {"chunk_id": chunk, "attempt": attempt, "start": _now(), "pid": os.getpid(), **ids}
    write_atomic(layout.attempt_meta(chunk, attempt), json.dumps(meta))

    # The config's environment is set before the modules load (MODULEPATH may be in
    # it) and again after: what the config says wins over what a module sets.
    env = {**environ, **plan.environment}
    if plan.modules:
        try:
            env = {**module_environment(plan.modules, env), **plan.environment}
        except ModuleLoadError as exc:
            # Recorded in the attempt's record, where the sync reads it: the chunk's job
            # and every item it did not run get this message as their error.
            print(f"ecod-jobs runner: chunk {chunk} cannot run: {exc}", file=sys.stderr)
            write_atomic(layout.attempt_meta(chunk, attempt), json.dumps({**meta, "error": str(exc)}))
            return 5
    env["ECOD_JOBS_CHUNK"] = chunk
    # Commands find this Python (the one ecod-jobs runs in) as `python` first.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", os.defpath)])
    Path(plan.output_dir).mkdir(parents=True, exist_ok=True)
    layout.log(chunk).parent.mkdir(parents=True, exist_ok=True)

    # Items already finished by an earlier attempt of this chunk are not run again.
    done = {r["process_id"]: r for r in read_jsonl(layout.partial(chunk))}
    results: list[dict[str, Any]] = []
    with layout.log(chunk).open("ab") as log, layout.partial(chunk).open("a", encoding="utf-8") as partial:
        for item in items:
            if item["process_id"] in done:
                results.append(done[item["process_id"]])
                continue
            record = run_item(item, plan, env, log, keep_fds=(lock_fd,))
            record.update(chunk_id=chunk, attempt=attempt, **ids)
            results.append(record)
            partial.write(json.dumps(record, ensure_ascii=False) + "\n")
            partial.flush()
            os.fsync(partial.fileno())
            # Recorded: a stop held back since the item's end is handled here.
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _DEFERRED)
            if _stop:
                sys.exit(128 + _stop)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    summary = {
        **meta,
        "end": _now(),
        "max_rss_kb": usage.ru_maxrss,
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 3),
    }
    write_atomic(layout.attempt_meta(chunk, attempt), json.dumps(summary))
    write_jsonl_atomic(layout.result(chunk), results)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="run one chunk of an ecod-jobs workflow")
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--chunk", required=True)
    args = parser.parse_args(argv)
    global _runner_pid
    _runner_pid = os.getpid()
    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGINT, _on_term)
    return run_chunk(args.run_dir, args.chunk)


if __name__ == "__main__":
    sys.exit(main())
