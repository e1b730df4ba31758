"""Configuration: loading, precedence, validation and redaction.

Precedence, lowest first:
  1. built-in ``DEFAULTS`` (never mutated: every load starts from a deep copy),
  2. the YAML file (``path`` argument, else ``$ECOD_CONFIG_PATH``, else
     ``config/config.yml`` in the working directory),
  3. ``config.local.yml`` beside that file (secrets such as the password),
  4. environment overrides ``ECOD_<SECTION>__<KEY>`` (typed by the schema, so a
     numeric password stays a string),
  5. explicit ``overrides`` passed by the caller.

The merged result is validated against ``schemas/config.schema.yaml``; every
error names the key path, the offending value, what was expected and, when the
value came from a file, the file and line.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .exceptions import ConfigurationError
from .plan_file import PLACEHOLDERS

DEFAULT_CONFIG_PATH = Path("config/config.yml")
LOCAL_CONFIG_NAME = "config.local.yml"
ENV_PREFIX = "ECOD_"
REDACTED = "********"

# Placeholders a job type's command template may use. Values are substituted
# shell-quoted, so a template must not quote them itself.
COMMAND_PLACEHOLDERS = frozenset({"item_id", "path", "output_dir", "threads", "batch_id", "protein_id"})
# Placeholders of an output template (``job_types.NAME.outputs``): what names a chain's
# file. ``stem`` is the item's file name without its extension (P12345.fa -> P12345).
OUTPUT_PLACEHOLDERS = frozenset(PLACEHOLDERS)
# ``{out[FILE_TYPE]}`` in a command: the absolute path of a declared output.
_OUT_FIELD = re.compile(r"^out\[([A-Za-z][A-Za-z0-9_]*)\]$")


def output_references(template: str) -> list[str]:
    """The file types a command names with ``{out[FILE_TYPE]}`` (may raise ValueError)."""
    return [m.group(1) for name in template_placeholders(template) if (m := _OUT_FIELD.match(name))]


DEFAULTS: dict[str, Any] = {
    "database": {"schema": "ecod_schema", "port": 5432, "connect_timeout": 10, "retry_seconds": 300},
    "job_manager": {"type": "local"},
    "modules": [],
    "environment": {},
    "pipeline": {
        "batch_size": 100,
        "default_threads": 1,
        "default_memory": "4G",
        "default_time": "01:00:00",
        "output_root": "results",
        "work_root": ".ecod_jobs/work",
        "item_timeout": 0,
        "ref_version": "unspecified",
    },
    "slurm": {"array_limit": 500},
    "job_types": {},
    "pipelines": {},
    "dashboard": {},  # token: for `dashboard --host` beyond the loopback (else one is made)
}


# --------------------------------------------------------------------------- units

_MEMORY_RE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([KMGT])B?$", re.IGNORECASE)
_TIME_RE = re.compile(r"^(?:([0-9]+)-)?([0-9]{1,3}):([0-5][0-9]):([0-5][0-9])$")
_MB_PER_UNIT = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}


def memory_to_mb(value: str) -> int:
    """``'16G'`` -> 16384; raises ``ConfigurationError`` on anything else."""
    match = _MEMORY_RE.match(value.strip())
    if not match:
        raise ConfigurationError(
            f"invalid memory {value!r}: expected a memory size such as 500M, 16G or 1.5T"
        )
    number, unit = match.groups()
    return max(1, round(float(number) * _MB_PER_UNIT[unit.upper()]))


def time_to_seconds(value: str) -> int:
    """``'1-02:00:00'`` -> 93600; raises ``ConfigurationError`` on anything else."""
    match = _TIME_RE.match(value.strip())
    if not match:
        raise ConfigurationError(f"invalid time {value!r}: expected HH:MM:SS or D-HH:MM:SS, such as 04:00:00")
    days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def seconds_to_time(seconds: int) -> str:
    """Inverse of :func:`time_to_seconds` (SLURM's D-HH:MM:SS form)."""
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    clock = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days}-{clock}" if days else clock


def template_placeholders(template: str) -> list[str]:
    """Field names used by a ``str.format`` template, in order (may raise ValueError)."""
    names = []
    for _literal, field, spec, conversion in string.Formatter().parse(template):
        if field is None:
            continue
        if spec or conversion:
            raise ValueError(f"placeholder {{{field}}} must not have a format spec or conversion")
        names.append(field)
    return names


# --------------------------------------------------------------------------- schema


@cache
def config_schema() -> dict[str, Any]:
    text = resources.files("ecod_jobs").joinpath("schemas/config.schema.yaml").read_text()
    return yaml.safe_load(text)


def _schema_for_path(keys: list[str]) -> dict[str, Any] | None:
    """The sub-schema that governs a key path (used to type env overrides)."""
    root = config_schema()
    node: dict[str, Any] | None = root
    for key in keys:
        if node is None:
            return None
        if "$ref" in node:
            node = root["$defs"][node["$ref"].rsplit("/", 1)[-1]]
        props = node.get("properties", {})
        if key in props:
            node = props[key]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        else:
            return None
    if node is not None and "$ref" in node:
        node = root["$defs"][node["$ref"].rsplit("/", 1)[-1]]
    return node


# --------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class _Source:
    """Where a configuration layer came from, for line numbers in errors."""

    path: Path
    root: yaml.Node | None


@dataclass(frozen=True)
class _EnvSource:
    """The environment layer: which variable set each key path, to blame it in errors."""

    variables: dict[tuple[str, ...], str]

    def variable_for(self, keys: list[str | int]) -> str | None:
        """The variable that set ``keys`` or a mapping or list holding it."""
        path = tuple(str(k) for k in keys)
        for n in range(len(path), 0, -1):
            if path[:n] in self.variables:
                return self.variables[path[:n]]
        return None


class _DuplicateKey(yaml.constructor.ConstructorError):
    """A mapping names the same key twice (PyYAML would silently keep the last)."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping, naming both lines."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _value in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # '<<' merges are meant to be overridden
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:
                continue  # an unhashable key: the base constructor reports it
            if first is not key_node:
                raise _DuplicateKey(
                    None,
                    None,
                    f"duplicate key {key!r} (lines {first.start_mark.line + 1} and"
                    f" {key_node.start_mark.line + 1}); YAML would keep only the last",
                    key_node.start_mark,
                )
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: Path) -> tuple[dict[str, Any], _Source]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigurationError(f"config file {path} does not exist", {"path": str(path)}) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"cannot read config file {path}: {exc}") from None
    root: yaml.Node | None = None
    try:
        loader = _UniqueKeyLoader(text)  # one parse gives both the tree (for lines) and the data
        try:
            root = loader.get_single_node()
            data = loader.construct_document(root) if root is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
        if isinstance(exc, yaml.reader.ReaderError):  # a control character such as NUL
            line = text.count("\n", 0, exc.position) + 1
            where = f" line {line}"
            char = exc.character
            shown = f"#x{char:04x}" if isinstance(char, int) else repr(char)
            problem = f"character {shown} is not allowed ({exc.reason})"
        if isinstance(exc, _DuplicateKey):
            where = f" line {mark.line + 1}" if mark else ""
            path_keys = _key_path_at(root, mark) if root is not None and mark else []
            if path_keys:
                problem = f"{'.'.join(map(str, path_keys))}: {problem}"
        kind = "" if isinstance(exc, _DuplicateKey) else "not valid YAML: "
        raise ConfigurationError(
            f"config file {path}{where}: {kind}{problem}",
            {"path": str(path), "where": where.strip()},
        ) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigurationError(
            f"config file {path}: expected a mapping of sections at the top level, got {type(data).__name__}",
            {"path": str(path)},
        )
    return data, _Source(path, root)


def _key_path_at(node: yaml.Node, mark: Any, seen: set[int] | None = None) -> list[str]:
    """The key path of the mapping key that starts at ``mark`` (to name a duplicate key)."""
    seen = set() if seen is None else seen
    if id(node) in seen:  # an alias: its anchor was walked already
        return []
    seen.add(id(node))
    children: list[tuple[str, yaml.Node]] = []
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if key_node.start_mark.index == mark.index:
                return [str(key_node.value)]
            children.append((str(key_node.value), value_node))
    elif isinstance(node, yaml.SequenceNode):
        children = [(str(i), item) for i, item in enumerate(node.value)]
    for name, child in children:
        below = _key_path_at(child, mark, seen)
        if below:
            return [name, *below]
    return []


def _line_of(source: _Source, keys: list[str | int]) -> int | None:
    """1-based line of the deepest node along ``keys`` in a composed YAML tree."""
    node = source.root
    line = None
    for key in keys:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if key_node.value == str(key):
                    line = key_node.start_mark.line + 1
                    node = value_node
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``override`` into a deep copy of ``base``; mappings merge, the rest replaces."""
    result = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(result.get(key), dict):
            result[key] = deep_merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def _coerce_env_value(keys: list[str], raw: str, var: str) -> Any:
    """Type an environment string by the schema; strings (passwords!) stay strings."""
    schema = _schema_for_path(keys) or {}
    kind = schema.get("type")
    try:
        if kind == "integer":
            # int() would also take '1_0', '+5', ' 5' and non-ASCII digits
            if not re.fullmatch(r"-?[0-9]+", raw):
                raise ValueError(raw)
            return int(raw)
        if kind == "boolean":
            lowered = raw.strip().lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off"}:
                return False
            raise ValueError(raw)
        if kind in {"array", "object"}:
            return yaml.safe_load(raw)
    except (ValueError, yaml.YAMLError):
        shown = REDACTED if _is_secret(keys) else repr(raw)
        plain = ": expected plain digits 0-9" if kind == "integer" else ""
        raise ConfigurationError(
            f"environment variable {var}: {shown} is not a valid {kind}{plain}",
            {"variable": var},
        ) from None
    return raw


def _env_variables(environ: Mapping[str, str] | None = None) -> list[tuple[str, list[str]]]:
    """``(variable, key path)`` of every ``ECOD_<SECTION>__<KEY>`` variable, sorted."""
    environ = os.environ if environ is None else environ
    return [
        (var, [part.lower() for part in var[len(ENV_PREFIX) :].split("__")])
        for var in sorted(environ)
        if var.startswith(ENV_PREFIX) and "__" in var
    ]


def env_overrides(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``ECOD_DATABASE__PASSWORD=x`` -> ``{'database': {'password': 'x'}}``.

    Only names with ``__`` count, so ``ECOD_CONFIG_PATH`` and friends are not
    mistaken for sections.
    """
    environ = os.environ if environ is None else environ
    result: dict[str, Any] = {}
    for var, keys in _env_variables(environ):
        if not all(keys):
            raise ConfigurationError(f"environment variable {var}: empty section or key name")
        node = result
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigurationError(f"environment variable {var} conflicts with another")
        node[keys[-1]] = _coerce_env_value(keys, environ[var], var)
    return result


def resolve_config_path(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> tuple[Path | None, bool]:
    """The config file to read and whether it was asked for explicitly.

    An explicitly named file must exist; the default ``config/config.yml`` may be absent.
    """
    environ = os.environ if environ is None else environ
    if path is not None:
        return Path(path), True
    if environ.get("ECOD_CONFIG_PATH"):
        return Path(environ["ECOD_CONFIG_PATH"]), True
    return DEFAULT_CONFIG_PATH, False


def _normalize(config: dict[str, Any]) -> None:
    """Forgiving fixes before validation (the original accepted these)."""
    manager = config.get("job_manager")
    if isinstance(manager, dict) and isinstance(manager.get("type"), str):
        manager["type"] = manager["type"].strip().lower()
    database = config.get("database")
    if isinstance(database, dict) and isinstance(database.get("password"), int | float):
        database["password"] = str(database["password"])  # `password: 1234` in YAML
    if config.get("modules") is None:
        config["modules"] = []


def load_config(
    path: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Load, merge and validate the configuration; see the module docstring."""
    config_path, explicit = resolve_config_path(path, environ)
    config = copy.deepcopy(DEFAULTS)
    sources: list[_Source | _EnvSource] = []
    if config_path is not None and (explicit or config_path.exists()):
        data, source = _read_yaml(config_path)
        config = deep_merge(config, data)
        sources.append(source)
        local_path = config_path.parent / LOCAL_CONFIG_NAME
        if local_path.exists():
            local, local_source = _read_yaml(local_path)
            config = deep_merge(config, local)
            sources.append(local_source)
    config = deep_merge(config, env_overrides(environ))
    blamed = {
        tuple(keys): var
        for var, keys in _env_variables(environ)
        if not (overrides and _has_path(overrides, keys))  # a caller's override won
    }
    sources.append(_EnvSource(blamed))
    if overrides:
        config = deep_merge(config, overrides)
    _normalize(config)
    validate_config(config, sources)
    if config_path is not None and any(isinstance(s, _Source) for s in sources):
        config.setdefault("_meta", {})["config_path"] = str(config_path.resolve())
    return config


def _has_path(mapping: Mapping[str, Any], keys: list[str]) -> bool:
    node: Any = mapping
    for key in keys:
        if not isinstance(node, Mapping) or key not in node:
            return False
        node = node[key]
    return True


def from_mapping(config: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a dict given by a caller (the seed API takes dicts), merged over defaults."""
    if not isinstance(config, Mapping):
        raise ConfigurationError(f"configuration must be a mapping, got {type(config).__name__}")
    merged = deep_merge(DEFAULTS, {k: v for k, v in config.items() if k != "_meta"})
    _normalize(merged)
    validate_config(merged)
    if "_meta" in config:
        merged["_meta"] = copy.deepcopy(config["_meta"])
    return merged


# --------------------------------------------------------------------------- validation


def _is_secret(keys: Sequence[str | int]) -> bool:
    return any(k == "password" for k in keys) or [str(k) for k in keys[:2]] == ["dashboard", "token"]


def _format_value(keys: list[str | int], value: Any) -> str:
    if _is_secret(keys):
        return REDACTED
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _explain(error: Any) -> tuple[list[str | int], str]:
    """Turn a jsonschema error into (key path, 'value ...: expected ...')."""
    keys: list[str | int] = list(error.absolute_path)
    schema = error.schema if isinstance(error.schema, dict) else {}
    validator = error.validator
    if validator == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        unknown = extra[0] if extra else "?"
        return [*keys, unknown], (
            f"unknown key {unknown!r}: expected one of {', '.join(allowed) or '(none)'}"
        )
    if validator == "required":
        missing = [k for k in error.validator_value if k not in error.instance]
        return [*keys, missing[0] if missing else "?"], "required key is missing"
    if validator == "propertyNames":
        return keys, f"{error.message}"
    value = _format_value(keys, error.instance)
    expected = schema.get("x-expected")
    if expected is None:
        if validator == "type":
            expected = f"a value of type {error.validator_value}"
        elif validator == "enum":
            expected = "one of " + ", ".join(map(str, error.validator_value))
        elif validator in {"minimum", "maximum", "minLength", "maxLength"}:
            expected = f"{validator} {error.validator_value}"
        else:
            expected = error.message
    return keys, f"value {value} is not valid: expected {expected}"


def _located(keys: list[str | int], sources: list[_Source | _EnvSource]) -> str:
    dotted = ".".join(str(k) for k in keys) or "(top level)"
    for source in reversed(sources):  # the later layer wins, so it is the one to blame
        if isinstance(source, _EnvSource):
            var = source.variable_for(keys)
            if var is not None:
                return f"environment variable {var}: {dotted}"
            continue
        line = _line_of(source, keys)
        if line is not None and _line_of(source, keys[:1]) is not None:
            return f"{source.path} line {line}: {dotted}"
    return dotted


def validate_config(config: Mapping[str, Any], sources: list[_Source | _EnvSource] | None = None) -> None:
    """Raise ``ConfigurationError`` describing the first problems found."""
    import jsonschema  # local: only needed here

    sources = sources or []
    validator = jsonschema.Draft202012Validator(config_schema())
    body = {k: v for k, v in config.items() if k != "_meta"}
    errors = sorted(validator.iter_errors(body), key=lambda e: list(map(str, e.absolute_path)))
    messages: list[str] = []
    first_keys: list[str | int] | None = None
    for error in errors:
        keys, text = _explain(error)
        first_keys = first_keys or keys
        messages.append(f"{_located(keys, sources)}: {text}")
    if not messages:
        for name, spec in (config.get("job_types") or {}).items():
            keys = ["job_types", name, "command"]
            try:
                used = template_placeholders(spec["command"])
            except ValueError as exc:
                messages.append(f"{_located(keys, sources)}: bad command template: {exc}")
                continue
            unknown = [p for p in used if p not in COMMAND_PLACEHOLDERS and not _OUT_FIELD.match(p)]
            if unknown:
                first_keys = first_keys or keys
                allowed = ", ".join(f"{{{p}}}" for p in sorted(COMMAND_PLACEHOLDERS))
                messages.append(
                    f"{_located(keys, sources)}: unknown placeholder {{{unknown[0]}}} in "
                    f"{spec['command']!r}: expected only {allowed} (write {{{{ and }}}} "
                    "for literal braces)"
                )
        messages.extend(_output_problems(config, sources))
        if not messages:
            from .pipelines import pipeline_problems

            messages.extend(f"{_located(keys, sources)}: {text}" for keys, text in pipeline_problems(config))
        default = (config.get("pipeline") or {}).get("default_job_type")
        if default and default not in (config.get("job_types") or {}):
            messages.append(
                f"{_located(['pipeline', 'default_job_type'], sources)}: value {default!r} is "
                f"not valid: expected one of the job_types "
                f"({', '.join(config.get('job_types') or {}) or 'none defined'})"
            )
    if messages:
        shown = messages[:5] + ([f"... and {len(messages) - 5} more"] if len(messages) > 5 else [])
        raise ConfigurationError(
            "invalid configuration: " + "; ".join(shown),
            {"errors": messages, "key": ".".join(map(str, first_keys or []))},
        )


def _output_problems(config: Mapping[str, Any], sources: list[_Source | _EnvSource]) -> list[str]:
    """Output templates with unknown placeholders; commands naming undeclared outputs."""
    messages = []
    job_types = config.get("job_types") or {}
    declared = {ft for spec in job_types.values() for ft in (spec.get("outputs") or {})}
    for name, spec in job_types.items():
        for file_type, template in (spec.get("outputs") or {}).items():
            keys: list[str | int] = ["job_types", name, "outputs", file_type]
            try:
                used = template_placeholders(template)
            except ValueError as exc:
                messages.append(f"{_located(keys, sources)}: bad output template {template!r}: {exc}")
                continue
            if unknown := [p for p in used if p not in OUTPUT_PLACEHOLDERS]:
                allowed = ", ".join(f"{{{p}}}" for p in sorted(OUTPUT_PLACEHOLDERS))
                messages.append(
                    f"{_located(keys, sources)}: unknown placeholder {{{unknown[0]}}} in output template"
                    f" {template!r}: expected only {allowed}"
                )
            elif template.startswith("/") or ".." in Path(template).parts:
                messages.append(
                    f"{_located(keys, sources)}: output template {template!r} must be a path relative to"
                    " the batch's base path, without '..'"
                )
        try:
            named = output_references(spec["command"])
        except ValueError:
            continue  # reported with the command's other placeholders
        if missing := [ft for ft in named if ft not in declared]:
            messages.append(
                f"{_located(['job_types', name, 'command'], sources)}: {{out[{missing[0]}]}} names a file"
                " type no job type declares in its outputs"
                f" (declared: {', '.join(sorted(declared)) or 'none'})"
            )
    return messages


# --------------------------------------------------------------------------- helpers


def redact(config: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy safe to print or log: the password and the dashboard's token are masked."""
    result = copy.deepcopy(dict(config))
    for section, key in (("database", "password"), ("dashboard", "token")):
        part = result.get(section)
        if isinstance(part, dict) and part.get(key):
            part[key] = REDACTED
    return result


def config_hash(config: Mapping[str, Any]) -> str:
    """Stable short hash of the effective configuration (secrets excluded). Without the
    dashboard section: it changes nothing a run does (and a run's hash stays as before it)."""
    body = {k: v for k, v in redact(config).items() if k not in ("_meta", "dashboard")}
    canonical = json.dumps(body, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def is_embedded(config: Mapping[str, Any]) -> bool:
    """No server named (or ``embedded: true``): use the private embedded PostgreSQL."""
    database = config.get("database") or {}
    return bool(database.get("embedded", "host" not in database))


@dataclass(frozen=True)
class JobTypeSpec:
    """A job type with every default resolved: what a chunk of it needs."""

    name: str
    command: str
    batch_size: int
    threads: int
    memory: str
    time: str
    partition: str | None
    account: str | None
    slurm_extra: str | None
    stage: str
    item_timeout: int
    check_inputs: bool = True
    outputs: Mapping[str, str] = dataclass_field(default_factory=dict)  # file type -> template
    metrics: tuple[str, ...] = ()  # the numbers its command reports
    # its own list replaces the top-level one: each stage names the tools it needs
    modules: tuple[str, ...] = ()
    # the top-level variables, then its own over them
    environment: Mapping[str, str] = dataclass_field(default_factory=dict)

    @property
    def mem_mb(self) -> int:
        return memory_to_mb(self.memory)

    @property
    def runtime_minutes(self) -> int:
        return max(1, -(-time_to_seconds(self.time) // 60))


def default_job_type(config: Mapping[str, Any]) -> str:
    job_types = config.get("job_types") or {}
    chosen = (config.get("pipeline") or {}).get("default_job_type")
    if chosen:
        return str(chosen)
    if not job_types:
        raise ConfigurationError("no job_types are configured: add one under 'job_types'")
    return next(iter(job_types))


def job_type_spec(config: Mapping[str, Any], name: str | None = None) -> JobTypeSpec:
    """Resolve a job type against ``pipeline`` and ``slurm`` defaults."""
    job_types = config.get("job_types") or {}
    name = name or default_job_type(config)
    if name not in job_types:
        known = ", ".join(job_types) or "none defined"
        raise ConfigurationError(
            f"unknown job type {name!r}: expected one of the configured job_types ({known})",
            {"job_type": name},
        )
    spec = job_types[name]
    pipeline = config.get("pipeline") or {}
    slurm = config.get("slurm") or {}
    return JobTypeSpec(
        name=name,
        command=spec["command"],
        batch_size=int(spec.get("batch_size", pipeline.get("batch_size", 100))),
        threads=int(spec.get("threads", pipeline.get("default_threads", 1))),
        memory=str(spec.get("memory", pipeline.get("default_memory", "4G"))),
        time=str(spec.get("time", pipeline.get("default_time", "01:00:00"))),
        partition=spec.get("partition", slurm.get("partition")),
        account=spec.get("account", slurm.get("account")),
        slurm_extra=spec.get("slurm_extra", slurm.get("extra")),
        stage=str(spec.get("stage", name)),
        item_timeout=int(spec.get("item_timeout", pipeline.get("item_timeout", 0))),
        check_inputs=bool(spec.get("check_inputs", True)),
        outputs=dict(spec.get("outputs") or {}),
        metrics=tuple(spec.get("metrics") or ()),
        modules=tuple(spec["modules"] if spec.get("modules") is not None else config.get("modules") or ()),
        environment={**(config.get("environment") or {}), **(spec.get("environment") or {})},
    )
