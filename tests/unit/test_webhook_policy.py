"""Where webhooks may go (no SSRF), how they are signed, and how retries are spaced."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks.webhooks import Webhook

from referral_service.services.notifications import FIRST_RETRY, MAX_BACKOFF, RETRY_FOR, backoff
from referral_service.services.webhooks import Signer, UrlRefused, check_url, new_secret


def resolver(*addresses: str):  # what DNS would answer, without asking it
    return lambda host, port: list(addresses)


@pytest.mark.parametrize(
    ("url", "addresses", "allow_private", "target"),
    [
        (
            "https://hooks.example.org/referrals?x=1",
            ("93.184.215.14",),
            False,
            ("93.184.215.14", 443, "/referrals?x=1"),
        ),
        (
            "https://[2606:2800:21f:cb07:6820:80da:af6b:8b2c]:8443/",
            ("2606:2800:21f:cb07:6820:80da:af6b:8b2c",),
            False,
            ("2606:2800:21f:cb07:6820:80da:af6b:8b2c", 8443, "/"),
        ),
        ("http://127.0.0.1:9000/hook", ("127.0.0.1",), True, ("127.0.0.1", 9000, "/hook")),
        ("https://intranet.cso.local/hook", ("10.1.2.3",), True, ("10.1.2.3", 443, "/hook")),
        # A 6to4 address of a public IPv4 address is as public as that one.
        ("https://v6.example.org/", ("2002:5db8:d70e::1",), False, ("2002:5db8:d70e::1", 443, "/")),
    ],
)
def test_allowed_urls_connect_to_the_address_that_was_checked(url, addresses, allow_private, target) -> None:
    t = check_url(url, allow_private=allow_private, resolve=resolver(*addresses))
    assert (t.address, t.port, t.path) == target


@pytest.mark.parametrize(
    ("url", "addresses", "allow_private", "reason"),
    [
        ("http://hooks.example.org/", ("93.184.215.14",), False, "only https://"),
        ("http://hooks.example.org/", ("93.184.215.14",), True, "only https://"),  # plain http to the internet
        ("ftp://hooks.example.org/", ("93.184.215.14",), True, "only https://"),
        # Plain http where private addresses are allowed, to a name that resolves to a public one too.
        ("http://mixed.example/", ("10.0.0.1", "93.184.215.14"), True, "only https://"),
        ("http://mixed.example/", ("93.184.215.14", "10.0.0.1"), True, "only https://"),
        ("https://127.0.0.1/", ("127.0.0.1",), False, "loopback or private"),
        ("https://localhost/", ("::1",), False, "loopback or private"),
        ("https://db.internal/", ("192.168.1.5",), False, "loopback or private"),
        ("https://cgnat.example/", ("100.64.0.7",), False, "loopback or private"),
        ("https://mapped.example/", ("::ffff:127.0.0.1",), False, "loopback or private"),
        # IPv6 forms that lead to an IPv4 address or a site's own network.
        ("https://sixtofour.example/", ("2002:7f00:1::",), False, "loopback or private"),  # 127.0.0.1
        ("https://sixtofour.example/", ("2002:c0a8:105::",), False, "loopback or private"),  # 192.168.1.5
        ("https://sixtofour.example/", ("2002:a9fe:a9fe::",), True, "link-local"),  # 169.254.169.254
        ("https://teredo.example/", ("2001:0:4136:e378:8000:63bf:80ff:fffe",), False, "loopback or private"),
        ("https://sitelocal.example/", ("fec0::1",), False, "loopback or private"),
        ("https://nat64.example/", ("64:ff9b::a9fe:a9fe",), True, "link-local"),
        # One private answer among public ones is enough to refuse (DNS may rotate to it).
        ("https://mixed.example/", ("93.184.215.14", "10.0.0.1"), False, "loopback or private"),
        # Cloud metadata and the like are refused even where private addresses are allowed.
        ("https://metadata.example/", ("169.254.169.254",), True, "link-local"),
        ("https://[fe80::1]/", ("fe80::1",), True, "link-local"),
        ("https://zero.example/", ("0.0.0.0",), True, "link-local"),  # noqa: S104 - the address refused
        ("https://user:pw@hooks.example.org/", ("93.184.215.14",), False, "credentials"),
        ("https:///nohost", (), False, "no host"),
        ("https://hooks.example.org/" + "a" * 2000, ("93.184.215.14",), False, "at most 2000"),
    ],
)
def test_refused_urls_say_why(url, addresses, allow_private, reason) -> None:
    with pytest.raises(UrlRefused) as err:
        check_url(url, allow_private=allow_private, resolve=resolver(*addresses))
    assert reason in err.value.message


def test_a_name_whose_lookup_hangs_is_refused_at_the_time_out_not_waited_for() -> None:
    def name_server_that_never_answers(host: str, port: int) -> list[str]:
        time.sleep(5)
        return ["93.184.215.14"]

    started = time.monotonic()
    with pytest.raises(UrlRefused, match=r"hooks\.example\.org did not resolve within 1 s"):
        check_url(
            "https://hooks.example.org/", allow_private=False, resolve=name_server_that_never_answers, timeout=1.0
        )
    assert time.monotonic() - started < 2.0


def test_a_lookup_that_fails_in_time_is_refused_with_its_own_reason() -> None:
    def no_such_name(host: str, port: int) -> list[str]:
        raise UrlRefused(f"webhook URL refused: {host} does not resolve")

    with pytest.raises(UrlRefused, match="does not resolve"):
        check_url("https://hooks.example.org/", allow_private=False, resolve=no_such_name, timeout=5.0)


def test_signatures_verify_with_the_standardwebhooks_package() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_")
    body = '{"type":"assignment.offered"}'
    at = datetime.now(UTC)
    headers = Signer(secret).headers("msg_1", at, body)
    assert Webhook(secret).verify(body, headers) == {"type": "assignment.offered"}
    with pytest.raises(Exception, match="No matching signature"):
        Webhook(new_secret()).verify(body, headers)


def test_the_first_retry_comes_within_30_seconds_and_later_ones_back_off_to_an_hour() -> None:
    assert backoff(1, lambda: 0.0) == FIRST_RETRY / 2
    assert backoff(1, lambda: 0.999) <= timedelta(seconds=30)
    assert backoff(2, lambda: 0.999) <= timedelta(seconds=60)
    assert backoff(30, lambda: 0.999) <= MAX_BACKOFF
    assert backoff(30, lambda: 0.0) == MAX_BACKOFF / 2


def test_the_slowest_schedule_still_retries_many_times_within_a_day() -> None:
    waited, attempts = timedelta(0), 0
    while waited < RETRY_FOR:
        attempts += 1
        waited += backoff(attempts, lambda: 0.999)
    assert attempts >= 24
