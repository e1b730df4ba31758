"""What ecod-jobs ships beside the package: the workflow, the profiles, the Snakemake plugins.

Where they are in this install, and a check that Snakemake finds them.

- **Workflow and profiles.** A wheel (``pip install .``) carries ``workflow/`` and
  ``profiles/`` as ``ecod_jobs/_bundled/`` (``hatch_build.py``); an editable install
  (``pip install -e .``, ``make``) has no copies and uses the source tree's own.
- **Plugins.** The logger plugin ``ecod-jobs`` and the executor plugin ``ecod-slurm``
  are the top-level packages ``snakemake_logger_plugin_ecod_jobs`` and
  ``snakemake_executor_plugin_ecod_slurm``. Snakemake finds plugins only by walking
  ``sys.path`` with ``pkgutil`` for modules of such names, so an install that Python
  imports through an import hook (setuptools' default editable install) hides them
  from Snakemake, and its command line then refuses the profile's ``--logger
  ecod-jobs``. :func:`check_bundle` asks Snakemake's own plugin registries, in this
  process, before a run plans anything.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .exceptions import ConfigurationError, ValidationError

PACKAGE_DIR = Path(__file__).resolve().parent
SOURCE_ROOT = PACKAGE_DIR.parent


def shipped_dir(name: str) -> Path:
    """``workflow`` or ``profiles``: the wheel's copy if this install has one, else the source tree's."""
    bundled = PACKAGE_DIR / "_bundled" / name
    return bundled if bundled.is_dir() else SOURCE_ROOT / name


WORKFLOW_DIR = shipped_dir("workflow")
SNAKEFILE = WORKFLOW_DIR / "Snakefile"
PROFILES = shipped_dir("profiles")

# ecod-jobs' own plugins: (kind, Snakemake name) -> module
OWN_PLUGINS: dict[tuple[str, str], str] = {
    ("logger", "ecod-jobs"): "snakemake_logger_plugin_ecod_jobs",
    ("executor", "ecod-slurm"): "snakemake_executor_plugin_ecod_slurm",
}
BUILTIN_EXECUTORS = frozenset({"local", "dryrun", "touch"})  # part of Snakemake itself


def profile_names() -> list[str]:
    """The shipped profiles: ``['local', 'slurm']``."""
    if not PROFILES.is_dir():
        return []
    return sorted(p.name for p in PROFILES.iterdir() if (p / "config.yaml").is_file())


def shipped_profile(name: str) -> Path:
    """The directory of the shipped profile ``name``."""
    if name not in profile_names():
        raise ValidationError(
            f"no shipped profile {name!r}: the profiles in {PROFILES} are"
            f" {', '.join(profile_names()) or 'none'}"
        )
    return PROFILES / name


def profile_settings(profile_dir: Path) -> dict[str, Any]:
    """A profile's ``config.yaml`` as a mapping."""
    import yaml

    try:
        settings = yaml.safe_load((profile_dir / "config.yaml").read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValidationError(f"profile {profile_dir / 'config.yaml'} is not valid YAML: {exc}") from None
    return settings if isinstance(settings, dict) else {}


def profile_plugins(settings: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The Snakemake plugins a profile names: ``[('logger', 'ecod-jobs'), ('executor', 'ecod-slurm')]``
    for the slurm profile (an executor built into Snakemake is left out)."""
    loggers = settings.get("logger") or []
    wanted = [("logger", str(name)) for name in ([loggers] if isinstance(loggers, str) else loggers)]
    executor = str(settings.get("executor") or "local")
    if executor not in BUILTIN_EXECUTORS:
        wanted.append(("executor", executor))
    return wanted


def registered_plugins(kind: str) -> set[str]:
    """The names Snakemake's own registry of ``kind`` (``logger`` or ``executor``) finds now.

    The registries are process-wide singletons that scan ``sys.path`` once; this scans
    afresh, so the answer is what a Snakemake started now would see (the workflow's
    subprocess has the same ``sys.path``, plus its working directory).
    """
    registry: Any
    if kind == "logger":
        from snakemake_interface_logger_plugins.registry import LoggerPluginRegistry

        registry = LoggerPluginRegistry()
    else:
        from snakemake_interface_executor_plugins.registry import ExecutorPluginRegistry

        registry = ExecutorPluginRegistry()
    registry.collect_plugins()
    return set(registry.plugins)


def install_hint() -> str:
    """How to reinstall ecod-jobs so that Snakemake finds its plugins."""
    in_tree = (SOURCE_ROOT / "pyproject.toml").is_file()
    source = str(SOURCE_ROOT) if in_tree else "<ecod-jobs source directory>"
    return (
        f"reinstall ecod-jobs with 'pip install {source}' or 'pip install -e {source}' (its hatchling"
        " build makes the plugins plain top-level modules; see the README's install section)"
    )


def missing_plugin_message(kind: str, name: str, profile_dir: Path) -> str:
    """One line: which plugin Snakemake cannot find, and how to fix the install."""
    module = OWN_PLUGINS.get((kind, name))
    if module is None:
        package = f"snakemake-{kind}-plugin-{name}"
        return (
            f"Snakemake finds no {kind} plugin {name!r}, which profile {profile_dir} names:"
            f" install {package} into this environment, or remove it from the profile"
        )
    return (
        f"Snakemake cannot find ecod-jobs' {kind} plugin {name!r} (module {module}), which profile"
        f" {profile_dir} names, so the workflow would fail before it starts: Snakemake finds plugins"
        f" only as top-level modules on sys.path, and this install of ecod-jobs hides them"
        f" (e.g. setuptools' default editable install); {install_hint()}"
    )


def check_bundle(profile_dir: Path) -> None:
    """Raise ``ConfigurationError`` (one line) unless the workflow is here and Snakemake finds
    every plugin the profile names: its loggers and, unless built in, its executor."""
    if not SNAKEFILE.is_file():
        raise ConfigurationError(
            f"the workflow is not at {SNAKEFILE}: this install of ecod-jobs lacks it; {install_hint()}"
        )
    wanted = profile_plugins(profile_settings(profile_dir))
    found: dict[str, set[str]] = {}
    for kind, name in wanted:
        if kind not in found:
            try:
                found[kind] = registered_plugins(kind)
            except Exception as exc:  # a broken plugin breaks Snakemake's command line the same way
                detail = " ".join(str(exc).split())
                raise ConfigurationError(
                    f"Snakemake's {kind} plugins cannot be loaded ({type(exc).__name__}: {detail})"
                ) from None
        if name not in found[kind]:
            raise ConfigurationError(missing_plugin_message(kind, name, profile_dir))


def copy_profiles(dest: Path, force: bool = False) -> list[Path]:
    """Copy the shipped profiles into ``dest`` (``dest/local``, ``dest/slurm``).

    Each copy names the installed Snakefile by its absolute path (``snakefile:``), so
    ``snakemake --profile DEST/local --config batch_id=N`` works from any directory.
    An existing ``dest/NAME`` is an error unless ``force`` (then it is replaced).
    """
    names = profile_names()
    if not names:
        raise ConfigurationError(f"no profiles at {PROFILES}: this install of ecod-jobs lacks them")
    targets = [dest / name for name in names]
    existing = [str(t) for t in targets if t.exists() or t.is_symlink()]
    if existing and not force:
        what = " and ".join(existing) + (" already exists" if len(existing) == 1 else " already exist")
        raise ValidationError(f"{what}; --force replaces {'it' if len(existing) == 1 else 'them'}")
    dest.mkdir(parents=True, exist_ok=True)
    for name, target in zip(names, targets, strict=True):
        if target.is_symlink() or target.is_file():
            target.unlink()
        elif target.exists():
            shutil.rmtree(target)
        shutil.copytree(PROFILES / name, target)
        config = target / "config.yaml"
        config.write_text(with_snakefile(config.read_text(), SNAKEFILE))
    return targets


def with_snakefile(text: str, snakefile: Path) -> str:
    """A profile's text with its ``snakefile:`` line naming ``snakefile`` (added if it has none)."""
    line = f"snakefile: {json.dumps(str(snakefile))}"  # a JSON string is a YAML string
    replaced, count = re.subn(r"(?m)^snakefile:.*$", lambda _m: line, text)
    return replaced if count else text.rstrip("\n") + "\n" + line + "\n"


__all__ = [
    "PROFILES",
    "SNAKEFILE",
    "WORKFLOW_DIR",
    "check_bundle",
    "copy_profiles",
    "profile_names",
    "registered_plugins",
    "shipped_profile",
]
