"""Configuration: precedence, environment overrides, validation messages, redaction."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from helpers import run_cli

from ecod_jobs.config import (
    DEFAULTS,
    config_hash,
    job_type_spec,
    load_config,
    memory_to_mb,
    redact,
    time_to_seconds,
)
from ecod_jobs.exceptions import ConfigurationError

SEED_EXAMPLE = """\
database:
  host: localhost
  port: 5432
  database: ecod
  user: ecod_user
  password: ecod_pass
job_manager:
  type: slurm
modules:
  - bioinfo
  - blast/2.13.0
  - python/3.9
pipeline:
  batch_size: 100
  default_threads: 8
  default_memory: "16G"
  default_time: "04:00:00"
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_seed_complete_example_loads(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path / "c.yml", SEED_EXAMPLE), environ={})
    assert cfg["database"]["user"] == "ecod_user"
    assert cfg["job_manager"]["type"] == "slurm"
    assert cfg["modules"] == ["bioinfo", "blast/2.13.0", "python/3.9"]
    assert cfg["pipeline"]["default_memory"] == "16G"


def test_precedence_file_local_env_overrides(tmp_path: Path) -> None:
    main = write(tmp_path / "config.yml", SEED_EXAMPLE)
    write(tmp_path / "config.local.yml", "database:\n  password: from_local\n  port: 6000\n")
    env = {"ECOD_DATABASE__PORT": "7000", "ECOD_PIPELINE__BATCH_SIZE": "7"}
    cfg = load_config(main, overrides={"pipeline": {"batch_size": 9}}, environ=env)
    assert cfg["database"]["password"] == "from_local"  # local over file
    assert cfg["database"]["port"] == 7000  # env over local, typed by the schema
    assert cfg["pipeline"]["batch_size"] == 9  # explicit over env
    assert cfg["database"]["host"] == "localhost"  # untouched keys kept
    assert cfg["pipeline"]["default_threads"] == 8


def test_path_from_env_var_and_default_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg_file = write(tmp_path / "other.yml", "pipeline:\n  batch_size: 3\n")
    assert load_config(environ={"ECOD_CONFIG_PATH": str(cfg_file)})["pipeline"]["batch_size"] == 3
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config").mkdir()
    write(tmp_path / "config" / "config.yml", "pipeline:\n  batch_size: 4\n")
    assert load_config(environ={})["pipeline"]["batch_size"] == 4
    # an explicit path beats the environment variable
    assert load_config(cfg_file, environ={"ECOD_CONFIG_PATH": "/nope.yml"})["pipeline"]["batch_size"] == 3


def test_numeric_password_stays_string(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path / "c.yml", SEED_EXAMPLE), environ={"ECOD_DATABASE__PASSWORD": "0123"})
    assert cfg["database"]["password"] == "0123"
    cfg = load_config(write(tmp_path / "d.yml", "database:\n  host: h\n  password: 4567\n"), environ={})
    assert cfg["database"]["password"] == "4567"


def test_defaults_never_mutated(tmp_path: Path) -> None:
    before = copy.deepcopy(DEFAULTS)
    cfg = load_config(write(tmp_path / "c.yml", SEED_EXAMPLE), environ={})
    cfg["pipeline"]["batch_size"] = 1
    cfg["modules"].append("x")
    load_config(write(tmp_path / "e.yml", "modules: [a]\n"), environ={})
    assert before == DEFAULTS


def test_job_manager_type_case_insensitive(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path / "c.yml", "job_manager:\n  type: SLURM\n"), environ={})
    assert cfg["job_manager"]["type"] == "slurm"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "pipeline:\n  batch_sise: 5\n",
            ["line 2", "pipeline.batch_sise", "unknown key 'batch_sise'", "batch_size"],
        ),
        ("surprise: 1\n", ["line 1", "surprise", "unknown key"]),
        ("pipeline:\n  batch_size: many\n", ["line 2", "pipeline.batch_size", "'many'", "integer"]),
        ("pipeline:\n  default_memory: 16GiB\n", ["pipeline.default_memory", "'16GiB'", "500M, 16G"]),
        ("pipeline:\n  default_time: 4h\n", ["pipeline.default_time", "'4h'", "HH:MM:SS or D-HH:MM:SS"]),
        ("job_manager:\n  type: pbs\n", ["job_manager.type", "'pbs'", "local, slurm"]),
        (
            "job_types:\n  blast:\n    command: 'run {item} {path}'\n",
            ["line 3", "job_types.blast.command", "{item}", "{item_id}"],
        ),
        ("job_types:\n  blast:\n    memory: 4G\n", ["job_types.blast.command", "required"]),
        (
            "job_types:\n  blast:\n    command: x\n    time: '25:00'\n",
            ["line 4", "job_types.blast.time", "'25:00'"],
        ),
        ("database:\n  port: 99999\n", ["database.port", "99999", "maximum 65535"]),
        ("pipeline:\n  default_job_type: nope\n", ["pipeline.default_job_type", "'nope'", "job_types"]),
    ],
)
def test_validation_errors_name_key_value_expectation(tmp_path: Path, text: str, expected: list[str]) -> None:
    path = write(tmp_path / "c.yml", text)
    with pytest.raises(ConfigurationError) as info:
        load_config(path, environ={})
    message = str(info.value)
    for fragment in expected:
        assert fragment in message, (fragment, message)
    if "line" in expected[0]:
        assert str(path) in message


def test_env_override_bad_value_names_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="ECOD_PIPELINE__BATCH_SIZE"):
        load_config(environ={"ECOD_PIPELINE__BATCH_SIZE": "lots"})
    with pytest.raises(ConfigurationError, match="pipeline.nonsense"):
        load_config(environ={"ECOD_PIPELINE__NONSENSE": "1"})


def test_not_yaml_not_mapping_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"line 2.*not valid YAML"):
        load_config(write(tmp_path / "a.yml", "pipeline:\n  batch_size: 1: 2\n"), environ={})
    with pytest.raises(ConfigurationError, match="expected a mapping"):
        load_config(write(tmp_path / "b.yml", "- a\n- b\n"), environ={})
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_config(tmp_path / "missing.yml", environ={})


def test_password_never_in_errors_or_redacted_output(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as info:
        load_config(write(tmp_path / "c.yml", "database:\n  host: h\n  password: [s3cr3t]\n"), environ={})
    assert "s3cr3t" not in str(info.value)
    cfg = load_config(write(tmp_path / "d.yml", SEED_EXAMPLE), environ={})
    assert "ecod_pass" not in yaml.safe_dump(redact(cfg))
    assert cfg["database"]["password"] == "ecod_pass"  # redact copies
    assert config_hash(cfg) == config_hash(load_config(tmp_path / "d.yml", environ={}))


def test_units() -> None:
    assert memory_to_mb("16G") == 16384
    assert memory_to_mb("500M") == 500
    assert memory_to_mb("1.5T") == 1572864
    assert time_to_seconds("04:00:00") == 14400
    assert time_to_seconds("1-12:00:00") == 129600
    with pytest.raises(ConfigurationError):
        memory_to_mb("lots")


def test_job_type_spec_inherits_pipeline_defaults(tmp_path: Path) -> None:
    cfg = load_config(
        write(
            tmp_path / "c.yml", SEED_EXAMPLE + "job_types:\n  blast:\n    command: b {path}\n    threads: 4\n"
        ),
        environ={},
    )
    spec = job_type_spec(cfg, "blast")
    assert (spec.threads, spec.memory, spec.time, spec.batch_size) == (4, "16G", "04:00:00", 100)
    assert spec.mem_mb == 16384 and spec.runtime_minutes == 240
    with pytest.raises(ConfigurationError, match="unknown job type 'hh'.*blast"):
        job_type_spec(cfg, "hh")


def test_job_type_modules_replace_and_environment_extends_the_top_level(tmp_path: Path) -> None:
    from ecod_jobs.plan import job_fields

    text = SEED_EXAMPLE + (
        "environment:\n  BLASTDB: /db/blast\n  TMPDIR: /scratch\n"
        "job_types:\n"
        "  blast:\n    command: b {path}\n"
        "  hhsearch:\n    command: h {path}\n    modules: [hhsuite/3.3.0]\n"
        "    environment: {HHLIB: /opt/hh, TMPDIR: /local}\n"
        "  bare:\n    command: x {path}\n    modules: []\n"
    )
    cfg = load_config(write(tmp_path / "c.yml", text), environ={})
    blast, hh, bare = (job_type_spec(cfg, name) for name in ("blast", "hhsearch", "bare"))
    assert blast.modules == ("bioinfo", "blast/2.13.0", "python/3.9")
    assert dict(blast.environment) == {"BLASTDB": "/db/blast", "TMPDIR": "/scratch"}
    assert hh.modules == ("hhsuite/3.3.0",)
    assert dict(hh.environment) == {"BLASTDB": "/db/blast", "TMPDIR": "/local", "HHLIB": "/opt/hh"}
    assert bare.modules == ()  # an empty list loads nothing, not the top-level ones
    # what the chunk runner is given
    fields = job_fields(hh)
    assert (fields["modules"], fields["environment"]) == (hh.modules, dict(hh.environment))
    bad = write(tmp_path / "bad.yml", text.replace("modules: [hhsuite/3.3.0]", "modules: hhsuite"))
    with pytest.raises(ConfigurationError, match=r"job_types\.hhsearch\.modules"):
        load_config(bad, environ={})


def test_cli_config_errors_exit_2_without_traceback(tmp_path: Path) -> None:
    bad = write(tmp_path / "c.yml", "pipeline:\n  default_memory: lots\n")
    result = run_cli("--config", str(bad), "config", "validate")
    assert result.returncode == 2
    assert "pipeline.default_memory" in result.stderr and "'lots'" in result.stderr
    assert "Traceback" not in result.stderr
    debug = run_cli("--debug", "--config", str(bad), "config", "validate")
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_cli_config_show_masks_password(tmp_path: Path) -> None:
    good = write(tmp_path / "c.yml", SEED_EXAMPLE)
    result = run_cli("--config", str(good), "config", "show")
    assert result.returncode == 0, result.stderr
    assert "ecod_pass" not in result.stdout and "********" in result.stdout
    assert yaml.safe_load(result.stdout)["database"]["user"] == "ecod_user"


def test_repo_config_is_valid() -> None:
    from helpers import REPO

    cfg = load_config(REPO / "config" / "config.yml", environ={})
    assert "domain_scan" in cfg["job_types"]
