"""Real servers for end-to-end tests: ASGI server processes on free ports, on the test database."""

from __future__ import annotations

import configparser
import http.client
import json
import os
import random
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import DatabaseError, connection
from django.test import Client

from alarms import api
from alarms.models import Alarm
from tests.helpers import en, metric_samples
from tests.sse import Event, Stream

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"


def free_port() -> int:
    """A port of 127.0.0.1 that nothing holds now.

    scripts/test runs its legs side by side and gives each a range of its own
    in ALARMS_TEST_PORTS ("LOW-HIGH", below the ephemeral ports), so a port one
    leg picked cannot be taken by another's server before it binds. Without it,
    any port the system offers.
    """
    span = os.environ.get("ALARMS_TEST_PORTS")
    if not span:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
    low, _, high = span.partition("-")
    for port in random.sample(range(int(low), int(high) + 1), 200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))  # no SO_REUSEADDR: TIME_WAIT counts as taken
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in ALARMS_TEST_PORTS={span}")


def wait_listening(
    process: subprocess.Popen[bytes],
    port: int,
    seconds: float,
    what: str,
    output: Callable[[], str],
) -> None:
    """Return once something listens on 127.0.0.1:port; fail if ``process`` exits first."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited: {output()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not start listening in {seconds:.0f} s: {output()}")


def stop_process(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """Send ``sig``; kill the process if it is still there 10 s later."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def read_metrics(url: str, token: str) -> dict[str, float]:
    """A server's /alarms/metrics/ by sample: ``'name{labels}'`` -> value.

    The exposition must be strictly valid (:func:`tests.helpers.parse_metrics`).
    """
    request = urllib.request.Request(
        f"{url}/alarms/metrics/", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read().decode()
    found = {}
    for (name, labels), value in metric_samples(text).items():
        pairs = ",".join(f'{label}="{text}"' for label, text in labels)
        found[f"{name}{{{pairs}}}" if labels else name] = value
    return found


def metric(server: Server, name: str, token: str = "t0ken") -> float:
    """One sample of a server's /alarms/metrics/ (it must run with that METRICS_TOKEN)."""
    found = server.metrics(token)
    assert name in found, f"no metric {name}"
    return found[name]


def open_stream(
    server: Server, cookie: tuple[str, str] | None = None, query: str = "", **headers: str
) -> Stream:
    """A stream of ``server`` (signed in with a session ``cookie``), which must answer 200."""
    cookies = dict([cookie]) if cookie else None
    stream = Stream(f"{server.url}/alarms/stream/{query}", cookies=cookies, headers=headers)
    assert stream.status == 200, stream.status
    return stream


def send_marker(title: str = "Marker") -> Alarm:
    """An alarm every reader may see, to mark a point in the streams."""
    return api.send_alarm(en(title), audience="everyone")


def before_marker(*streams: Stream, timeout: float = 15.0) -> list[list[Event]]:
    """Send a marker, and read each stream up to it: the events each got before it.

    How a test shows that something did not come, with no quiet window: whatever
    was written before the marker reaches a stream before it (the broker reads
    the journal in order), so had it come, it would be here.
    """
    marker = send_marker()

    def is_marker(event: Event) -> bool:
        return event.event == "alarm" and event.json()["id"] == marker.pk

    return [stream.read_until(is_marker, timeout)[:-1] for stream in streams]


def received(stream: Stream) -> list[Event]:
    """What a stream just opened gets up to a marker sent once it is open.

    Its opening (the snapshot, or a resume's replay, of what the server's broker
    has read of the journal) and what comes live after it, the journal rows the
    broker reads later: all of it, and nothing it would get twice unseen.
    """
    opening = stream.opening()
    [live] = before_marker(stream)
    return opening + live


def http_request(
    port: int, method: str, path: str, headers: dict[str, str], body: bytes | None = None
) -> tuple[int, http.client.HTTPMessage, bytes]:
    """One request to 127.0.0.1:port: status, headers and body, whatever the status."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    finally:
        connection.close()


def csrf_cookie(set_cookie_headers: Sequence[str]) -> str:
    """The CSRF token from a response's Set-Cookie headers."""
    cookies: SimpleCookie = SimpleCookie()
    for header in set_cookie_headers:
        cookies.load(header)
    return cookies["csrftoken"].value


def database_url(application_name: str = "") -> str:
    """The test database, as the server processes must reach it.

    ``application_name`` names the process's PostgreSQL sessions, so that
    :func:`end_database_sessions` can find them once the process is killed.
    """
    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{s['NAME']}"
    auth = s["USER"] + (f":{s['PASSWORD']}" if s.get("PASSWORD") else "")
    url = f"postgres://{auth}@{s['HOST'] or 'localhost'}:{s['PORT'] or 5432}/{s['NAME']}"
    return url + (f"?application_name={application_name}" if application_name else "")


def end_database_sessions(application_name: str, timeout: float = 10.0) -> None:
    """End the PostgreSQL sessions a killed server left behind, and wait until they are gone.

    A session of a killed process lives on while it waits for a lock (the
    server does not look at its client meanwhile). Left to itself, it can
    deadlock with the test database's flush after the test (TRUNCATE takes
    every table), and PostgreSQL may end the flush rather than it.
    """
    if connection.vendor != "postgresql":
        return
    try:
        _end_sessions(application_name, timeout)
    except DatabaseError:
        # This process's own connection broke (a test restarted PostgreSQL): once more.
        connection.close()
        _end_sessions(application_name, timeout)


def _end_sessions(application_name: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with connection.cursor() as cursor:
        while True:
            cursor.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = %s AND pid <> pg_backend_pid()",
                [application_name],
            )
            (left,) = cursor.fetchone()
            if not left or time.monotonic() > deadline:
                return
            time.sleep(0.05)


#: The ASGI servers the app is tested under (docs/deployment.md says which for what).
KNOWN_ASGI_SERVERS = ("daphne", "uvicorn", "hypercorn")
#: Those the stream tests run under in this run: all of them, unless
#: ALARMS_TEST_ASGI_SERVERS names some (scripts/test runs the others in one leg only:
#: the server, not the database, is what they vary). The backpressure test, which
#: runs in one leg anyway (one_database), takes all of them.
ASGI_SERVERS = tuple(
    name
    for name in os.environ.get("ALARMS_TEST_ASGI_SERVERS", ",".join(KNOWN_ASGI_SERVERS)).split(",")
    if name.strip()
)
if unknown := set(ASGI_SERVERS) - set(KNOWN_ASGI_SERVERS):
    raise RuntimeError(f"ALARMS_TEST_ASGI_SERVERS names unknown servers: {sorted(unknown)}")


class Server:
    """One ASGI server process serving an application on 127.0.0.1, on the test database.

    ``alarms`` is its ALARMS setting; ``settings`` its settings module and
    ``application`` the ASGI application it serves; ``env`` more of its
    environment; ``extra_args`` go to the server's command line, e.g.
    ``["--proxy-headers"]``. ``asgi_server`` is daphne (the default), uvicorn or
    hypercorn.
    """

    def __init__(
        self,
        alarms: dict[str, Any] | None = None,
        port: int | None = None,
        extra_args: Sequence[str] = (),
        *,
        settings: str = "tests.e2e.server_settings",
        application: str = "config.asgi:application",
        env: dict[str, str] | None = None,
        asgi_server: str = "daphne",
    ) -> None:
        if asgi_server not in KNOWN_ASGI_SERVERS:
            raise ValueError(f"Unknown ASGI server {asgi_server!r}")
        self.asgi_server = asgi_server
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.alarms = alarms or {}
        self.extra_args = list(extra_args)
        self.settings = settings
        self.application = application
        self.extra_env = env or {}
        self.process: subprocess.Popen[bytes] | None = None
        self.log = ARTIFACTS / f"{asgi_server}-{self.port}.log"
        # The log file is named by port and appended to: this server's part starts here.
        self.log_start = self.log.stat().st_size if self.log.exists() else 0

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": self.settings,
            "DATABASE_URL": database_url(self.application_name),
            "ALARMS_JSON": json.dumps(self.alarms),
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }

    def command(self) -> list[str]:
        if self.asgi_server == "uvicorn":
            # As docs/deployment.md runs it: no lifespan (Django has none to offer).
            listen = ["--host", "127.0.0.1", "--port", str(self.port), "--lifespan", "off"]
        elif self.asgi_server == "hypercorn":
            # --workers 0: serve in this process, not in a child that a kill of
            # this one would leave behind (and whose memory the tests would miss).
            listen = ["--bind", f"127.0.0.1:{self.port}", "--workers", "0"]
        else:
            listen = ["-b", "127.0.0.1", "-p", str(self.port)]
        return [sys.executable, "-m", self.asgi_server, *listen, *self.extra_args, self.application]

    def output(self) -> str:
        """What this server has written to its log so far (all its runs)."""
        with self.log.open("rb") as log:
            log.seek(self.log_start)
            return log.read().decode("utf-8", "replace")

    def start(self) -> Server:
        log = self.log.open("ab")
        self.process = subprocess.Popen(
            self.command(),
            cwd=ROOT,
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_listening(
            self.process, self.port, 20, self.asgi_server, lambda: self.log.read_text()[-2000:]
        )
        return self

    @property
    def application_name(self) -> str:
        return f"alarms-e2e-{self.port}"

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None:
            stop_process(self.process, sig)
            end_database_sessions(self.application_name)
        self.process = None

    def metrics(self, token: str) -> dict[str, float]:
        """This server's /alarms/metrics/ (it must run with that METRICS_TOKEN)."""
        return read_metrics(self.url, token)

    def restart(self) -> Server:
        self.stop()
        return self.start()

    def manage(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run a management command in a separate process against the same database."""
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )


#: The systemd unit of docs/deployment.md, whose ExecStart line :class:`Unit` runs.
UNIT_FILE = ROOT / "docs" / "alarms@.service"


def unit_service() -> configparser.SectionProxy:
    """The ``[Service]`` section of the shipped systemd unit."""
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read_string(UNIT_FILE.read_text())
    return parser["Service"]


def unit_exec_start(port: int, extra_args: Sequence[str] = ()) -> list[str]:
    """The unit's ExecStart line as this test run can run it.

    Its server from this virtualenv (``python -m``, so the server's name is
    item 2), ``%i`` the port, and ``extra_args`` before the application, the
    line's last argument.
    """
    program, *args = shlex.split(unit_service()["ExecStart"])
    *options, app = (a.replace("%i", str(port)) for a in args)
    return [sys.executable, "-m", Path(program).name, *options, *extra_args, app]


class Unit(Server):
    """A server started by the shipped systemd unit's ExecStart line.

    What a deployment runs, rather than the harness's own command line: the
    deployment and nginx tests serve through it.
    """

    def __init__(self, alarms: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(alarms, **kwargs, asgi_server=unit_exec_start(0)[2])

    def command(self) -> list[str]:
        return unit_exec_start(self.port, self.extra_args)


class ServerFactory:
    """Starts :class:`Server` processes for one test, and kills what is left at its end.

    ``server_factory(settings=..., application=..., env=..., extra_args=..., asgi_server=...,
    unit=..., **alarms)``:
    the keywords of :class:`Server`; ``unit=True`` starts a :class:`Unit` (its server is the
    unit's, ``asgi_server`` unused); any other keyword is a key of its ALARMS.
    """

    def __init__(self) -> None:
        self.started: list[Server] = []

    def __call__(
        self,
        *,
        extra_args: Sequence[str] = (),
        settings: str = "tests.e2e.server_settings",
        application: str = "config.asgi:application",
        env: dict[str, str] | None = None,
        asgi_server: str = "daphne",
        unit: bool = False,
        **alarms: Any,
    ) -> Server:
        options: dict[str, Any] = {
            "extra_args": extra_args,
            "settings": settings,
            "application": application,
            "env": env,
        }
        server = (
            Unit(alarms, **options) if unit else Server(alarms, **options, asgi_server=asgi_server)
        )
        self.started.append(server)
        return server.start()

    def stop_all(self) -> None:
        for server in self.started:
            server.stop(signal.SIGKILL)


@pytest.fixture
def server_factory(transactional_db: None) -> Iterator[ServerFactory]:
    factory = ServerFactory()
    yield factory
    factory.stop_all()


@pytest.fixture
def server(server_factory: ServerFactory) -> Server:
    return server_factory()


@pytest.fixture
def session_cookie(transactional_db: None) -> Callable[[Any], tuple[str, str]]:
    """A real session in the database for a user: (cookie name, value)."""

    def make(user: Any) -> tuple[str, str]:
        client = Client()
        client.force_login(user)
        return settings.SESSION_COOKIE_NAME, client.cookies[settings.SESSION_COOKIE_NAME].value

    return make


@pytest.fixture
def make_user(transactional_db: None) -> Callable[..., Any]:
    def make(username: str, **extra: Any) -> Any:
        return get_user_model().objects.create_user(username, password="pw-" + username, **extra)

    return make
