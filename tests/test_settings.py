"""Settings: defaults, code overrides, environment variables, in that order."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from gopherq import settings as settings_module
from gopherq.errors import ConfigurationError
from gopherq.settings import Settings


def test_defaults() -> None:
    settings = Settings.load({}, {})
    assert settings == Settings()
    assert settings.broker_url is None
    assert settings.eager is False
    assert settings.max_message_size == 1024 * 1024
    assert settings.result_expires == 86400.0
    assert settings.concurrency is None


def test_code_overrides_defaults() -> None:
    settings = Settings.load({"broker_url": "memory://", "prefetch": 4}, {})
    assert (settings.broker_url, settings.prefetch) == ("memory://", 4)
    assert settings.lease_seconds == Settings().lease_seconds


def test_environment_overrides_code() -> None:
    settings = Settings.load(
        {"broker_url": "sqlite:///code.db", "prefetch": 4},
        {"GOPHERQ_BROKER_URL": "redis://ops:6379/0"},
    )
    assert settings.broker_url == "redis://ops:6379/0"
    assert settings.prefetch == 4


def test_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOPHERQ_BROKER_URL", "memory://")
    assert Settings.load({}).broker_url == "memory://"


def test_settings_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().eager = True  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        *[(text, True) for text in ("1", "true", "YES", " on ")],
        *[(text, False) for text in ("0", "false", "No", "off", "")],
    ],
)
def test_bool_from_the_environment(text: str, value: bool) -> None:
    assert Settings.load({}, {"GOPHERQ_EAGER": text}).eager is value


def test_numbers_from_the_environment() -> None:
    settings = Settings.load(
        {},
        {
            "GOPHERQ_PREFETCH": "32",
            "GOPHERQ_LEASE_SECONDS": "2.5",
            "GOPHERQ_RESULT_EXPIRES": "60",
            "GOPHERQ_CONCURRENCY": "8",
        },
    )
    assert (settings.prefetch, settings.lease_seconds) == (32, 2.5)
    assert settings.result_expires == 60.0
    assert isinstance(settings.result_expires, float)
    assert settings.concurrency == 8


def test_empty_optional_means_none() -> None:
    settings = Settings.load(
        {"concurrency": 4, "broker_url": "memory://"},
        {"GOPHERQ_CONCURRENCY": "", "GOPHERQ_BROKER_URL": ""},
    )
    assert (settings.concurrency, settings.broker_url) == (None, None)


@pytest.mark.parametrize(
    ("var", "text"),
    [
        ("GOPHERQ_EAGER", "maybe"),
        ("GOPHERQ_PREFETCH", "1.5"),
        ("GOPHERQ_PREFETCH", "many"),
        ("GOPHERQ_LEASE_SECONDS", "soon"),
        ("GOPHERQ_CONCURRENCY", "all"),
    ],
)
def test_bad_values_from_the_environment(var: str, text: str) -> None:
    with pytest.raises(ConfigurationError, match=f"{var}='{text}' is not a valid"):
        Settings.load({}, {var: text})


def test_unknown_setting_in_code_suggests_the_closest() -> None:
    with pytest.raises(
        ConfigurationError, match="unknown setting 'broker_ur'; did you mean 'broker_url'"
    ):
        Settings.load({"broker_ur": "memory://"}, {})


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("prefetch", "16", "'prefetch' must be int, not str"),
        ("prefetch", True, "'prefetch' must be int, not bool"),
        ("lease_seconds", "30", "'lease_seconds' must be float, not str"),
        ("eager", 1, "'eager' must be bool, not int"),
        ("broker_url", 6379, "'broker_url' must be str or None, not int"),
        ("beat_schedule", [], "'beat_schedule' must be Mapping or None, not list"),
    ],
)
def test_values_of_the_wrong_type_in_code(name: str, value: object, expected: str) -> None:
    with pytest.raises(ConfigurationError, match=expected):
        Settings.load({name: value}, {})


def test_values_of_the_right_type_in_code() -> None:
    settings = Settings.load(
        {"lease_seconds": 5, "concurrency": None, "beat_schedule": {}, "events": False}, {}
    )
    assert (settings.lease_seconds, settings.events) == (5, False)


def test_events_may_be_switched_off_or_on_with_a_bool() -> None:
    from gopherq.events import event_backend_for

    assert event_backend_for(False, "redis://h/0") is None
    assert event_backend_for(True, "redis://h/0") == "redis://h/0"
    assert event_backend_for(True, "amqp://h//") is None  # no event backend there


def test_unknown_environment_variable_is_ignored_with_one_warning(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Other tools use the prefix too: a variable that is not a setting breaks nothing."""
    monkeypatch.setattr(settings_module, "_warned", set())
    environ = {"GOPHERQ_PREFECH": "3", "GOPHERQ_LEASE_SECONDS": "5"}
    with caplog.at_level(logging.WARNING, logger="gopherq.settings"):
        first = Settings.load({}, environ)
        Settings.load({}, environ)
    assert first.lease_seconds == 5
    assert first.prefetch == Settings().prefetch
    [record] = caplog.records
    assert record.getMessage() == (
        "ignoring environment variable GOPHERQ_PREFECH: no setting 'prefech'; "
        "did you mean 'prefetch'?"
    )


def test_unknown_name_without_a_close_match() -> None:
    with pytest.raises(ConfigurationError) as info:
        Settings.load({"zzzzzz": 1}, {})
    assert "did you mean" not in str(info.value)


def test_non_settings_variables_are_ignored() -> None:
    environ = {
        "GOPHERQ_APP": "myproject.tasks",
        "GOPHERQ_REQUIRE_SERVICES": "1",
        "GOPHERQ_TEST_REDIS_URL": "redis://localhost",
        "GOPHERQ_TEST_ANYTHING": "x",
        "OTHER_BROKER_URL": "amqp://",
        "CELERY_BROKER_URL": "amqp://",
    }
    assert Settings.load({}, environ) == Settings()
