"""Job scripts: the options a script takes and how commands are embedded in it.

One script serves both backends: ``#SBATCH`` lines for SLURM (comments to
bash), and the LocalJobManager reads the same lines back for its output paths,
array and time limit (:func:`read_script_header`).

Commands are data, not script text: each is shell-quoted into a bash array and
run with ``eval`` in the script's own shell, exactly as if it had been a line
of the script (so ``cd`` or ``export`` in one command carry over to the next,
as they did in the original). The bookkeeping around them only ever prints a
command with ``printf '%s'``, so quotes, ``$``, backticks and newlines are
never re-interpreted. There is no ``set -e``: each command's own exit status is
recorded, and the script stops at the first failure with that status.
"""

from __future__ import annotations

import os
import re
import shlex
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..chunk_runner import module_init_script
from ..config import memory_to_mb, seconds_to_time, time_to_seconds
from ..exceptions import ConfigurationError, ValidationError

SCRIPT_MODE = 0o750  # owner writes; group may read and run; others nothing
OPTION_NAMES = ("threads", "memory", "time", "partition", "account", "array", "env", "modules")

_JOB_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,199}$")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# 1-10, 1,3,5-7, 0-20:2, with an optional %N throttle
_ARRAY_RE = re.compile(r"^\d+(-\d+(:\d+)?)?(,\d+(-\d+(:\d+)?)?)*(%\d+)?$")


def _memory(value: Any) -> str:
    """``'8G'`` stays; an int is megabytes (as sbatch --mem reads it)."""
    if isinstance(value, bool):
        raise ValidationError(f"memory {value!r}: expected a size such as 500M, 16G or 1.5T")
    if isinstance(value, int):
        if value < 1:
            raise ValidationError(f"memory {value!r}: expected at least 1 (megabyte)")
        return f"{value}M"
    text = str(value).strip()
    try:
        memory_to_mb(text)
    except ConfigurationError as exc:
        raise ValidationError(exc.message, {"option": "memory"}) from None
    text = text.upper().removesuffix("B")
    # sbatch wants a whole number: 1.5T -> 1572864M
    return f"{memory_to_mb(text)}M" if "." in text else text


def _time(value: Any) -> str:
    """``'02:00:00'`` or ``'1-00:00:00'`` stay; an int is minutes (as sbatch --time reads it)."""
    if isinstance(value, bool):
        raise ValidationError(f"time {value!r}: expected HH:MM:SS or D-HH:MM:SS")
    if isinstance(value, int):
        if value < 1:
            raise ValidationError(f"time {value!r}: expected at least 1 (minute)")
        return seconds_to_time(value * 60)
    text = str(value).strip()
    try:
        time_to_seconds(text)
    except ConfigurationError as exc:
        raise ValidationError(exc.message, {"option": "time"}) from None
    return text


@dataclass(frozen=True)
class ScriptOptions:
    """What a job asks for. ``modules=None`` means the configuration's ``modules``."""

    threads: int = 1
    memory: str = "4G"
    time: str = "01:00:00"
    partition: str | None = None
    account: str | None = None
    array: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    modules: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1:
            raise ValidationError(f"threads {self.threads!r}: expected a whole number of at least 1")
        object.__setattr__(self, "memory", _memory(self.memory))
        object.__setattr__(self, "time", _time(self.time))
        for name in ("partition", "account"):
            value = getattr(self, name)
            if value is not None and (not str(value).strip() or re.search(r"\s", str(value))):
                raise ValidationError(f"{name} {value!r}: expected a name without spaces")
        if self.array is not None:
            array = str(self.array).replace(" ", "")
            if not _ARRAY_RE.match(array):
                raise ValidationError(
                    f"array {self.array!r}: expected an sbatch --array spec such as 1-100, 1,3,5 or 1-100%10"
                )
            object.__setattr__(self, "array", array)
        env = dict(self.env or {})
        for key, value in env.items():
            if not _ENV_NAME_RE.match(str(key)):
                raise ValidationError(f"env: {key!r} is not a valid environment variable name")
            env[key] = str(value)
        object.__setattr__(self, "env", env)
        if self.modules is not None:
            if isinstance(self.modules, str):
                raise ValidationError("modules: expected a list of module names, got a string")
            object.__setattr__(self, "modules", tuple(str(m) for m in self.modules))

    @property
    def mem_mb(self) -> int:
        return memory_to_mb(self.memory)

    @property
    def time_seconds(self) -> int:
        return time_to_seconds(self.time)

    @classmethod
    def from_options(
        cls, options: Mapping[str, Any], defaults: Mapping[str, Any] | None = None
    ) -> ScriptOptions:
        """Build from ``**options``; unknown option names are a ``ValidationError`` (typos)."""
        unknown = sorted(set(options) - set(OPTION_NAMES))
        if unknown:
            raise ValidationError(
                f"unknown job script option {unknown[0]!r}: expected one of {', '.join(OPTION_NAMES)}",
                {"option": unknown[0]},
            )
        merged = {**(defaults or {}), **{k: v for k, v in options.items() if v is not None}}
        return cls(**{f.name: merged[f.name] for f in fields(cls) if f.name in merged})


def check_job_name(job_name: str) -> str:
    """Job names become file names and ``--job-name``: letters, digits, ``_ . + -``."""
    if not isinstance(job_name, str) or not _JOB_NAME_RE.match(job_name):
        raise ValidationError(
            f"job name {job_name!r}: expected letters, digits, '_', '.', '+' or '-' (at most 200), "
            "not starting with '.' or '-'",
            {"job_name": job_name},
        )
    return job_name


def _slurm_path(path: Path) -> str:
    """A path in an ``#SBATCH --output`` line: '%' is sbatch's pattern character."""
    text = str(path).replace("%", "%%")
    if re.search(r"[\s\"'\\]", text):
        raise ValidationError(
            f"output directory {str(path)!r}: spaces, quotes and backslashes cannot be used in "
            "SLURM output paths",
            {"output_dir": str(path)},
        )
    return text


def output_patterns(output_dir: Path, job_name: str, array: bool) -> tuple[str, str]:
    """sbatch ``--output``/``--error`` patterns: ``{job_name}-%j.out`` (arrays ``%A_%a``)."""
    job = "%A_%a" if array else "%j"
    base = _slurm_path(output_dir)
    return f"{base}/{job_name}-{job}.out", f"{base}/{job_name}-{job}.err"


def render_script(
    commands: Sequence[str],
    job_name: str,
    output_dir: Path,
    options: ScriptOptions,
    *,
    modules: Sequence[str] = (),
    environment: Mapping[str, str] | None = None,
    extra_headers: Iterable[str] = (),
) -> str:
    """The bash script text. ``output_dir`` must be absolute (sbatch and the local runner agree)."""
    out, err = output_patterns(output_dir, job_name, options.array is not None)
    header = [
        "#!/bin/bash",
        f"#SBATCH --job-name={job_name}",
        f"#SBATCH --output={out}",
        f"#SBATCH --error={err}",
        f"#SBATCH --cpus-per-task={options.threads}",
        f"#SBATCH --mem={options.memory}",
        f"#SBATCH --time={options.time}",
    ]
    if options.partition:
        header.append(f"#SBATCH --partition={options.partition}")
    if options.account:
        header.append(f"#SBATCH --account={options.account}")
    if options.array:
        header.append(f"#SBATCH --array={options.array}")
    header.extend(f"#SBATCH {line}" for line in extra_headers)
    body = [
        "",
        "# Generated by ecod-jobs. Each command runs exactly as written, in order;",
        "# the script stops at the first command that fails, with that command's exit status.",
    ]
    if modules:
        # `module` found as the chunk runner finds it (ECOD_JOBS_MODULE_INIT, MODULESHOME, ...)
        body += ["", *module_init_script().splitlines()]
        body += [
            "if ! type module >/dev/null 2>&1; then",
            "    echo '[ecod-jobs] environment modules are configured but the module command is missing' >&2",
            "    exit 127",
            "fi",
            "module purge || exit",
        ]
        for module in modules:
            quoted = shlex.quote(module)
            failed = f"{{ printf '[ecod-jobs] module load %s failed\\n' {quoted} >&2; exit 1; }}"
            body.append(f"module load {quoted} || {failed}")
    env = {**(environment or {}), **options.env}
    if env:
        body.append("")
        body += [f"export {key}={shlex.quote(value)}" for key, value in env.items()]
    body += ["", "__ecod_commands=("]
    body += [f"    {shlex.quote(command)}" for command in commands]
    body += [
        ")",
        "__ecod_n=${#__ecod_commands[@]}",
        "__ecod_i=0",
        'for __ecod_cmd in "${__ecod_commands[@]}"; do',
        "    __ecod_i=$((__ecod_i + 1))",
        '    printf \'[ecod-jobs] %s command %d/%d: %s\\n\' "$(date \'+%F %T\')" "$__ecod_i" "$__ecod_n" '
        '"$__ecod_cmd" >&2',
        '    eval "$__ecod_cmd"',
        "    __ecod_rc=$?",
        '    if [ "$__ecod_rc" -ne 0 ]; then',
        "        printf '[ecod-jobs] %s command %d/%d failed with exit status %d\\n' \"$(date '+%F %T')\" "
        '"$__ecod_i" "$__ecod_n" "$__ecod_rc" >&2',
        '        exit "$__ecod_rc"',
        "    fi",
        "done",
        "printf '[ecod-jobs] %s all %d commands succeeded\\n' \"$(date '+%F %T')\" \"$__ecod_n\" >&2",
        "exit 0",
        "",
    ]
    return "\n".join(header + body)


def write_script(path: Path, text: str) -> None:
    """Write atomically (a half-written script must never be submitted) with mode 0o750."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, SCRIPT_MODE)  # mkstemp's 0o600 ignores the umask; set ours explicitly
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------- reading back


@dataclass(frozen=True)
class ScriptHeader:
    """The ``#SBATCH`` options of a script, as the LocalJobManager needs them."""

    job_name: str | None = None
    output: str | None = None
    error: str | None = None
    array: str | None = None
    time_seconds: int | None = None
    mem_mb: int | None = None
    threads: int | None = None


_SBATCH_RE = re.compile(r"^#SBATCH\s+(--?[A-Za-z-]+)(?:[=\s]\s*(.*?))?\s*$")
_SHORT = {
    "-J": "--job-name",
    "-o": "--output",
    "-e": "--error",
    "-a": "--array",
    "-t": "--time",
    "-c": "--cpus-per-task",
}


def _slurm_time_seconds(value: str) -> int | None:
    """sbatch --time forms: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S."""
    value = value.strip()
    if value.upper() in {"UNLIMITED", "INFINITE"}:
        return None
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", value)
    if not match:
        return None
    days, a, b, c = match.groups()
    if days is not None:  # D-H[:M[:S]]
        return int(days) * 86400 + int(a) * 3600 + int(b or 0) * 60 + int(c or 0)
    if c is not None:  # H:M:S
        return int(a) * 3600 + int(b) * 60 + int(c)
    if b is not None:  # M:S
        return int(a) * 60 + int(b)
    return int(a) * 60  # M


def read_script_header(path: Path) -> ScriptHeader:
    """Parse the leading ``#SBATCH`` lines (sbatch stops at the first command, so do we)."""
    values: dict[str, str] = {}
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle):
            stripped = line.strip()
            if number == 0 and stripped.startswith("#!"):
                continue
            if not stripped or (stripped.startswith("#") and not stripped.startswith("#SBATCH")):
                continue
            if not stripped.startswith("#SBATCH"):
                break
            match = _SBATCH_RE.match(stripped)
            if match and match.group(2) is not None:
                option = _SHORT.get(match.group(1), match.group(1))
                values[option] = match.group(2).strip().strip('"')
    mem_mb = None
    if "--mem" in values:
        try:
            mem_mb = memory_to_mb(
                values["--mem"] if values["--mem"][-1:].isalpha() else values["--mem"] + "M"
            )
        except ConfigurationError:
            mem_mb = None
    threads = values.get("--cpus-per-task")
    return ScriptHeader(
        job_name=values.get("--job-name"),
        output=values.get("--output"),
        error=values.get("--error"),
        array=values.get("--array"),
        time_seconds=_slurm_time_seconds(values["--time"]) if "--time" in values else None,
        mem_mb=mem_mb,
        threads=int(threads) if threads and threads.isdigit() else None,
    )


def expand_array(spec: str) -> list[int]:
    """``'1-5:2,8%2'`` -> [1, 3, 5, 8] (the ``%N`` throttle is dropped)."""
    spec = spec.split("%", 1)[0]
    tasks: list[int] = []
    for part in spec.split(","):
        if not part:
            continue
        rng, _, step = part.partition(":")
        lo, _, hi = rng.partition("-")
        start, stop = int(lo), int(hi or lo)
        tasks.extend(range(start, stop + 1, int(step or 1)))
    return sorted(set(tasks))


def expand_pattern(
    pattern: str, *, job_id: str, job_name: str, array_job_id: str | None = None, task_id: int | None = None
) -> str:
    """sbatch filename patterns (``%j %A %a %x %u %%``) with the local job's values."""
    values = {
        "j": job_id,
        "A": array_job_id or job_id,
        "a": str(task_id) if task_id is not None else "4294967294",
        "x": job_name,
        "u": os.environ.get("USER", ""),
        "%": "%",
    }
    return re.sub(r"%(\d*)([jAaxu%])", lambda m: values[m.group(2)], pattern)


__all__ = [
    "OPTION_NAMES",
    "SCRIPT_MODE",
    "ScriptHeader",
    "ScriptOptions",
    "check_job_name",
    "expand_array",
    "expand_pattern",
    "output_patterns",
    "read_script_header",
    "render_script",
    "write_script",
]
