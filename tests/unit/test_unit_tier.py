"""The unit tier's rule, enforced by tests/conftest.py: in-process only."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import psycopg
import pytest

from referral_service.db.session import make_engine

REFUSED = "a unit test runs in-process"


def test_a_unit_test_carries_the_unit_marker(request: pytest.FixtureRequest) -> None:
    assert request.node.get_closest_marker("unit") is not None
    assert request.node.get_closest_marker("e2e") is None


def test_a_unit_test_may_not_connect_to_rabbitmq_or_any_socket() -> None:
    with pytest.raises(RuntimeError, match=REFUSED):
        socket.create_connection(("127.0.0.1", 5672), timeout=1)
    with socket.socket() as s, pytest.raises(RuntimeError, match=REFUSED):
        s.bind(("127.0.0.1", 0))


def test_a_unit_test_may_not_start_a_subprocess() -> None:
    with pytest.raises(RuntimeError, match=REFUSED):
        subprocess.run([sys.executable, "-c", "pass"], check=True)
    with pytest.raises(RuntimeError, match=REFUSED):
        os.system("true")  # noqa: S605 - the call is what is refused


def test_a_unit_test_may_not_connect_to_postgresql() -> None:
    with pytest.raises(RuntimeError, match="connect to PostgreSQL"):
        psycopg.connect("host=127.0.0.1 port=5432 dbname=test user=postgres connect_timeout=2")
    engine = make_engine("postgresql+psycopg://postgres@127.0.0.1:5432/test")
    try:
        with pytest.raises(RuntimeError, match="connect to PostgreSQL"):
            engine.connect()
    finally:
        engine.dispose()
