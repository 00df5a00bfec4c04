"""The application API: declaring tasks, sending them, eager mode."""

from __future__ import annotations

import datetime as dt
import importlib
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gopherq import (
    ConfigurationError,
    GopherQ,
    PayloadTooLarge,
    SerializationError,
    State,
    TaskFailed,
    current_task,
)
from gopherq.errors import TaskError
from gopherq.loader import load_app


@pytest.fixture
def app() -> GopherQ:
    return GopherQ("test", broker="memory://")


@pytest.fixture
def eager() -> GopherQ:
    return GopherQ("test", eager=True)


def test_bare_and_configured_decorators(app: GopherQ) -> None:
    @app.task
    def plain(x: int) -> int:
        """Doubles."""
        return x * 2

    @app.task(name="custom", queue="q", priority="high", retries=2, backoff="linear")
    def configured() -> None:
        pass

    assert plain(4) == 8
    assert plain.name == f"{__name__}.test_bare_and_configured_decorators.<locals>.plain"
    assert plain.__doc__ == "Doubles."
    assert configured.options.queue == "q"
    assert configured.options.priority == 1
    assert set(app.tasks) == {plain.name, "custom"}


def test_unknown_task_option_fails_at_decoration(app: GopherQ) -> None:
    with pytest.raises(ConfigurationError, match="did you mean 'retries'"):

        @app.task(retrys=3)
        def f() -> None:
            pass


@pytest.mark.parametrize(
    "options",
    [{"priority": "urgent"}, {"priority": 9}, {"backoff": "random"}, {"retries": -1}],
)
def test_bad_option_values(app: GopherQ, options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        app.task(**options)(lambda: None)


@pytest.mark.parametrize(
    ("option", "meant"),
    [
        ("default_retry_delay", "gopherq has retry_delay"),  # Celery's name: its hint
        ("max_retry_dealy", "did you mean 'max_retry_delay'"),
        ("retry_dealy", "did you mean 'retry_delay'"),
        ("qeue", "did you mean 'queue'"),
        ("retry_delay_base", "did you mean 'retry_delay'"),  # contains a known name
    ],
)
def test_unknown_option_suggests_what_it_means(app: GopherQ, option: str, meant: str) -> None:
    with pytest.raises(ConfigurationError, match=meant):
        app.task(**{option: 1})(lambda: None)


@pytest.mark.parametrize("priority", ["urgent", 9, 1.5])
def test_a_bad_priority_of_one_call_is_a_value_error(app: GopherQ, priority: Any) -> None:
    @app.task
    def f() -> None:
        pass

    with pytest.raises(ValueError, match=r"^send option priority: ") as info:
        f.apply_async(priority=priority)
    assert not isinstance(info.value, ConfigurationError)  # that one is for declarations
    with pytest.raises(ValueError, match=r"^send option priority: "):
        app.send_task("f", priority=priority)


def test_unknown_setting_has_hint() -> None:
    with pytest.raises(ConfigurationError, match="did you mean 'prefetch'"):
        GopherQ("x", prefetsh=3)


def test_environment_overrides_code(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOPHERQ_BROKER_URL", "memory://")
    assert GopherQ("x", broker="sqlite:///nowhere.db").broker_url == "memory://"


def test_default_broker_is_sqlite_and_memory_when_eager(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOPHERQ_BROKER_URL", raising=False)
    monkeypatch.delenv("GOPHERQ_EAGER", raising=False)
    assert GopherQ("x").broker_url == f"sqlite:///{Path(__file__).parent / 'gopherq.db'}"
    assert GopherQ("x", eager=True).broker_url == "memory://"


def test_default_database_is_beside_the_module_whatever_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A producer and a worker started in other directories share one file."""
    for var in ("GOPHERQ_BROKER_URL", "GOPHERQ_EAGER", "GOPHERQ_RESULT_BACKEND"):
        monkeypatch.delenv(var, raising=False)
    package = tmp_path / "proj" / "shop"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "app.py").write_text("from gopherq import GopherQ\napp = GopherQ('shop')\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.syspath_prepend(str(tmp_path / "proj"))
    for cwd in (tmp_path, elsewhere):
        monkeypatch.chdir(cwd)
        sys.modules.pop("shop.app", None)
        app = importlib.import_module("shop.app").app
        assert app.broker_url == f"sqlite:///{package / 'gopherq.db'}"
        assert str(package / "gopherq.db") in repr(app)
    sys.modules.pop("shop.app", None)
    sys.modules.pop("shop", None)


def test_default_database_of_a_script_and_of_python_c(tmp_path: Path) -> None:
    script = tmp_path / "bin" / "job.py"
    script.parent.mkdir()
    script.write_text("from gopherq import GopherQ\nprint(GopherQ('s').broker_url)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOPHERQ_")}
    ran = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert ran.stdout.strip() == f"sqlite:///{script.parent / 'gopherq.db'}", ran.stderr
    code = "from gopherq import GopherQ; print(GopherQ('s').broker_url)"
    ran = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert ran.stdout.strip() == f"sqlite:///{tmp_path / 'gopherq.db'}", ran.stderr


def test_relative_sqlite_urls_are_from_the_cwd_and_shown_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GOPHERQ_BROKER_URL", raising=False)
    monkeypatch.delenv("GOPHERQ_RESULT_BACKEND", raising=False)
    monkeypatch.chdir(tmp_path)
    app = GopherQ("x", broker="sqlite:///data/q.db?x=1", backend="sqlite:///r.db")
    assert app.broker_url == f"sqlite:///{tmp_path / 'data' / 'q.db'}?x=1"
    assert app.settings.result_backend == f"sqlite:///{tmp_path / 'r.db'}"
    assert GopherQ("x", broker="redis://h:1/0").broker_url == "redis://h:1/0"


def test_delay_enqueues_message_with_routing(app: GopherQ) -> None:
    @app.task(queue="mail", priority="low")
    def send(to: str) -> None:
        pass

    result = send.delay("a@b.c")
    assert result.state is State.QUEUED
    [delivery] = app.broker.reserve(["mail"], 10, 0)
    message = app.codec.decode(delivery.body)
    assert (message.id, message.task, message.args, message.priority) == (
        result.id,
        send.name,
        ["a@b.c"],
        3,
    )


def test_apply_async_options(app: GopherQ) -> None:
    @app.task
    def f() -> None:
        pass

    before = time.time()
    result = f.apply_async(countdown=60, priority="critical", queue="other", key="k1")
    assert result.state is State.SCHEDULED
    again = f.apply_async(countdown=60, queue="other", key="k1")
    assert again.id == result.id
    eta = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    assert f.apply_async(eta=eta).state is State.SCHEDULED
    assert app.broker.stats()["other"].scheduled == 1
    assert time.time() - before < 5
    with pytest.raises(ConfigurationError, match="did you mean 'countdown'"):
        f.apply_async(countdwn=3)


def test_wrong_arguments_rejected_at_delay(app: GopherQ) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    with pytest.raises(TypeError, match="missing a required argument"):
        add.delay(1)  # type: ignore[call-arg]


def test_unencodable_argument_names_path_and_writes_nothing(app: GopherQ) -> None:
    @app.task
    def f(data: Any) -> None:
        pass

    with pytest.raises(SerializationError, match=r"args\[0\]\['k'\]\[1\]"):
        f.delay({"k": [1, object()]})
    with pytest.raises(PayloadTooLarge):
        f.delay(b"x" * (2 * 1024 * 1024))
    assert app.broker.stats().get("default") is None or app.broker.stats()["default"].ready == 0


def test_send_many_and_send_task(app: GopherQ) -> None:
    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    results = app.send_many([add.s(1, 2), add.s(3, 4).set(priority="high")])
    assert len({r.id for r in results}) == 2
    by_name = app.send_task("elsewhere.task", [1], {"a": 2})
    assert by_name.state is State.QUEUED
    assert app.broker.stats()["default"].ready == 3


def test_eager_runs_inline_through_codec(eager: GopherQ) -> None:
    @eager.task
    def add(x: int, y: int) -> int:
        return x + y

    @eager.task
    def when(moment: dt.datetime) -> dt.datetime:
        return moment + dt.timedelta(days=1)

    result = add.delay(2, 3)
    assert result.successful()
    assert result.get() == 5
    moment = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert when.delay(moment).get() == moment + dt.timedelta(days=1)
    with pytest.raises(PayloadTooLarge):
        add.delay(b"x" * (2 * 1024 * 1024), 1)  # type: ignore[arg-type]


def test_eager_reraises_with_retries(eager: GopherQ) -> None:
    calls: list[int] = []

    @eager.task(retries=2, retry_delay=0)
    def flaky() -> str:
        calls.append(current_task().attempt)
        if len(calls) < 3:
            raise ValueError("not yet")
        return "ok"

    @eager.task(retries=1, retry_delay=0)
    def broken() -> None:
        raise KeyError("always")

    assert flaky.delay().get() == "ok"
    assert calls == [0, 1, 2]
    result = broken.delay()
    assert result.state is State.FAILED
    with pytest.raises(TaskFailed) as info:
        result.get()
    assert info.value.type_name == "KeyError"
    assert "always" in info.value.traceback
    failure = result.get(propagate=False)
    assert isinstance(failure, TaskFailed)


def test_eager_async_task(eager: GopherQ) -> None:
    @eager.task
    async def double(x: int) -> int:
        return x * 2

    assert double.delay(21).get() == 42


def test_current_task_outside_a_task() -> None:
    with pytest.raises(TaskError, match="outside a running task"):
        current_task()


def test_result_of_unknown_id_is_pending(app: GopherQ) -> None:
    assert app.result("nope").state is State.PENDING


# Finding the tasks: include=, autodiscover_tasks, and tasks of __main__.


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An importable directory; modules it adds are forgotten afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        del sys.modules[name]


def write(path: Path, source: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))


def test_include_and_autodiscover_import_task_modules_when_the_app_is_loaded(
    project: Path,
) -> None:
    prefix = f"p{uuid.uuid4().hex[:8]}"
    write(project / f"{prefix}shop" / "__init__.py", "")
    write(
        project / f"{prefix}shop" / "app.py",
        f"""
        from gopherq import GopherQ
        app = GopherQ("shop", broker="memory://", include=["{prefix}shop.orders"])
        app.autodiscover_tasks(["{prefix}billing", "{prefix}empty"])
        """,
    )
    task_module = """
        from {prefix}shop.app import app
        @app.task(name="{name}")
        def run() -> None: ...
        """
    write(
        project / f"{prefix}shop" / "orders.py",
        task_module.format(prefix=prefix, name="orders.run"),
    )
    write(project / f"{prefix}billing" / "__init__.py", "")
    write(
        project / f"{prefix}billing" / "tasks.py",
        task_module.format(prefix=prefix, name="billing.run"),
    )
    write(project / f"{prefix}empty" / "__init__.py", "")  # no tasks module: skipped
    app = importlib.import_module(f"{prefix}shop.app").app
    assert app.tasks == {}  # lazy: the packages may import the app module
    assert load_app(f"{prefix}shop.app") is app
    assert sorted(app.tasks) == ["billing.run", "orders.run"]
    assert app.import_tasks() == [f"{prefix}shop.orders", f"{prefix}billing.tasks"]


def test_a_missing_included_module_is_a_configuration_error(project: Path) -> None:
    app = GopherQ("shop", broker="memory://", include=["no_such_module_xyz.tasks"])
    with pytest.raises(ConfigurationError, match=r"no_such_module_xyz\.tasks.*include="):
        app.import_tasks()
    app.autodiscover_tasks(["no_such_package_xyz"])
    app.include.clear()
    with pytest.raises(ConfigurationError, match=r"no_such_package_xyz.*autodiscover_tasks"):
        app.import_tasks()


def test_a_task_of_main_warns_that_workers_will_not_find_it(tmp_path: Path) -> None:
    script = tmp_path / "job.py"
    script.write_text(
        textwrap.dedent("""
        import warnings
        from gopherq import GopherQ
        warnings.simplefilter("always")
        app = GopherQ("s", broker="sqlite:///q.db")
        @app.task
        def lost() -> None: ...
        @app.task(name="found")
        def named() -> None: ...
        eager = GopherQ("e", eager=True)
        @eager.task
        def inline() -> None: ...
        """)
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOPHERQ_")}
    ran = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stderr.count("UserWarning") == 1, ran.stderr
    assert f"{script}:6: UserWarning: task '__main__.lost' is declared in the script" in ran.stderr
    assert "UNKNOWN_TASK" in ran.stderr
