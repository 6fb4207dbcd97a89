"""nginx in front of the app, configured by the very lines of docs/: real nginx, real servers.

Each test runs its own nginx (as the current user, on free ports, everything in
a temporary directory) with the ``upstream`` block of docs/nginx.conf, its
server lines pointed at the test's server processes, each started by the
systemd unit's ExecStart line (docs/alarms@.service), and a minimal ``server``
block that includes docs/nginx-alarms-locations.conf. Where a test changes a
line of the snippet's stream location (a shorter read timeout, buffering turned
back on), it names the line it replaces, which must be there exactly once.
"""

from __future__ import annotations

import http.client
import json
import os
import queue
import re
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import pytest

from alarms import api
from tests.e2e.conftest import (
    ROOT,
    Server,
    csrf_cookie,
    free_port,
    http_request,
    metric,
    stop_process,
    unit_exec_start,
    wait_listening,
)
from tests.helpers import en, wait_for
from tests.sse import Event, Parser, Stream

# one_database: each test checks what nginx does with the server's responses (buffering,
# gzip, next upstream, read timeouts, the client's address, CSRF and HTTP/2 through
# it); delivery and receipts on each database are tested without nginx.
pytestmark = [pytest.mark.e2e, pytest.mark.nginx, pytest.mark.one_django, pytest.mark.one_database]

NGINX = Path("/usr/sbin/nginx")
SITE = ROOT / "docs" / "nginx.conf"
LOCATIONS = ROOT / "docs" / "nginx-alarms-locations.conf"

# Changes to lines of the snippet's stream location: (line, replacement).
BUFFERING_ON = ("    proxy_buffering off;\n", "    proxy_buffering on;\n")
IGNORE_ACCEL = (
    "    proxy_cache off;\n",
    "    proxy_cache off;\n    proxy_ignore_headers X-Accel-Buffering;\n",
)
HTTP_10 = ("    proxy_http_version 1.1;\n", "    proxy_http_version 1.0;\n")  # nginx's default


GZIP_LEFT_ON = ("    gzip off;\n", "")
NO_NEXT_UPSTREAM = ("    proxy_next_upstream error timeout http_503;\n", "")


def read_timeout(seconds: int) -> tuple[str, str]:
    return "    proxy_read_timeout 60s;\n", f"    proxy_read_timeout {seconds}s;\n"


def require(path: Path | str | None, what: str) -> str:
    """Skip without a tool, unless the run demands the nginx tests (CI), where it fails."""
    if path is not None and Path(path).exists():
        return str(path)
    message = f"{what} is missing"
    if os.environ.get("ALARMS_REQUIRE_NGINX") == "1":
        pytest.fail(f"ALARMS_REQUIRE_NGINX=1 but {message}", pytrace=False)
    pytest.skip(message)


def shipped_upstream() -> str:
    """docs/nginx.conf's ``upstream alarms_app`` block, as written."""
    found = re.search(r"^upstream alarms_app \{\n.*?^\}\n", SITE.read_text(), re.M | re.S)
    assert found, f"no upstream alarms_app block in {SITE}"
    return found.group(0)


def upstream_keepalive_timeout() -> int:
    """Seconds the shipped upstream keeps an idle connection to a server."""
    idle = re.search(r"^\s*keepalive_timeout (\d+)s;", shipped_upstream(), re.M)
    assert idle, "the upstream sets no keepalive_timeout"
    return int(idle.group(1))


def upstream_block(ports: Sequence[int]) -> str:
    """docs/nginx.conf's ``upstream alarms_app``, serving the given server ports instead."""
    block = shipped_upstream()
    assert "keepalive" in block
    # Idle upstream connections close before uvicorn's or hypercorn's 5 s (deployment.md).
    assert upstream_keepalive_timeout() < 5, "the upstream must close idle connections within 5 s"
    servers = "".join(f"    server 127.0.0.1:{port};\n" for port in ports)
    block, count = re.subn(r"(?m)^    server 127\.0\.0\.1:\d+;\n", "", block)
    assert count, "the upstream block lists no server"
    return block.replace("{\n", "{\n" + servers, 1)


def edited_locations(edits: Sequence[tuple[str, str]]) -> str:
    """The snippet with lines of its stream location replaced."""
    text = LOCATIONS.read_text()
    found = re.search(r"^location /alarms/stream/ \{\n.*?^\}\n", text, re.M | re.S)
    assert found, f"no stream location in {LOCATIONS}"
    block = found.group(0)
    for old, new in edits:
        assert block.count(old) == 1, f"the stream location should hold {old!r} exactly once"
        block = block.replace(old, new)
    return text.replace(found.group(0), block)


class Nginx:
    """One nginx (master and a worker) on a free port of 127.0.0.1, in its own directory."""

    def __init__(
        self,
        directory: Path,
        upstream_ports: Sequence[int],
        *,
        edits: Sequence[tuple[str, str]] = (),
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True)
        self.port = free_port()
        self.scheme = "https" if tls else "http"
        self.origin = f"{self.scheme}://127.0.0.1:{self.port}"
        self.error_log = self.dir / "error.log"
        self.conf = self.dir / "nginx.conf"
        if edits:
            locations = self.dir / LOCATIONS.name
            locations.write_text(edited_locations(edits))
        else:
            locations = LOCATIONS
        if tls:
            listen = f"127.0.0.1:{self.port} ssl http2"
            certificate = f"    ssl_certificate {tls[0]};\n    ssl_certificate_key {tls[1]};\n"
        else:
            listen, certificate = f"127.0.0.1:{self.port}", ""
        # As root the workers would switch to nobody, who may not enter pytest's
        # private temporary directory; anyone else cannot switch users at all.
        user = "user root;\n" if os.geteuid() == 0 else ""
        temp = "".join(
            f"    {kind}_temp_path {self.dir / kind};\n"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        self.conf.write_text(
            f"daemon off;\nmaster_process on;\nworker_processes 1;\n{user}"
            f"pid {self.dir / 'nginx.pid'};\nerror_log {self.error_log} info;\n"
            "events {\n    worker_connections 256;\n}\n"
            "http {\n"
            f"    access_log {self.dir / 'access.log'};\n{temp}"
            # As a site that compresses its text: the snippet's `gzip off` must win.
            "    gzip on;\n    gzip_types text/event-stream;\n"
            f"{upstream_block(upstream_ports)}"
            "server {\n"
            f"    listen {listen};\n{certificate}"
            f"    include {locations};\n"
            "}\n"
            "}\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Nginx:
        command = [str(NGINX), "-p", str(self.dir), "-c", str(self.conf), "-e", str(self.error_log)]
        checked = subprocess.run([*command, "-t"], capture_output=True, text=True, check=False)
        assert checked.returncode == 0, checked.stderr
        # Once started, nginx writes what goes wrong to the error log.
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_listening(self.process, self.port, 10, "nginx", self.errors)
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)  # SIGTERM, nginx's fast shutdown: open streams are cut
        self.process = None

    def errors(self) -> str:
        return self.error_log.read_text() if self.error_log.exists() else ""

    @property
    def stream_url(self) -> str:
        return f"{self.origin}/alarms/stream/"


@pytest.fixture
def nginx_factory(tmp_path: Path) -> Iterator[Callable[..., Nginx]]:
    require(NGINX, f"{NGINX} (Debian: apt-get install nginx)")
    started: list[Nginx] = []

    def make(servers: Sequence[Server], **options: Any) -> Nginx:
        nginx = Nginx(tmp_path / f"nginx-{len(started)}", [s.port for s in servers], **options)
        started.append(nginx)
        return nginx.start()

    yield make
    for nginx in started:
        nginx.stop()


def broadcast(title: str) -> Any:
    """An alarm for everyone, anonymous streams included."""
    return api.send_alarm(en(title), audience="everyone")


def warm_up(server: Server) -> None:
    """Open and close a stream straight to the server, which starts its broker.

    nginx's read timeout also bounds the wait for the response head: a short one
    must not take in the broker's start (database connections, LISTEN).
    """
    with Stream(f"{server.url}/alarms/stream/") as stream:
        assert stream.status == 200


def stream_from(address: str, url: str, **headers: str) -> Stream:
    """A stream whose socket leaves from ``address``: Linux routes all of 127/8 to loopback."""
    connect = socket.create_connection

    def bound(target: tuple[str, int], timeout: float) -> socket.socket:
        return connect(target, timeout, source_address=(address, 0))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket, "create_connection", bound)
        return Stream(url, headers=headers)


def request(
    nginx: Nginx, method: str, path: str, headers: dict[str, str], body: bytes | None = None
) -> tuple[int, http.client.HTTPMessage, bytes]:
    return http_request(nginx.port, method, path, headers, body)


def test_the_whole_example_is_valid_nginx(tmp_path):
    # The server blocks of docs/nginx.conf (TLS, HTTP/2, static files) are not
    # served here; this nginx must accept them as written, with a certificate
    # of the test's and the snippet where the example expects it.
    require(NGINX, f"{NGINX} (Debian: apt-get install nginx)")
    certificate, key = self_signed(tmp_path)
    site = SITE.read_text()
    for old, new in [
        ("/etc/letsencrypt/live/alarms.example.com/fullchain.pem", str(certificate)),
        ("/etc/letsencrypt/live/alarms.example.com/privkey.pem", str(key)),
        ("include /etc/nginx/snippets/alarms-locations.conf;", f"include {LOCATIONS};"),
    ]:
        assert site.count(old) == 1, f"{SITE.name} should name {old} once"
        site = site.replace(old, new)
    (tmp_path / "site.conf").write_text(site)
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        f"pid {tmp_path / 'nginx.pid'};\nevents {{}}\n"
        f"http {{\n    include {tmp_path / 'site.conf'};\n}}\n"
    )
    checked = subprocess.run(
        [str(NGINX), "-t", "-p", str(tmp_path), "-c", str(conf), "-e", str(tmp_path / "error.log")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
    assert "warn" not in checked.stderr, checked.stderr


# ---------------------------------------------------------------------------
# Delivery: events pass nginx as the server writes them
# ---------------------------------------------------------------------------


def test_alarms_arrive_through_nginx_while_the_streams_stay_open(server_factory, nginx_factory):
    servers = [server_factory(unit=True, METRICS_TOKEN="t0ken") for _ in range(2)]
    nginx = nginx_factory(servers)
    # A browser asks for gzip; the stream must come back uncompressed all the same.
    streams = [Stream(nginx.stream_url, headers={"Accept-Encoding": "gzip"}) for _ in range(2)]
    try:
        for stream in streams:
            assert stream.status == 200
            assert stream.headers["Content-Type"].startswith("text/event-stream")
            assert "no-cache" in stream.headers["Cache-Control"]
            assert "Content-Encoding" not in stream.headers
        # The upstream block spreads the streams over both processes.
        wait_for(lambda: [metric(s, "alarms_streams_open") for s in servers] == [1, 1])
        for title in ("First", "Second"):
            alarm = broadcast(title)
            for stream in streams:
                event = stream.next_event(15)
                assert (event.event, event.json()["id"]) == ("alarm", alarm.pk)
    finally:
        for stream in streams:
            stream.close()


def test_control_without_gzip_off_the_stream_is_compressed(server_factory, nginx_factory):
    nginx = nginx_factory([server_factory(unit=True)], edits=[GZIP_LEFT_ON])
    with Stream(nginx.stream_url, headers={"Accept-Encoding": "gzip"}) as stream:
        assert stream.headers.get("Content-Encoding") == "gzip"


def unchunked(server_factory: Callable[..., Server], **alarms: Any) -> Server:
    """daphne, which answers nginx's HTTP/1.0 without chunks, as a 1.0 server must.

    The unit's uvicorn answers HTTP/1.0 with HTTP/1.1 chunks, whose each one a
    buffering nginx passes on at once: behind it the two safeguards below are a
    second line. They matter in front of a server that keeps to HTTP/1.0, so
    these tests run one.
    """
    return server_factory(extra_args=["--proxy-headers"], **alarms)


@pytest.mark.parametrize(
    "edits",
    [
        pytest.param([BUFFERING_ON, HTTP_10], id="the-views-header-alone"),
        pytest.param([IGNORE_ACCEL, HTTP_10], id="proxy_buffering-off-alone"),
    ],
)
def test_either_safeguard_alone_keeps_events_flowing(server_factory, nginx_factory, edits):
    # The view's X-Accel-Buffering header and the snippet's proxy_buffering off
    # each suffice, even over nginx's default HTTP/1.0 to the server.
    nginx = nginx_factory([unchunked(server_factory)], edits=edits)
    with Stream(nginx.stream_url) as stream:
        assert stream.status == 200
        alarm = broadcast("Live")
        assert stream.next_event(15).json()["id"] == alarm.pk


def test_control_a_buffering_nginx_holds_the_stream_back(server_factory, nginx_factory):
    # What the delivery tests would catch. Without the header, without
    # proxy_buffering off and over HTTP/1.0 (nginx's default; over HTTP/1.1
    # nginx 1.22 passes each complete chunk on even while buffering), nginx
    # waits for its buffer to fill: the server has sent the response head and the
    # alarm, and the client gets not even the head.
    server = unchunked(server_factory, METRICS_TOKEN="t0ken")
    nginx = nginx_factory([server], edits=[BUFFERING_ON, IGNORE_ACCEL, HTTP_10])
    broadcast("Held back")  # before connecting: the stream opens with it
    with socket.create_connection(("127.0.0.1", nginx.port), timeout=10) as client:
        client.sendall(
            f"GET /alarms/stream/ HTTP/1.1\r\nHost: 127.0.0.1:{nginx.port}\r\n\r\n".encode()
        )
        # Counted once the server's socket to nginx took the opening, alarm and all.
        wait_for(lambda: metric(server, "alarms_events_delivered_total") == 1)
        # No event says what nginx did with them: passing them on takes it a
        # millisecond on loopback, and a second is given.
        client.settimeout(1)
        with pytest.raises(TimeoutError):
            client.recv(1)


# ---------------------------------------------------------------------------
# A process that refuses streams (shutting down, or full) is passed over
# ---------------------------------------------------------------------------


def streams_through(nginx: Nginx, count: int) -> list[int]:
    statuses = []
    for _ in range(count):
        with Stream(nginx.stream_url) as stream:
            statuses.append(stream.status)
    return statuses


def full_and_taking(server_factory: Callable[..., Server]) -> tuple[Server, Server]:
    """Two processes: the first answers every stream 503, as a full or draining one does."""
    full = server_factory(unit=True, METRICS_TOKEN="t0ken", MAX_STREAMS=0)
    return full, server_factory(unit=True, METRICS_TOKEN="t0ken")


def test_a_process_that_answers_503_is_passed_over(server_factory, nginx_factory):
    full, taking = full_and_taking(server_factory)
    nginx = nginx_factory([full, taking])
    assert streams_through(nginx, 4) == [200] * 4
    # nginx did ask the full process first, for some of them.
    assert metric(full, 'alarms_streams_refused_total{reason="full"}') >= 1
    assert metric(taking, "alarms_connects_total") == 4


def test_control_without_next_upstream_the_503_reaches_the_browser(server_factory, nginx_factory):
    nginx = nginx_factory(list(full_and_taking(server_factory)), edits=[NO_NEXT_UPSTREAM])
    assert 503 in streams_through(nginx, 4)


# ---------------------------------------------------------------------------
# Heartbeats and nginx's read timeout
# ---------------------------------------------------------------------------


def test_heartbeats_keep_a_quiet_stream_open_past_the_read_timeout(server_factory, nginx_factory):
    server = server_factory(unit=True, HEARTBEAT=0.5)
    warm_up(server)
    nginx = nginx_factory([server], edits=[read_timeout(2)])
    with Stream(nginx.stream_url) as stream:
        assert stream.status == 200
        # Nothing to send for 3 s, beyond the 2 s read timeout: heartbeats passed
        # on (an event or the end meanwhile fails), no event, and no end.
        stream.comments_until("", 6)
        alarm = broadcast("Still here")
        assert stream.next_event(15).json()["id"] == alarm.pk
    assert "upstream timed out" not in nginx.errors()


def test_a_heartbeat_slower_than_the_read_timeout_gets_the_stream_cut(
    server_factory, nginx_factory
):
    server = server_factory(unit=True, HEARTBEAT=30)
    warm_up(server)
    nginx = nginx_factory([server], edits=[read_timeout(2)])
    with Stream(nginx.stream_url) as stream:
        assert stream.status == 200
        with pytest.raises(EOFError):
            stream.next_event(15)
        assert stream.parser.comments == ["alarms"]  # the opening comment only
    assert "upstream timed out" in nginx.errors()


def test_the_unit_keeps_idle_connections_longer_than_the_proxy() -> None:
    # A request the proxy sends on a kept-alive connection just as the server
    # closes it is answered 502 and, for a POST, not retried: the proxy must
    # close first. The upstream above does within 4 s; load balancers keep
    # theirs 60 s (an AWS ALB's default), which the unit must outlast too.
    argv = unit_exec_start(0)
    server_keeps = int(argv[argv.index("--timeout-keep-alive") + 1])
    assert server_keeps > max(upstream_keepalive_timeout(), 60), server_keeps


# ---------------------------------------------------------------------------
# The client's address: the per-address cap
# ---------------------------------------------------------------------------


def test_the_per_address_cap_counts_clients_not_nginx(server_factory, nginx_factory):
    # One process: the cap is per process, so with several behind the upstream
    # an address may hold up to that many times MAX_STREAMS_PER_ADDRESS.
    server = server_factory(unit=True, MAX_STREAMS_PER_ADDRESS=1)
    nginx = nginx_factory([server])
    first = stream_from("127.0.0.2", nginx.stream_url)
    other = stream_from("127.0.0.3", nginx.stream_url)
    second = stream_from("127.0.0.2", nginx.stream_url)
    # nginx replaces a client's own X-Forwarded-For: it cannot pose as someone else.
    forged = stream_from("127.0.0.2", nginx.stream_url, **{"X-Forwarded-For": "192.0.2.7"})
    try:
        assert [s.status for s in (first, other, second, forged)] == [200, 200, 429, 429]
    finally:
        for stream in (first, other, second, forged):
            stream.close()


def test_without_proxy_headers_every_client_is_nginx(server_factory, nginx_factory):
    # Why the unit runs its server with --proxy-headers: without it REMOTE_ADDR
    # is nginx's address for everyone, and the first client uses up the cap of all.
    server = server_factory(unit=True, extra_args=["--no-proxy-headers"], MAX_STREAMS_PER_ADDRESS=1)
    nginx = nginx_factory([server])
    first = stream_from("127.0.0.2", nginx.stream_url)
    other = stream_from("127.0.0.3", nginx.stream_url)
    try:
        assert [first.status, other.status] == [200, 429]
    finally:
        first.close()
        other.close()


# ---------------------------------------------------------------------------
# Receipts: a same-origin POST with its CSRF token
# ---------------------------------------------------------------------------


def test_dismiss_through_nginx_passes_csrf_and_reaches_the_stream(
    server_factory, nginx_factory, make_user, session_cookie
):
    nginx = nginx_factory([server_factory(unit=True)])
    name, value = session_cookie(make_user("nia"))
    alarm = api.send_alarm(en("Dismiss me"))
    status, headers, _ = request(nginx, "GET", "/", {"Cookie": f"{name}={value}"})
    assert status == 200
    token = csrf_cookie(headers.get_all("Set-Cookie") or [])
    cookies = {"Cookie": f"{name}={value}; csrftoken={token}"}
    with Stream(nginx.stream_url, cookies={name: value}) as stream:
        assert stream.next_event(15).json()["id"] == alarm.pk

        def dismiss(origin: str) -> tuple[int, bytes]:
            status, _, body = request(
                nginx,
                "POST",
                "/alarms/dismiss/",
                {
                    **cookies,
                    "Origin": origin,
                    "X-CSRFToken": token,
                    "Content-Type": "application/json",
                },
                json.dumps({"ids": [alarm.pk]}).encode(),
            )
            return status, body

        # CSRF is enforced through nginx: another origin is refused...
        assert dismiss("http://evil.example")[0] == 403
        # ...and the page's own origin, as the browser names it, is accepted.
        assert dismiss(nginx.origin) == (200, b'{"updated": 1}')
        event = stream.next_event(15)
        assert (event.event, event.json()) == ("dismiss", {"id": alarm.pk})


# ---------------------------------------------------------------------------
# HTTP/2 over TLS, as browsers speak it to nginx
# ---------------------------------------------------------------------------


class Curl:
    """curl speaking HTTP/2 over TLS, trusting the test's certificate."""

    def __init__(self, certificate: Path) -> None:
        curl = require(shutil.which("curl"), "curl (Debian: apt-get install curl)")
        version = subprocess.run([curl, "--version"], capture_output=True, text=True).stdout
        if "HTTP2" not in version:
            pytest.skip("this curl speaks no HTTP/2")
        self.base = [curl, "-sS", "--http2", "--cacert", str(certificate)]

    def run(self, *args: str) -> str:
        done = subprocess.run(
            [*self.base, *args], capture_output=True, text=True, timeout=30, check=True
        )
        return done.stdout

    def popen(self, *args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen([*self.base, *args], stdout=subprocess.PIPE)


def self_signed(directory: Path) -> tuple[Path, Path]:
    openssl = require(shutil.which("openssl"), "openssl (Debian: apt-get install openssl)")
    certificate, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(certificate),
        ],
        capture_output=True,
        check=True,
    )  # fmt: skip
    return certificate, key


def read_lines(pipe: IO[bytes], into: queue.Queue[str | None]) -> None:
    for raw in iter(pipe.readline, b""):
        into.put(raw.decode().rstrip("\r\n"))
    into.put(None)


def next_line(lines: queue.Queue[str | None], timeout: float) -> str:
    line = lines.get(timeout=timeout)
    if line is None:
        raise EOFError("curl's output ended")
    return line


def test_http2_over_tls_streams_and_passes_csrf_as_https(
    server_factory, nginx_factory, make_user, session_cookie, tmp_path
):
    certificate, key = self_signed(tmp_path)
    nginx = nginx_factory([server_factory(unit=True)], tls=(certificate, key))
    curl = Curl(certificate)
    name, value = session_cookie(make_user("ola"))
    cookie = f"{name}={value}"

    # -N: curl writes out each piece as it arrives.
    stream = curl.popen("-N", "-i", "-b", cookie, nginx.stream_url)
    assert stream.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=read_lines, args=(stream.stdout, lines), daemon=True).start()
    try:
        assert next_line(lines, 10).strip() == "HTTP/2 200"
        head = []
        while line := next_line(lines, 5).strip():
            head.append(line.lower())
        assert any(h.startswith("content-type: text/event-stream") for h in head)
        alarm = broadcast("Over HTTP/2")
        parser, event = Parser(), None
        while event is None:
            event = parser.feed_line(next_line(lines, 5))
        assert isinstance(event, Event)
        assert (event.event, event.json()["id"]) == ("alarm", alarm.pk)
    finally:
        stream.kill()
        stream.wait()

    # Behind TLS, Django must see the request as https (X-Forwarded-Proto, taken
    # up by the unit's --proxy-headers) for the browser's https Origin to pass.
    head = curl.run("-D", "-", "-o", os.devnull, "-b", cookie, f"{nginx.origin}/")
    token = csrf_cookie(
        [h.split(":", 1)[1] for h in head.splitlines() if h.lower().startswith("set-cookie:")]
    )

    def dismiss(origin: str) -> str:
        return curl.run(
            "-o", os.devnull, "-w", "%{http_version} %{http_code}",
            "-b", f"{cookie}; csrftoken={token}",
            "-H", f"Origin: {origin}", "-H", f"X-CSRFToken: {token}",
            "-H", "Content-Type: application/json",
            "--data-binary", json.dumps({"ids": [alarm.pk]}),
            f"{nginx.origin}/alarms/dismiss/",
        )  # fmt: skip

    assert dismiss(f"http://127.0.0.1:{nginx.port}") == "2 403"  # not the page's scheme
    assert dismiss(nginx.origin) == "2 200"
