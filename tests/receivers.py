"""Real local receivers for partner notifications: an HTTP server that checks Standard Webhooks
signatures with the `standardwebhooks` package, and an SMTP server (aiosmtpd), each on a free port."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
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


@dataclass
class WebhookReceiver:
    """Answers each POST with the next status of `script` (then 200), and keeps what came."""

    url: str = ""
    secret: str | None = None
    verify: bool = True
    script: list[int] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)

    def handle(self, headers: dict[str, str], body: bytes) -> int:
        verified, error = None, None
        if self.secret is not None and self.verify:
            try:
                verified = Webhook(self.secret).verify(body, headers)
            except WebhookVerificationError as exc:
                error = str(exc)
        self.received.append(Received(headers, body, verified, error))
        return self.script.pop(0) if self.script else 200


@contextmanager
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            status = receiver.handle({k.lower(): v for k, v in self.headers.items()}, body)
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

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


@contextmanager
def smtp_server() -> Iterator[Mailbox]:
    from aiosmtpd.controller import Controller

    box = Mailbox(free_port())

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's name
            box.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
            box.messages.append(message_from_bytes(envelope.original_content, policy=policy.default))  # type: ignore[arg-type]
            return "250 OK"

    controller = Controller(Handler(), hostname="127.0.0.1", port=box.port)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()
