"""The JobManager interface and everything the backends share.

A backend (local, SLURM) is a thin subclass that says only what differs:
how to submit a script, how to poll many jobs at once and how to cancel one.
Scripts, batches of scripts, job output and per-batch counts are common.
"""

from __future__ import annotations

import glob
import logging
import os
import shlex
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from ..config import from_mapping, load_config, template_placeholders
from ..exceptions import ConfigurationError, JobExecutionError, JobSubmissionError, ValidationError
from ..slurm_commands import job_output_paths
from ..states import STATES, Phase, normalize_state
from .script import OPTION_NAMES, ScriptOptions, check_job_name, render_script, write_script

log = logging.getLogger(__name__)

ConfigLike = Mapping[str, Any] | str | os.PathLike[str] | None
# Keys a create_batch_jobs template may have besides the script options.
TEMPLATE_KEYS = ("name", "output_dir", "command_template")


def resolve_config(config: ConfigLike) -> dict[str, Any]:
    """A validated configuration from a dict (the seed's way), a YAML path, or None (the default file)."""
    if config is None:
        return load_config()
    if isinstance(config, str | os.PathLike):
        return load_config(config)
    if isinstance(config, Mapping):
        return from_mapping(config)
    raise ConfigurationError(
        f"configuration must be a mapping or a path to a YAML file, got {type(config).__name__}"
    )


@dataclass(frozen=True)
class JobInfo:
    """What a backend knows about one job: its state plus whatever detail it has."""

    job_id: str
    state: str  # canonical (ecod_jobs.states)
    exit_code: int | None = None
    node: str | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    elapsed_seconds: float | None = None
    cpu_seconds: float | None = None
    max_rss_kb: int | None = None
    req_mem_mb: int | None = None
    req_time_seconds: int | None = None
    reason: str | None = None  # why it failed, when known
    # False while the scheduler says finished but its accounting (exit code, usage)
    # has not caught up yet; polling again shortly gives the full record.
    complete: bool = True

    @property
    def phase(self) -> Phase:
        return STATES[self.state].phase


def tally(states: Iterable[str]) -> tuple[int, int, int]:
    """(completed, failed, running): running is everything not finished, UNKNOWN included."""
    completed = failed = running = 0
    for state in states:
        phase = STATES[normalize_state(state)].phase
        if phase is Phase.SUCCEEDED:
            completed += 1
        elif phase is Phase.FAILED:
            failed += 1
        else:
            running += 1
    return completed, failed, running


def script_file(script_path: Any) -> Path:
    """The absolute path of an existing job script (what every ``submit_job`` takes)."""
    if isinstance(script_path, Mapping):
        hint = " (pass job['script_path'])" if "script_path" in script_path else ""
        raise ValidationError(
            f"submit_job takes the path of a job script, not a {type(script_path).__name__}{hint}"
        )
    if not isinstance(script_path, str | os.PathLike):
        raise ValidationError(f"submit_job takes the path of a job script, not {script_path!r}")
    path = Path(os.path.abspath(os.fspath(script_path)))
    if not path.is_file():
        raise JobSubmissionError(f"job script {path} does not exist", {"script": str(path)})
    return path


def _commands(commands: Sequence[str] | str) -> list[str]:
    if isinstance(commands, str):
        return [commands]  # one command, not one per character
    result = list(commands)
    if not result:
        raise ValidationError("a job script needs at least one command")
    for command in result:
        if not isinstance(command, str):
            raise ValidationError(f"commands must be strings, got {type(command).__name__}: {command!r}")
    return result


def _command_builder(template: Any) -> Callable[[Any, Any], str]:
    """``command_template``: a callable ``(item_id, path) -> str`` (the seed's) or a string
    with ``{item_id}`` and ``{path}``, substituted shell-quoted."""
    if callable(template):
        return template
    if isinstance(template, str):
        try:
            unknown = [p for p in template_placeholders(template) if p not in {"item_id", "path"}]
        except ValueError as exc:
            raise ValidationError(f"command_template {template!r}: {exc}") from None
        if unknown:
            raise ValidationError(
                f"command_template {template!r}: unknown placeholder {{{unknown[0]}}}: "
                "expected only {item_id} and {path}"
            )
        return lambda item_id, path: template.format(
            item_id=shlex.quote(str(item_id)), path=shlex.quote(str(path))
        )
    raise ValidationError(
        "job_template['command_template'] must be a callable (item_id, path) -> str or a string"
    )


class JobManager(ABC):
    """Submit, watch and cancel batch jobs; subclasses implement one scheduler each."""

    backend: ClassVar[str] = "abstract"

    def __init__(self, config: ConfigLike = None) -> None:
        self.config: dict[str, Any] = resolve_config(config)
        self._lock = threading.RLock()
        # Jobs submitted through this instance, in order, with their batch id.
        self._submitted: dict[str, int | None] = {}
        self._last_state: dict[str, str] = {}

    # ----------------------------------------------------------------- scripts

    def script_defaults(self) -> dict[str, Any]:
        """Option defaults from the configuration (``pipeline.default_*``, ``slurm.*``)."""
        pipeline = self.config.get("pipeline") or {}
        slurm = self.config.get("slurm") or {}
        defaults: dict[str, Any] = {
            "threads": pipeline.get("default_threads", 1),
            "memory": pipeline.get("default_memory", "4G"),
            "time": pipeline.get("default_time", "01:00:00"),
        }
        for key in ("partition", "account"):
            if slurm.get(key):
                defaults[key] = slurm[key]
        return defaults

    def create_job_script(
        self, commands: Sequence[str] | str, job_name: str, output_dir: str | os.PathLike[str], **options: Any
    ) -> str:
        """Write ``{output_dir}/{job_name}.sh`` running ``commands`` in order; returns its path.

        Options: threads, memory, time, partition, account, array, env, modules
        (default: the configuration's top-level ``modules``).
        """
        check_job_name(job_name)
        commands = _commands(commands)
        opts = ScriptOptions.from_options(options, self.script_defaults())
        directory = Path(os.path.abspath(os.fspath(output_dir)))
        modules = opts.modules if opts.modules is not None else tuple(self.config.get("modules") or ())
        text = render_script(
            commands,
            job_name,
            directory,
            opts,
            modules=modules,
            environment=self.config.get("environment") or {},
        )
        path = directory / f"{job_name}.sh"
        write_script(path, text)
        log.debug("wrote job script %s (%d commands)", path, len(commands))
        return str(path)

    def create_batch_jobs(
        self, items: Sequence[Sequence[Any]], batch_size: int, job_template: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        """One script per chunk of ``batch_size`` items; nothing is submitted.

        ``items`` are ``(item_id, path)`` pairs; ``job_template`` has ``name``,
        ``command_template`` (callable ``(item_id, path) -> str``, or a string with
        ``{item_id}``/``{path}``), optional ``output_dir`` (default
        ``{pipeline.output_root}/jobs``) and script options. Returns dicts with
        ``script_path``, ``items``, ``name`` (``{name}_{batch_num}``) and
        ``batch_num`` (from 0).
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValidationError(f"batch_size {batch_size!r}: expected a whole number of at least 1")
        unknown = sorted(set(job_template) - set(TEMPLATE_KEYS) - set(OPTION_NAMES))
        if unknown:
            raise ValidationError(
                f"unknown job_template key {unknown[0]!r}: expected {', '.join(TEMPLATE_KEYS + OPTION_NAMES)}"
            )
        if "name" not in job_template or "command_template" not in job_template:
            raise ValidationError("job_template needs 'name' and 'command_template'")
        build = _command_builder(job_template["command_template"])
        output_dir = job_template.get("output_dir") or os.path.join(
            (self.config.get("pipeline") or {}).get("output_root", "results"), "jobs"
        )
        options = {k: v for k, v in job_template.items() if k in OPTION_NAMES}
        pairs = []
        for index, item in enumerate(items):
            if isinstance(item, str | bytes) or not isinstance(item, Sequence) or len(item) != 2:
                raise ValidationError(f"item {index}: expected an (item_id, path) pair, got {item!r}")
            pairs.append(item)
        jobs: list[dict[str, Any]] = []
        for batch_num, start in enumerate(range(0, len(pairs), batch_size)):
            chunk = list(pairs[start : start + batch_size])
            commands = []
            for item_id, path in chunk:
                command = build(item_id, path)
                if not isinstance(command, str):
                    raise ValidationError(
                        f"command_template returned {type(command).__name__} for item {item_id!r}: "
                        "expected a string"
                    )
                commands.append(command)
            name = f"{job_template['name']}_{batch_num}"
            script = self.create_job_script(commands, name, output_dir, **options)
            jobs.append({"script_path": script, "items": chunk, "name": name, "batch_num": batch_num})
        log.info(
            "created %d job scripts for %d items (batch size %d) in %s",
            len(jobs),
            len(pairs),
            batch_size,
            output_dir,
        )
        return jobs

    # ----------------------------------------------------------------- what backends implement

    @abstractmethod
    def submit_job(self, script_path: str | os.PathLike[str], batch_id: int | None = None) -> str | None:
        """Submit a script; returns the job id. ``batch_id`` scopes :meth:`check_all_jobs`."""

    @abstractmethod
    def _poll(self, job_ids: Sequence[str]) -> dict[str, JobInfo]:
        """Current information for every id asked (``UNKNOWN`` for ids the backend does not know)."""

    @abstractmethod
    def cancel_job(self, job_id: str) -> bool:
        """Cancel a job; True when it is not running any more."""

    # ----------------------------------------------------------------- status

    def job_info(self, job_ids: Sequence[str]) -> dict[str, JobInfo]:
        """Information for many jobs in one round (one squeue/sacct pair for SLURM)."""
        ids = [str(j) for j in dict.fromkeys(job_ids)]
        if not ids:
            return {}
        infos = self._poll(ids)
        for job_id, info in infos.items():
            self._observe(job_id, info)
        return infos

    def check_job_statuses(self, job_ids: Sequence[str]) -> dict[str, str]:
        """``{job_id: STATE}`` for many jobs at once."""
        return {job_id: info.state for job_id, info in self.job_info(job_ids).items()}

    def check_job_status(self, job_id: str) -> str:
        """The job's upper-case state (PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, TIMEOUT, ...)."""
        return self.job_info([str(job_id)])[str(job_id)].state

    def _observe(self, job_id: str, info: JobInfo) -> None:
        with self._lock:
            before = self._last_state.get(job_id)
            self._last_state[job_id] = info.state
        if before == info.state:
            return
        detail = f" (exit status {info.exit_code})" if info.exit_code not in (None, 0) else ""
        reason = f": {info.reason}" if info.reason and info.phase is not Phase.SUCCEEDED else ""
        level = logging.WARNING if info.phase in (Phase.FAILED, Phase.UNKNOWN) else logging.INFO
        log.log(
            level, "%s job %s: %s -> %s%s%s", self.backend, job_id, before or "?", info.state, detail, reason
        )

    def _record_submission(self, job_id: str, batch_id: int | None) -> None:
        with self._lock:
            self._submitted[job_id] = batch_id

    def _jobs_for(self, batch_id: int | None) -> list[str]:
        """Ids :meth:`check_all_jobs` counts: this instance's submissions (of that batch)."""
        with self._lock:
            return [j for j, b in self._submitted.items() if batch_id is None or b == batch_id]

    def check_all_jobs(self, batch_id: int | None = None) -> tuple[int, int, int]:
        """Totals ``(completed, failed, running)`` over the batch's jobs (or all this manager submitted).

        Running includes queued jobs and jobs in an UNKNOWN state (never assumed done).
        """
        ids = self._jobs_for(batch_id)
        states = self.check_job_statuses(ids) if ids else {}
        return tally(states.values())

    def wait(
        self, job_ids: Sequence[str] | str, timeout: float | None = None, poll_interval: float = 1.0
    ) -> dict[str, str]:
        """Poll until every job is finished; returns the final states.

        Raises ``JobExecutionError`` when ``timeout`` seconds pass first. A job in
        an UNKNOWN state ends the wait too (it will not change by waiting).
        """
        ids = [job_ids] if isinstance(job_ids, str) else list(job_ids)
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = min(0.1, poll_interval)  # short jobs finish fast; back off towards poll_interval
        while True:
            states = self.check_job_statuses(ids)
            if all(
                STATES[s].phase in (Phase.SUCCEEDED, Phase.FAILED, Phase.UNKNOWN) for s in states.values()
            ):
                return states
            if deadline is not None and time.monotonic() >= deadline:
                pending = {j: s for j, s in states.items() if not STATES[s].phase.finished}
                raise JobExecutionError(f"jobs not finished after {timeout} s: {pending}", {"states": states})
            time.sleep(delay)
            delay = min(delay * 1.5, poll_interval)

    # ----------------------------------------------------------------- output

    def get_job_output(
        self, job_id: str, output_dir: str | os.PathLike[str], job_name: str
    ) -> dict[str, str | None]:
        """``{'stdout': text|None, 'stderr': text|None}`` from ``{output_dir}/{job_name}-{job_id}.out/.err``.

        For an array's own id, the tasks' files are joined in task order.
        """
        out, err = job_output_paths(os.path.abspath(os.fspath(output_dir)), job_name, str(job_id))
        result = {"stdout": _read(out), "stderr": _read(err)}
        if result["stdout"] is None and result["stderr"] is None and "_" not in str(job_id):
            tasks = _array_files(out.parent, job_name, str(job_id))
            if tasks:
                result = {
                    "stdout": _join(p for p, _ in tasks),
                    "stderr": _join(e for _, e in tasks),
                }
        return result


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None


def _join(paths: Iterable[Path]) -> str | None:
    texts = [t for t in map(_read, paths) if t is not None]
    return "".join(texts) if texts else None


def _array_files(directory: Path, job_name: str, job_id: str) -> list[tuple[Path, Path]]:
    prefix = f"{job_name}-{job_id}_"
    found = []
    for path in directory.glob(f"{glob.escape(job_name)}-{glob.escape(job_id)}_*.out"):
        task = path.name[len(prefix) : -len(".out")]
        if task.isdigit():
            found.append((int(task), path, path.with_suffix(".err")))
    return [(out, err) for _, out, err in sorted(found)]
