"""Configuration: file, environment, flags and Java properties, with clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from trailproc import Config, ConfigError, load_config
from trailproc._cli import main


def test_defaults() -> None:
    config = load_config(env={})
    assert config.visibility_timeout == 60
    assert config.wait_time_seconds == 20
    assert config.max_decompressed_bytes == 1 << 30
    assert config.process_kinds == ["log", "insight"]
    assert config.delete_on_failure is False


def test_precedence_file_then_env_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "trailproc.toml"
    path.write_text(
        '[trailproc]\nqueue_url = "https://file"\nvisibility_timeout = 90\n'
        "max_events_per_emit = 5\n"
    )
    env = {"TRAILPROC_VISIBILITY_TIMEOUT": "120", "TRAILPROC_HANDLERS": "a:b, c:d"}
    config = load_config(path, env=env, max_events_per_emit=7, queue_url=None)
    assert config.queue_url == "https://file"  # None override does not mask the file
    assert config.visibility_timeout == 120  # env beats file
    assert config.max_events_per_emit == 7  # explicit beats env
    assert config.handlers == ["a:b", "c:d"]


def test_config_path_from_environment(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('queue_url = "https://q"\n')
    assert load_config(env={"TRAILPROC_CONFIG": str(path)}).queue_url == "https://q"


def test_java_properties_file_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "sample.properties"
    path.write_text(
        "# from the Java library\n"
        "accessKey = AKIA...\nsecretKey = x\n"
        "sqsUrl = https://sqs.us-east-1.amazonaws.com/1/q\n"
        "sqsRegion = us-east-1\nvisibilityTimeout = 60\nthreadCount = 4\n"
        "maxEventsPerEmit = 10\nenableRawEventInfo = true\ndeleteMessageUponFailure = false\n"
    )
    config = load_config(path, env={})
    assert config.queue_url == "https://sqs.us-east-1.amazonaws.com/1/q"
    assert config.region == "us-east-1"
    assert config.download_concurrency == 4
    assert config.max_events_per_emit == 10
    assert config.delete_on_failure is False


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TRAILPROC_VISIBILITY_TIMEOUT": "soon"}, "visibility_timeout: Expected `int`"),
        ({"TRAILPROC_MAX_EVENTS_PER_EMIT": "0"}, "max_events_per_emit: Expected `int` >= 1"),
        ({"TRAILPROC_WAIT_TIME_SECONDS": "25"}, "wait_time_seconds: Expected `int` <= 20"),
        ({"TRAILPROC_PROCESS_KINDS": "log,pdf"}, "process_kinds[1]: Invalid enum value 'pdf'"),
        ({"TRAILPROC_LOG_FORMAT": "xml"}, "log_format: Invalid enum value 'xml'"),
    ],
)
def test_invalid_values_name_the_key(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(env=env)
    assert message in str(info.value)


def test_unknown_keys_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("visibilty_timeout = 30\n")
    with pytest.raises(ConfigError, match="unknown configuration key 'visibilty_timeout'"):
        load_config(path, env={})


def test_replace_validates() -> None:
    config = Config()
    assert config.replace(max_in_flight_messages=3).max_in_flight_messages == 3
    with pytest.raises(ConfigError, match="max_in_flight_messages"):
        config.replace(max_in_flight_messages=-1)


def test_cli_reports_bad_config_as_usage_error() -> None:
    result = CliRunner().invoke(
        main, ["run", "--queue-url", "https://q", "--max-events-per-emit", "0"]
    )
    assert result.exit_code == 2
    assert "invalid configuration: max_events_per_emit" in result.output


def test_cli_run_requires_a_queue() -> None:
    result = CliRunner(env={"TRAILPROC_QUEUE_URL": None}).invoke(main, ["run", "--output", "-"])
    assert result.exit_code == 2
    assert "no queue" in result.output


@pytest.mark.parametrize(
    "source",
    [{"env": {"TRAILPROC_ALLOWED_BUCKETS": ""}}, {"env": {"TRAILPROC_ALLOWED_ACCOUNTS": " "}},
     {"env": {"TRAILPROC_ALLOWED_TOPIC_ARNS": "arn:aws:sns:us-east-1:1:t,,"}},
     {"env": {}, "allowed_buckets": ["trail-bucket", ""]}],
    ids=["empty-variable", "blank-variable", "trailing-comma", "python-list"],
)  # fmt: skip
def test_blank_allow_list_entry_is_an_error_not_off(source: dict[str, Any]) -> None:
    """A set but empty allow-list (an unset shell variable expanded into it, a stray
    comma) must stop the start, never quietly allow every bucket, account or topic."""
    with pytest.raises(ConfigError, match="empty entry"):
        load_config(**source)


def test_records_in_messages_are_off_by_default() -> None:
    assert load_config(env={}).accept_records_in_messages is False
    opted_in = load_config(env={"TRAILPROC_ACCEPT_RECORDS_IN_MESSAGES": "true"})
    assert opted_in.accept_records_in_messages is True
