"""docs/api.md's curl examples, run with the real curl against a real daphne.

Each ```sh block of the page runs in order, in bash with ``ALARMS_URL`` and
``ALARMS_TOKEN`` set, and must exit 0; a ```http block right after it is the
response the page promises, and the real one must match it: the status, each
header shown, and the JSON body (ids, ``#<id>`` in messages and ``*_at`` times
aside, which differ from run to run).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from alarms import tokens
from alarms.http_api.errors import MAX_BODY
from alarms.models import Alarm
from tests.e2e.conftest import Server

# one_database: these hold docs/api.md to what the server answers; the HTTP API on
# each database is tested in tests/test_http_api.py, which runs on both.
pytestmark = [pytest.mark.e2e, pytest.mark.one_django, pytest.mark.one_database]

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```\s*$", re.MULTILINE | re.DOTALL)
# Headers whose digits are an alarm's id.
ID_HEADERS = {"location"}


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # lowercase names
    body: Any


@dataclass
class Example:
    command: str
    expected: Response | None
    line: int


def examples(text: str) -> list[Example]:
    """The ```sh blocks of the page, each with the ```http block that follows it, if any."""
    blocks = [
        (m.group(1), m.group(2), text.count("\n", 0, m.start()) + 1) for m in FENCE.finditer(text)
    ]
    found = []
    for i, (language, body, line) in enumerate(blocks):
        if language != "sh":
            continue
        following = blocks[i + 1] if i + 1 < len(blocks) else None
        expected = None
        if following is not None and following[0] == "http":
            expected = parse_response(following[1])
        found.append(Example(body, expected, line))
    return found


def parse_response(raw: str) -> Response:
    """An HTTP response as ``curl -i`` prints it (after any ``100 Continue``)."""
    raw = raw.replace("\r\n", "\n")
    while True:
        head, _, rest = raw.partition("\n\n")
        status_line, *header_lines = head.split("\n")
        status = int(status_line.split()[1])
        if status >= 200:
            break
        raw = rest
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Response(status, headers, json.loads(rest) if rest.strip() else None)


def same_shape(expected: Any, actual: Any, path: str = "") -> None:
    """``actual`` is ``expected``, except ids and times, which need only be there."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), path
        assert sorted(actual) == sorted(expected), path
        for key, value in expected.items():
            where = f"{path}.{key}"
            if key == "id" or key.endswith("_at"):
                assert (actual[key] is None) == (value is None), where
                assert type(actual[key]) is type(value), where
            else:
                same_shape(value, actual[key], where)
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), path
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            same_shape(e, a, f"{path}[{i}]")
    elif isinstance(expected, str):
        assert isinstance(actual, str), path
        assert re.sub(r"#\d+", "#N", actual) == re.sub(r"#\d+", "#N", expected), path
    else:
        assert actual == expected, path


@pytest.fixture(scope="module")
def docs_server(django_db_setup: None, django_db_blocker: Any) -> Iterator[Server]:
    """One server for the module: the examples only need the API, whose state is the database."""
    server = Server().start()
    yield server
    with django_db_blocker.unblock():
        server.stop()


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_every_curl_example_runs_and_answers_as_the_page_says(
    transactional_db: None, docs_server: Server
) -> None:
    _, secret = tokens.create_token("docs", scopes=["publish", "read", "withdraw"])
    env = {**os.environ, "ALARMS_URL": docs_server.url, "ALARMS_TOKEN": secret}
    found = examples(DOC.read_text())
    assert len(found) >= 8 and sum(e.expected is not None for e in found) == len(found)

    for example in found:
        where = f"docs/api.md, the example at line {example.line}"
        run = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", example.command],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 0, f"{where} exited {run.returncode}: {run.stderr}"
        if example.expected is None:
            continue
        actual = parse_response(run.stdout)
        assert actual.status == example.expected.status, f"{where}: {run.stdout}"
        for name, value in example.expected.headers.items():
            assert name in actual.headers, f"{where}: no {name} header"
            if name in ID_HEADERS:
                value, got = re.sub(r"\d+", "N", value), re.sub(r"\d+", "N", actual.headers[name])
            else:
                got = actual.headers[name]
            assert got == value, f"{where}: {name}"
        same_shape(example.expected.body, actual.body, where)
    # The page's story happened on the server: one alarm, published once, withdrawn.
    alarm = Alarm.objects.get()
    assert (alarm.external_id, alarm.status) == ("deploy:2031-01-15", "withdrawn")


def test_a_chunked_body_over_the_cap_is_a_413(transactional_db: None, docs_server: Server) -> None:
    """A chunked body announces no length: the body itself is measured."""
    _, secret = tokens.create_token("chunked", scopes=["publish"])
    connection = http.client.HTTPConnection("127.0.0.1", docs_server.port, timeout=30)
    try:
        connection.request(
            "POST",
            "/alarms/api/v1/alarms",
            body=iter([b" " * 4096] * (MAX_BODY // 4096 + 1)),
            headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"},
            encode_chunked=True,
        )
        response = connection.getresponse()
        status, body = response.status, json.loads(response.read())
    finally:
        connection.close()

    assert status == 413
    assert body["errors"][0]["type"] == "too_large"
