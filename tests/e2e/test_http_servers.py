"""The real HTTP servers the CLI starts (`run`: waitress, `serve`: gunicorn) on loopback, as clients meet them.

Neither names itself; a body declared too large is refused from the headers alone, before the server
holds any of it in memory or on disk; a forwarded scheme is believed only from configured proxies.
"""

from __future__ import annotations

import os
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.service_process import Service, base_env, cli, wait_until

pytestmark = pytest.mark.e2e

HUGE = 300 * 1024 * 1024  # declared, never sent
SENT_AT_MOST = 4 * 1024 * 1024


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    # TMPDIR of its own, so a body spilled to a temporary file would show up as an open file in it.
    env = base_env(tmp_path / "home", TMPDIR=str(tmp))
    cli(env, "init")
    return env


@pytest.fixture
def waitress(env: dict[str, str]) -> Iterator[tuple[Service, int]]:
    service = Service(env, "run", "--port", "0")
    port = int(service.wait_for(r"listening on http://127\.0\.0\.1:(\d+)").group(1))
    yield service, port
    service.terminate()


@pytest.fixture
def gunicorn(env: dict[str, str]) -> Iterator[tuple[Service, int]]:
    port = _free_port()
    service = Service(env, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1")
    wait_until(lambda: _port_open(port), timeout=30, what="gunicorn listening")
    yield service, port
    service.terminate()


def _exchange(port: int, head: str, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head.encode("latin-1") + body)
        return _read_response(s)


def _read_response(s: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            chunk = s.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        data += chunk
        head, sep, rest = data.partition(b"\r\n\r\n")
        if sep:
            lines = head.decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
            if len(rest) >= int(headers.get("content-length", "0") or 0) and "content-length" in headers:
                return int(lines[0].split()[1]), headers, rest
    raise AssertionError(f"no complete response; got {data[:500]!r}")


def _temp_files(pid: int, tmpdir: str) -> list[str]:
    """Files in `tmpdir` that the process holds open (a spilled body is an unlinked temporary file)."""
    found = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith(tmpdir):
            found.append(target)
    return found


def _post_huge(
    port: int, pid: int, tmpdir: str, path: str = "/api/v1/referrals"
) -> tuple[float, int, bytes, list[str]]:
    """Declare a 300 MB body, send a few MB of it while watching for an answer; never the whole body."""
    started = time.monotonic()
    spilled: list[str] = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(
            (
                f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Content-Length: {HUGE}\r\n\r\n"
            ).encode()
        )
        chunk, sent = b"x" * 65536, 0
        while sent < SENT_AT_MOST:
            if select.select([s], [], [], 0)[0]:
                break  # the server answered already
            try:
                s.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
            spilled += _temp_files(pid, tmpdir)
        status, _headers, body = _read_response(s)
        spilled += _temp_files(pid, tmpdir)
    return time.monotonic() - started, status, body, spilled


def test_waitress_refuses_a_huge_declared_body_at_once_without_buffering_it(
    waitress: tuple[Service, int], env: dict[str, str]
) -> None:
    service, port = waitress
    elapsed, status, body, spilled = _post_huge(port, service.proc.pid, env["TMPDIR"])
    assert status == 413, body[:300]
    assert elapsed < 5
    assert spilled == []
    # and it still serves
    assert _exchange(port, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")[0] == 200


def test_waitress_gives_the_json_413_for_a_body_over_the_app_limit(waitress: tuple[Service, int]) -> None:
    _service, port = waitress
    body = b"{" + b" " * (300 * 1024) + b"}"
    status, headers, raw = _exchange(
        port,
        f"POST /api/v1/referrals HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n",
        body,
    )
    assert status == 413
    assert headers["content-type"] == "application/json"
    assert b'"payload_too_large"' in raw


def test_waitress_sends_no_server_banner(waitress: tuple[Service, int]) -> None:
    _service, port = waitress
    for head in (
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        f"POST /api/v1/referrals HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {HUGE}\r\n\r\n",
    ):
        status, headers, body = _exchange(port, head)
        assert "server" not in headers and "via" not in headers, (status, headers)
        assert b"waitress" not in body


def test_gunicorn_refuses_a_huge_declared_body_at_once_and_sends_no_banner(
    gunicorn: tuple[Service, int], env: dict[str, str]
) -> None:
    service, port = gunicorn
    status, headers, _body = _exchange(port, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert status == 200
    assert "server" not in headers, headers
    elapsed, status, body, _spilled = _post_huge(port, service.proc.pid, env["TMPDIR"])
    assert status == 413 and b'"payload_too_large"' in body
    assert elapsed < 5


def test_gunicorn_does_not_take_a_clients_word_for_https(gunicorn: tuple[Service, int]) -> None:
    _service, port = gunicorn
    status, headers, _body = _exchange(
        port, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Forwarded-Proto: https\r\n\r\n"
    )
    assert status == 200
    assert "strict-transport-security" not in headers


@pytest.mark.parametrize("threads", ["1", "4"])
def test_gunicorn_metrics_sum_every_workers_requests(env: dict[str, str], tmp_path: Path, threads: str) -> None:
    """Two workers (sync, or gthread with 4 threads): whichever worker answers a scrape, it counts the
    requests that both served (prometheus-client multiprocess mode), not only its own."""
    token = "scrape-" + "m" * 40
    shared = tmp_path / "metrics"
    env = {**env, "REFERRAL_METRICS_TOKEN": token, "PROMETHEUS_MULTIPROC_DIR": str(shared)}
    shared.mkdir()
    (shared / "counter_1.db").write_bytes(b"samples of an earlier run")  # emptied at start
    port = _free_port()
    service = Service(env, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2", "--threads", threads)
    health = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    try:
        wait_until(lambda: _port_open(port), timeout=30, what="gunicorn listening")
        assert not (shared / "counter_1.db").exists()
        served = 0

        def both_served() -> bool:
            # A new connection each time: the workers take them as they come, so in time both serve some
            # (each worker's samples are in a file named after its process id).
            nonlocal served
            assert _exchange(port, health)[0] == 200
            served += 1
            return len(list(shared.glob("counter_*.db"))) == 2

        wait_until(both_served, timeout=60, interval=0.01, what="both workers serving")
        line = f'http_requests_total{{endpoint="/healthz",method="GET",status="200"}} {float(served)}'
        scrape = (
            f"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        )
        for _ in range(6):
            status, _headers, body = _exchange(port, scrape)
            assert status == 200
            assert line in body.decode(), (served, body.decode()[:3000])
    finally:
        assert service.terminate() == 0, service.output()
    assert shared.is_dir()  # the operator's folder is kept
