"""Real local receivers for partner notifications: an HTTP server that checks Standard Webhooks
signatures with the `standardwebhooks` package, and an SMTP server (aiosmtpd), each on a free port."""

from __future__ import annotations

import hmac
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    verified: Any  # the parsed body when the signature verified, else None
    error: str | None
    client_port: int = 0  # the sender's port: the same for posts over one kept-alive connection


@dataclass
class WebhookReceiver:
    """Answers each POST with the next status of `script` (then 200), and keeps what came."""

    url: str = ""
    secret: str | None = None
    verify: bool = True
    # The receiver's own clock, when a test's fake clock runs ahead of the real one: the signature is
    # checked with the package, the timestamp against this clock with the package's tolerance (5 min).
    now: Callable[[], datetime] | None = None
    script: list[int] = field(default_factory=list)
    # Seconds to wait before answering each POST, in turn (then at once): a slow or hung receiver.
    delays: list[float] = field(default_factory=list)
    # Seconds the answer's headers take to arrive, a byte at a time, each byte well within any time-out
    # (a receiver that holds the sender without ever going quiet); 0: the answer at once.
    trickle_seconds: float = 0.0
    received: list[Received] = field(default_factory=list)

    def handle(self, headers: dict[str, str], body: bytes, client_port: int = 0) -> int:
        verified, error = None, None
        if self.secret is not None and self.verify:
            try:
                verified = (
                    Webhook(self.secret).verify(body, headers) if self.now is None else self._verify_at(body, headers)
                )
            except WebhookVerificationError as exc:
                error = str(exc)
        self.received.append(Received(headers, body, verified, error, client_port))
        if self.delays:
            time.sleep(self.delays.pop(0))
        return self.script.pop(0) if self.script else 200

    def _verify_at(self, body: bytes, headers: dict[str, str]) -> Any:
        assert self.secret is not None and self.now is not None
        sent_at = datetime.fromtimestamp(int(headers["webhook-timestamp"]), tz=UTC)
        if abs((self.now() - sent_at).total_seconds()) > TOLERANCE_SECONDS:
            raise WebhookVerificationError("Message timestamp too old or too new")
        expected = Webhook(self.secret).sign(headers["webhook-id"], sent_at, body.decode()).split(",", 1)[1]
        given = [s.split(",", 1)[1] for s in headers["webhook-signature"].split(" ") if s.startswith("v1,")]
        if not any(hmac.compare_digest(expected, g) for g in given):
            raise WebhookVerificationError("No matching signature found")
        return json.loads(body)


TOLERANCE_SECONDS = 5 * 60  # standardwebhooks' own


@contextmanager
def webhook_receiver(*, keep_alive: bool = False) -> Iterator[WebhookReceiver]:
    """`keep_alive`: answer in HTTP/1.1 and keep the connection open (else HTTP/1.0, one per POST)."""
    receiver = WebhookReceiver()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1" if keep_alive else "HTTP/1.0"

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            status = receiver.handle(headers, body, self.client_address[1])
            if receiver.trickle_seconds:
                self._trickle(status, receiver.trickle_seconds)
                return
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def _trickle(self, status: int, seconds: float) -> None:
            self.wfile.write(f"{self.protocol_version} {status} OK\r\nx-slow: ".encode())
            until = time.monotonic() + seconds
            while time.monotonic() < until:
                try:
                    self.wfile.write(b"z")
                    self.wfile.flush()
                except OSError:  # the sender gave up
                    self.close_connection = True
                    return
                time.sleep(0.1)
            self.wfile.write(b"\r\ncontent-length: 0\r\n\r\n")

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/referrals"
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Mailbox:
    port: int
    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    logins: list[tuple[str, str]] = field(default_factory=list)  # (user, password) the relay was given


@contextmanager
def smtp_server(*, auth_in_the_clear: bool = False) -> Iterator[Mailbox]:
    """`auth_in_the_clear`: the relay offers AUTH without STARTTLS (a downgraded or careless relay) and
    keeps the credentials it is sent."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    box = Mailbox(free_port())

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's name
            box.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
            box.messages.append(message_from_bytes(envelope.original_content, policy=policy.default))  # type: ignore[arg-type]
            return "250 OK"

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        if isinstance(data, LoginPassword):
            box.logins.append((data.login.decode(), data.password.decode()))
        return AuthResult(success=True)

    extra: dict[str, Any] = {"authenticator": authenticator, "auth_require_tls": False} if auth_in_the_clear else {}
    controller = Controller(Handler(), hostname="127.0.0.1", port=box.port, **extra)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()
