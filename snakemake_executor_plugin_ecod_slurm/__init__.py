"""Snakemake executor plugin ``ecod-slurm``: the SLURM plugin with ecod-jobs' own job arrays.

A thin subclass of snakemake-executor-plugin-slurm's ``Executor`` (2.8): status
polls, cancel, accounts, partitions, resources and the ``sbatch`` options are the
plugin's own. What differs, for the rules named in ``array-jobs``:

- **Arrays.** Each task's command is a script of its own (``tasks/N.sh`` under the
  plugin's log directory) and the array's batch script runs the one for
  ``$SLURM_ARRAY_TASK_ID``; see :mod:`ecod_jobs.slurm_arrays` for the plugin's
  defect this replaces. One ``sbatch`` per ``array-limit`` tasks (and per distinct
  resource request: a retry asks for more memory and time).
- **Every round is submitted.** The plugin holds back (and so loses: its #473)
  rounds smaller than both the ready jobs and the array limit.
- **A run-wide throttle.** At most ``slurm.array_limit`` tasks of the run run at
  once across all its arrays (``%N`` per array, shared out by
  :class:`ecod_jobs.slurm_arrays.ArrayBudget`, raised with ``scontrol update``
  as arrays drain).
- **Tasks run the rule's command.** A task runs the rule's shell command itself,
  as the job step's Snakemake would, instead of starting Snakemake twice (job
  step and its ``srun``), about 10 s of CPU per task. Jobs that need Snakemake
  in the task (conda, containers, environment modules, shadow directories,
  benchmarks, ``run:`` or script rules, groups) are submitted as the plugin's
  single jobs, never as its arrays.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import shutil
import threading
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

from snakemake_executor_plugin_slurm import Executor as SlurmExecutor
from snakemake_executor_plugin_slurm import ExecutorSettings, common_settings
from snakemake_executor_plugin_slurm.submit_string import get_submit_command
from snakemake_executor_plugin_slurm.utils import set_gres_string
from snakemake_executor_plugin_slurm.validation import validate_or_get_slurm_job_id, validate_slurm_extra
from snakemake_interface_executor_plugins.executors.base import SubmittedJobInfo
from snakemake_interface_executor_plugins.jobs import JobExecutorInterface

from ecod_jobs.slurm_arrays import (
    ArrayBudget,
    array_spec,
    dispatcher_script,
    task_script,
    tasks_by_array,
    write_task_scripts,
)
from ecod_jobs.slurm_commands import set_array_throttle, submit_array_script

__all__ = ["Executor", "ExecutorSettings", "common_settings"]


def _runs_directly(job: JobExecutorInterface) -> bool:
    """A plain shell rule: its task can run the command itself, as the job step's Snakemake would."""
    return bool(
        not job.is_group()
        and job.is_shell
        and not job.conda_env_spec
        and not job.container_img_url
        and not job.env_modules
        and not getattr(job.rule, "shadow_depth", None)
        and not job.benchmark
    )


def _throttle_limit(workflow: Any) -> int:
    """``slurm.array_limit`` of the ecod-jobs configuration the workflow runs with."""
    from ecod_jobs.config import load_config

    smk_config = getattr(workflow, "config", None) or {}
    config = load_config(smk_config.get("ecod_config") or None)
    return int((config.get("slurm") or {}).get("array_limit") or 0)


class Executor(SlurmExecutor):
    def __init__(self, workflow: Any, logger: Any) -> None:
        # Before the base class's __init__: it starts the status thread, which polls at
        # once (and dies, hanging the run, on any error) before __post_init__ has run.
        self.budget = ArrayBudget(_throttle_limit(workflow))
        self._budget_lock = threading.Lock()
        self._submissions = itertools.count(1)
        self._account_args: dict[str, str] = {}
        self._seen: dict[str, set[str]] = {}  # array id -> its tasks Snakemake has polled
        self.task_dirs: list[Path] = []
        super().__init__(workflow, logger)

    def __post_init__(self, test_mode: bool = False) -> None:
        super().__post_init__(test_mode)
        self.logger.info(
            f"ecod-slurm: job arrays with their own task scripts; at most {self.budget.limit or 'any'}"
            " array tasks of this run running at once"
        )

    # ------------------------------------------------------------------ submission

    def run_jobs(self, jobs: list[JobExecutorInterface]) -> None:
        if self._main_event_loop is None:
            with contextlib.suppress(RuntimeError):
                self._main_event_loop = asyncio.get_running_loop()
        by_rule: dict[str, list[JobExecutorInterface]] = {}
        others = []
        for job in jobs:
            if "all" not in self.array_jobs and job.rule.name not in self.array_jobs:
                others.append(job)
            elif _runs_directly(job):
                by_rule.setdefault(job.rule.name, []).append(job)
            else:  # needs Snakemake in the task: the plugin's own single job, never its arrays
                self._submit_job(job)
        if others:
            super().run_jobs(others)
        for same_rule in by_rule.values():
            self._submit_array_jobs(same_rule)

    def run_array_jobs(self, jobs: list[JobExecutorInterface]) -> None:
        """Submit ``jobs`` (one rule) as arrays: one per resource request and ``array-limit`` tasks."""
        submitted: set[int] = set()  # id() of the jobs already in an array
        try:
            groups: dict[str, list[JobExecutorInterface]] = {}
            for job in jobs:
                validate_slurm_extra(job)
                groups.setdefault(self._sbatch_call(job), []).append(job)
            for call, members in groups.items():
                for start in range(0, len(members), self.max_array_size):
                    part = members[start : start + self.max_array_size]
                    self._submit_array(call, part)
                    submitted.update(map(id, part))
        except Exception as exc:
            self.logger.error(f"ecod-slurm: array submission for rule {jobs[0].rule.name} failed: {exc}")
            for job in (j for j in jobs if id(j) not in submitted):
                self._report_job_error_threadsafe(SubmittedJobInfo(job), f"array submission failed: {exc}")

    def _sbatch_call(self, job: JobExecutorInterface) -> str:
        """The plugin's sbatch options for ``job``, without the array and the script."""
        account = str(job.resources.get("slurm_account") or "")
        if account not in self._account_args:  # validated once per account, not per task
            self._account_args[account] = next(self.get_account_arg(job))
        params = {
            "run_uuid": self.run_uuid,
            "slurm_logfile": self.slurm_logdir / f"rule_{job.name}" / "%A_%a.log",
            "comment_str": f"rule_{job.name}",
            "account": self._account_args[account],
            "partition": self.get_partition_arg(job),
            "workdir": self.workflow.workdir_init,
        }
        call = get_submit_command(
            job, params, settings=self.workflow.executor_settings, failed_nodes=self._failed_nodes
        )
        return str(call + set_gres_string(job))

    def _task_script(self, job: JobExecutorInterface, index: int) -> str:
        return task_script(
            job.shellcmd,
            index=index,
            rule=job.name,
            wildcards={str(k): str(v) for k, v in dict(job.wildcards or {}).items()},
            workdir=str(self.workflow.workdir_init),
            make_dirs=[str(Path(str(f)).parent) for f in (*job.output, *job.log)],
        )

    def _submit_array(self, call: str, jobs: list[JobExecutorInterface]) -> None:
        rule_dir = self.slurm_logdir / f"rule_{jobs[0].name}"
        task_dir = rule_dir / "tasks" / f"{self.run_uuid}-{next(self._submissions)}"
        write_task_scripts(task_dir, [self._task_script(job, i) for i, job in enumerate(jobs, start=1)])
        self.task_dirs.append(task_dir)
        with self._budget_lock:  # admit and record together: the two submit threads share it
            throttle, held = self.budget.admit(len(jobs))
            sbatch = (
                f"{call} --array={array_spec(len(jobs), 1 if held else throttle)}"
                + (" --hold" if held else "")
                + " /dev/stdin"
            )
            out = submit_array_script(sbatch, dispatcher_script(task_dir))
            slurm_id = str(validate_or_get_slurm_job_id(out.strip().split(";")[0], out))
            self.budget.submitted(slurm_id, len(jobs), throttle, held)
        for index, job in enumerate(jobs, start=1):
            self._report_job_submission_threadsafe(
                SubmittedJobInfo(
                    job,
                    external_jobid=f"{slurm_id}_{index}",
                    aux={"slurm_logfile": rule_dir / f"{slurm_id}_{index}.log"},
                )
            )
        resources = jobs[0].resources
        cluster = resources.get("cluster") or resources.get("clusters") or resources.get("slurm_cluster")
        if cluster:  # for the plugin's scancel
            self._submitted_job_clusters.add(cluster)
        limit = (
            "held until the run's throttle frees"
            if held
            else f"at most {throttle} running"
            if throttle
            else ""
        )
        self.logger.info(
            f"Submitted array job {slurm_id} with {len(jobs)} tasks of rule {jobs[0].name}"
            f"{' (' + limit + ')' if limit else ''}; task scripts in {task_dir}"
        )

    # ------------------------------------------------------------------ throttle upkeep

    async def check_active_jobs(  # type: ignore[override]
        self, active_jobs: list[SubmittedJobInfo]
    ) -> AsyncGenerator[SubmittedJobInfo, None]:
        still = []
        async for job_info in super().check_active_jobs(active_jobs):
            still.append(job_info)
            yield job_info
        if self.budget.limit:
            try:  # an exception here would end the status thread, and the run would hang
                self._rebalance([j.external_jobid for j in active_jobs], [j.external_jobid for j in still])
            except Exception as exc:
                self.logger.error(f"ecod-slurm: updating array throttles failed: {exc}")

    def _rebalance(self, polled: list[str], still: list[str]) -> None:
        """Share the run's throttle anew after a status poll of the tasks ``polled``."""
        remaining = tasks_by_array(still)
        with self._budget_lock:
            for task in polled:
                self._seen.setdefault(task.partition("_")[0], set()).add(task)
            counts = {}
            for array_id, array in self.budget.arrays.items():
                # Tasks are registered with Snakemake one by one: until every task of an
                # array has been in a poll, the ones not yet seen count as left to run.
                seen = len(self._seen.get(array_id, ()))
                counts[array_id] = remaining.get(array_id, 0) + (array.tasks - seen)
            changes = self.budget.rebalance(counts)
            for array_id in set(self._seen) - set(self.budget.arrays):
                del self._seen[array_id]
        for change in changes:
            failed = set_array_throttle(change.array_id, change.throttle, release=change.release)
            with self._budget_lock:
                (self.budget.undo if failed else self.budget.confirm)(change)
            if failed:
                self.logger.warning(f"ecod-slurm: {failed}; trying again at the next status poll")
            else:
                self.logger.info(
                    f"ecod-slurm: array {change.array_id} may now run {change.throttle} tasks at once"
                    + (" (released)" if change.release else "")
                )

    def shutdown(self) -> None:
        super().shutdown()
        # The task scripts are needed only until their tasks have started; SLURM's own
        # log (%A_%a.log) keeps what each task did.
        if not self.workflow.executor_settings.keep_successful_logs:
            for task_dir in self.task_dirs:
                shutil.rmtree(task_dir, ignore_errors=True)
