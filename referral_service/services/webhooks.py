"""Webhooks to partners' own systems, in the Standard Webhooks format (the `standardwebhooks` package signs).

* Registering (`register_webhook`) checks the URL (below), makes a new signing secret (`whsec_…`, 32 random
  bytes) and returns it once; the row keeps it sealed: AES-256-GCM under a key derived from the keyring,
  bound to its table, column and row, so a copied or swapped ciphertext does not open.
* No SSRF: only `https://`, to a host whose every address is public. `REFERRAL_WEBHOOK_ALLOW_PRIVATE=1`
  (tests, closed networks) also allows loopback and private addresses, over http or https. Link-local
  (cloud metadata at 169.254.169.254), multicast, unspecified and reserved addresses are refused always.
  The check runs at registration, whenever the notify worker opens a connection, and again on a kept
  connection at least every 30 seconds (`Sender.RECHECK_SECONDS`); the request goes to the very address
  that was checked (no second lookup that DNS rebinding could answer differently); redirects are not
  followed.
* A post (connecting, TLS, the request and the whole answer) ends at `REFERRAL_WEBHOOK_TIMEOUT_SECONDS`,
  however the receiver paces its bytes.
"""

from __future__ import annotations

import base64
import functools
import http.client
import io
import ipaddress
import json
import os
import secrets
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import select
from standardwebhooks.webhooks import Webhook

from referral_service.crypto.envelope import encode_parts
from referral_service.db.models import Partner, WebhookEndpoint
from referral_service.domain import events
from referral_service.domain.errors import NotFound, ValidationFailed

if TYPE_CHECKING:
    from referral_service.services.ports import Services

# Routing keys a partner's endpoint hears of (the contract's list).
WEBHOOK_EVENTS = events.PARTNER_SYSTEM_EVENTS
MAX_URL = 2000
_SEAL_PURPOSE = "webhook-secret/v1"
_SEAL_DOMAIN = b"referral-service/webhook-secret/v1"
_NONCE = 12
USER_AGENT = "referral-service-webhooks/1"


class UrlRefused(ValidationFailed):
    """The URL may not receive webhooks; the message says why (it names the host, never a person)."""


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect (the address that passed) and what to ask for."""

    scheme: str
    host: str
    port: int
    address: str
    path: str


def _resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise UrlRefused(f"webhook URL refused: {host[:80]} does not resolve", {"url": ["not allowed"]}) from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _kind(address: str) -> str:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip.sixtofour is not None or ip.teredo is not None:
            # 6to4 (2002::/16) and Teredo (2001::/32) carry an IPv4 address that a tunnel delivers to:
            # 2002:7f00:1:: is 127.0.0.1 to a host with a 6to4 route, and Python calls it global.
            inner = [ip.sixtofour] if ip.sixtofour is not None else list(ip.teredo or ())
            kinds = {_kind(str(a)) for a in inner}
            return "forbidden" if "forbidden" in kinds else ("public" if kinds == {"public"} else "private")
        elif ip.is_site_local:  # fec0::/10, deprecated but still routed inside some networks
            return "private"
    if ip.is_link_local or ip.is_multicast or ip.is_unspecified:
        return "forbidden"
    if ip.is_loopback:  # before "reserved": ::1 is in IPv6's reserved ::/8
        return "loopback"
    if ip.is_reserved:
        return "forbidden"
    return "public" if ip.is_global else "private"


def _lookup(resolve: Any, host: str, port: int, timeout: float) -> list[str]:
    """`resolve(host, port)`, given at most `timeout` seconds. The system's resolver waits for a name
    server as long as its own settings say (tens of seconds), and a partner whose name server never
    answers would hold the notify worker that long every round; a lookup past the time-out is left to
    end on its own thread."""
    answer: list[Any] = []

    def run() -> None:
        try:
            answer.append(resolve(host, port))
        except Exception as exc:  # noqa: BLE001 - handed to the caller's thread
            answer.append(exc)

    thread = threading.Thread(target=run, name="webhook-lookup", daemon=True)
    thread.start()
    thread.join(timeout)
    if not answer:
        raise UrlRefused(
            f"webhook URL refused: {host[:80]} did not resolve within {timeout:g} s", {"url": ["not allowed"]}
        )
    if isinstance(answer[0], Exception):
        raise answer[0]
    return list(answer[0])


def check_url(url: str, *, allow_private: bool, resolve: Any = _resolve, timeout: float = 10.0) -> Target:
    """The URL as a `Target` to connect to, or `UrlRefused` with the reason; the name is looked up
    within `timeout` seconds (the webhook time-out)."""

    def refuse(reason: str) -> UrlRefused:
        return UrlRefused(f"webhook URL refused: {reason}", {"url": ["not allowed"]})

    if not isinstance(url, str) or len(url) > MAX_URL:
        raise refuse(f"a URL of at most {MAX_URL} characters is required")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise refuse("not a valid URL") from None
    if parts.scheme not in ("https", "http") or (parts.scheme == "http" and not allow_private):
        raise refuse("only https:// URLs receive webhooks")
    if not parts.hostname:
        raise refuse("the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise refuse("credentials in the URL are not allowed (the signature authenticates us)")
    if parts.fragment:
        raise refuse("a URL with a #fragment is not allowed")
    port = port or (443 if parts.scheme == "https" else 80)
    addresses = _lookup(resolve, parts.hostname, port, timeout)
    if not addresses:
        raise refuse(f"{parts.hostname} has no address")
    kinds = {_kind(a) for a in addresses}
    if "forbidden" in kinds:
        raise refuse(f"{parts.hostname} resolves to a link-local, multicast or reserved address")
    if kinds != {"public"} and not allow_private:
        raise refuse(
            f"{parts.hostname} resolves to a loopback or private address "
            "(allowed only with REFERRAL_WEBHOOK_ALLOW_PRIVATE=1)"
        )
    # Plain http only inside: a name that also resolves to a public address could be sent there.
    if parts.scheme != "https" and "public" in kinds:
        raise refuse("only https:// URLs receive webhooks")
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return Target(parts.scheme, parts.hostname, port, addresses[0], path)


# -- the signing secret, sealed at rest ------------------------------------------------------------
def _aad(endpoint_id: str) -> bytes:
    return encode_parts(_SEAL_DOMAIN, "webhook_endpoints", "secret_ct", endpoint_id)


def seal_secret(services: Services, endpoint_id: str, secret: str) -> bytes:
    nonce = os.urandom(_NONCE)
    key = AESGCM(services.keys.derive_secret(_SEAL_PURPOSE))
    return nonce + key.encrypt(nonce, secret.encode(), _aad(endpoint_id))


def open_secret(services: Services, endpoint_id: str, sealed: bytes) -> str:
    sealed = bytes(sealed)
    key = AESGCM(services.keys.derive_secret(_SEAL_PURPOSE))
    try:
        return key.decrypt(sealed[:_NONCE], sealed[_NONCE:], _aad(endpoint_id)).decode()
    except (InvalidTag, ValueError):
        raise ValidationFailed("the webhook's signing secret does not open; register the webhook again") from None


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def register_webhook(
    services: Services, partner_id: str, url: str, events: tuple[str, ...] = WEBHOOK_EVENTS
) -> dict[str, Any]:
    """Register (or replace) the partner's endpoint; the secret is in the answer, and only there."""
    unknown = sorted(set(events) - set(WEBHOOK_EVENTS))
    if unknown or not events:
        raise ValidationFailed(
            "unknown webhook event type", {"events": [f"one or more of {', '.join(WEBHOOK_EVENTS)}"]}
        )
    check_url(
        url,
        allow_private=services.settings.webhook_allow_private,
        timeout=float(services.settings.webhook_timeout_seconds),
    )
    secret = new_secret()
    with services.uow() as uow:
        if uow.session.get(Partner, partner_id) is None:
            raise NotFound(f"no partner with id {partner_id}")
        row = uow.session.scalars(select(WebhookEndpoint).where(WebhookEndpoint.partner_id == partner_id)).first()
        if row is None:
            row = WebhookEndpoint(id=secrets.token_hex(16), partner_id=partner_id)
            uow.session.add(row)
        row.url = url
        row.events = list(events)
        row.active = True
        row.secret_ct = seal_secret(services, row.id, secret)
        # The operator's registration is on record (the URL and secret are not: identifiers only).
        services.access.record(
            actor=None, action="partner.webhook_register", referral_id=None, details={"partner_id": partner_id}
        )
        uow.commit()
        return {"id": row.id, "partner_id": partner_id, "url": url, "events": list(events), "secret": secret}


# -- sending -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Answer:
    ok: bool
    status: int | None
    error: str | None


def _open(address: str, port: int, timeout: float | None) -> socket.socket:
    sock = socket.create_connection((address, port), timeout)
    # Posts on a kept-alive connection are small writes each waiting for an answer: without this, Nagle's
    # algorithm meets the receiver's delayed ACK and every post waits ~40 ms.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class _Deadline:
    """When the post under way must be over (`time.monotonic()`): a socket's time-out bounds one read,
    and a receiver sending a byte now and then would hold the worker (and every other partner's
    notices) for hours; each step of connecting and each read gets only the time left of the whole."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    def start(self) -> None:
        self.at = time.monotonic() + self.seconds

    def left(self) -> float:
        left = self.at - time.monotonic()
        if left <= 0:
            raise TimeoutError("the receiver took longer than the time-out")
        return left


class _DeadlineReader(io.RawIOBase):
    def __init__(self, sock: socket.socket, deadline: _Deadline) -> None:
        self._sock, self._deadline = sock, deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        # One read of a TLS socket waits at most its time-out in all (CPython keeps a deadline per call).
        self._sock.settimeout(self._deadline.left())
        return self._sock.recv_into(buffer)


class _DeadlineSocket:
    """The connection's socket, whose answers `http.client` reads through `_DeadlineReader`."""

    def __init__(self, sock: socket.socket, deadline: _Deadline) -> None:
        self._sock, self._deadline = sock, deadline

    def makefile(self, mode: str = "rb", *_: Any, **__: Any) -> io.BufferedReader:
        return io.BufferedReader(_DeadlineReader(self._sock, self._deadline))

    def sendall(self, data: Any) -> None:
        self._sock.settimeout(self._deadline.left())
        self._sock.sendall(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, target: Target, timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout)
        self._address = target.address
        self.deadline = _Deadline(timeout)

    def connect(self) -> None:
        self.sock = _DeadlineSocket(_open(self._address, self.port, self.deadline.left()), self.deadline)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, target: Target, timeout: float, context: ssl.SSLContext) -> None:
        super().__init__(target.host, target.port, timeout=timeout, context=context)
        self._address = target.address
        self._tls = context
        self.deadline = _Deadline(timeout)

    def connect(self) -> None:
        raw = _open(self._address, self.port, self.deadline.left())
        raw.settimeout(self.deadline.left())  # the handshake waits at most this in all
        tls = self._tls.wrap_socket(raw, server_hostname=self.host)  # certificate checked for the host
        self.sock = _DeadlineSocket(tls, self.deadline)


class Signer:
    """Signs with one endpoint's secret; made once per secret (the package decodes the secret when
    its `Webhook` is built)."""

    def __init__(self, secret: str) -> None:
        self._webhook = Webhook(secret)

    def headers(self, message_id: str, at: datetime, body: str) -> dict[str, str]:
        return {
            "webhook-id": message_id,
            "webhook-timestamp": str(int(at.timestamp())),
            "webhook-signature": self._webhook.sign(message_id, at, body),
            "content-type": "application/json",
            "user-agent": USER_AGENT,
        }


@functools.cache
def default_tls() -> ssl.SSLContext:
    """One verifying context for every delivery (building one loads the CA store: milliseconds)."""
    return ssl.create_default_context()


class Connection:
    """Signed POSTs to one endpoint URL, checked once (`check_url`) and sent to the address that
    passed; the connection is kept alive between posts when the receiver allows it."""

    def __init__(self, services: Services, url: str, *, tls: ssl.SSLContext | None = None) -> None:
        self.url = url
        timeout = float(services.settings.webhook_timeout_seconds)
        self._refused: str | None = None
        self._conn: _PinnedHTTPConnection | _PinnedHTTPSConnection | None = None
        try:
            target = check_url(url, allow_private=services.settings.webhook_allow_private, timeout=timeout)
        except UrlRefused as exc:
            self._refused = exc.message[:200]
            return
        self._target = target
        self._conn = (
            _PinnedHTTPSConnection(target, timeout, tls or default_tls())
            if target.scheme == "https"
            else _PinnedHTTPConnection(target, timeout)
        )
        self._used = False

    @property
    def refused(self) -> bool:
        return self._conn is None

    def still_leads_to_checked_address(self, services: Services) -> bool:
        """The URL checked again: it must still pass, and still lead to the address this connection uses."""
        if self._conn is None:
            return False
        try:
            target = check_url(
                self.url,
                allow_private=services.settings.webhook_allow_private,
                timeout=float(services.settings.webhook_timeout_seconds),
            )
        except UrlRefused:
            return False
        return target == self._target

    def post(self, signer: Signer, message_id: str, body: str, *, at: datetime) -> Answer:
        """One signed POST. Any non-2xx answer, time-out or refusal is a failed `Answer` with a short reason."""
        conn = self._conn
        if conn is None:
            return Answer(False, None, self._refused)
        headers = signer.headers(message_id, at, body)
        try:
            try:
                return self._exchange(conn, body.encode(), headers)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                if not self._used:
                    raise
                # The receiver closed the kept-alive connection between two posts: once more, afresh
                # (same webhook-id: if it did get the first, it deduplicates).
                conn.close()
                self._used = False
                return self._exchange(conn, body.encode(), headers)
        except TimeoutError:
            conn.close()
            return Answer(False, None, "timed out")
        except ssl.SSLError as exc:
            conn.close()
            return Answer(False, None, f"TLS error ({exc.reason or type(exc).__name__})"[:200])
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            return Answer(False, None, f"connection failed ({type(exc).__name__})")

    def _exchange(
        self, conn: _PinnedHTTPConnection | _PinnedHTTPSConnection, body: bytes, headers: dict[str, str]
    ) -> Answer:
        conn.deadline.start()  # connecting (if need be), sending and the whole answer: one time-out
        conn.request("POST", self._target.path, body=body, headers=headers)
        self._used = True
        response = conn.getresponse()
        # A receiver's answer is not ours to keep; a long one ends the connection rather than being read.
        if len(response.read(64 * 1024)) == 64 * 1024:
            conn.close()
        if 200 <= response.status < 300:
            return Answer(True, response.status, None)
        return Answer(False, response.status, f"HTTP {response.status}")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


def body_text(payload: dict[str, Any]) -> str:
    return json.dumps(payload, separators=(",", ":"), sort_keys=True)
