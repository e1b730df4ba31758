"""create_job_manager: the backend named by ``job_manager.type`` (default local)."""

from __future__ import annotations

from ..exceptions import ConfigurationError
from .base import ConfigLike, JobManager, resolve_config
from .local import LocalJobManager
from .slurm import SlurmJobManager

MANAGERS: dict[str, type[JobManager]] = {"local": LocalJobManager, "slurm": SlurmJobManager}


def create_job_manager(config: ConfigLike = None) -> JobManager:
    """A LocalJobManager or SlurmJobManager from a config dict, a YAML path or the default file.

    The type is ``config['job_manager']['type']``, case-insensitive, default ``local``.
    """
    resolved = resolve_config(config)
    kind = str((resolved.get("job_manager") or {}).get("type") or "local").strip().lower()
    try:
        manager = MANAGERS[kind]
    except KeyError:
        raise ConfigurationError(
            f"job_manager.type {kind!r}: expected one of {', '.join(MANAGERS)}", {"type": kind}
        ) from None
    return manager(resolved)


__all__ = ["MANAGERS", "create_job_manager"]
