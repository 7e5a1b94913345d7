"""Webhook signatures (Stripe's scheme) and which callback URLs may be called (SSRF)."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress

import pytest

from service.core.webhooks import CallbackRefused, check_scheme, public_address, sign, target, verify

BODY = b'{"id":"x","status":"succeeded"}'


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    header = sign("s3cret", 1_733_350_000, BODY)
    expected = hmac.new(b"s3cret", b"1733350000." + BODY, hashlib.sha256).hexdigest()
    assert header == f"t=1733350000,v1={expected}"


def test_verify_accepts_its_own_signature_and_refuses_tampering() -> None:
    header = sign("s3cret", 1000, BODY)
    assert verify("s3cret", header, BODY, now=1010)
    assert not verify("s3cret", header, BODY + b" ", now=1010)  # body changed
    assert not verify("other", header, BODY, now=1010)  # another secret
    assert not verify("s3cret", header.replace("t=1000", "t=1001"), BODY, now=1010)  # time changed
    assert not verify("s3cret", header, BODY, now=1000 + 301)  # too old: a replay
    assert not verify("s3cret", "garbage", BODY, now=1000)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata
        "100.64.0.1",  # carrier-grade NAT
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "ff02::1",
        "::ffff:127.0.0.1",  # IPv4-mapped loopback
        "::ffff:10.0.0.1",
        "2002:7f00:1::",  # 6to4 of 127.0.0.1
    ],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert not public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert public_address(ipaddress.ip_address(address))


def resolver(answers: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    return lambda host, port: answers[host]


def test_a_host_resolving_to_a_private_address_is_refused_unless_allowed() -> None:
    answers = resolver({"hooks.example.com": ["93.184.215.14", "10.0.0.5"]})
    with pytest.raises(CallbackRefused, match=r"10\.0\.0\.5.*KTUNE_WEBHOOK_ALLOWED_HOSTS"):
        target("https://hooks.example.com/in", [], answers)
    allowed = target("https://hooks.example.com/in", ["hooks.example.com"], answers)
    assert (allowed.host, allowed.port, allowed.address) == ("hooks.example.com", 443, "93.184.215.14")


def test_the_post_goes_to_the_address_checked() -> None:
    checked = target("http://hooks.example.com:8080/x", [], resolver({"hooks.example.com": ["8.8.8.8"]}))
    assert (checked.scheme, checked.port, checked.address) == ("http", 8080, "8.8.8.8")


def test_literal_addresses_are_checked_too() -> None:
    with pytest.raises(CallbackRefused, match="not a public address"):
        target("http://127.0.0.1:9000/hook", [])
    with pytest.raises(CallbackRefused, match="not a public address"):
        target("http://[::1]:9000/hook", [])
    assert target("http://127.0.0.1:9000/hook", ["127.0.0.1"]).address == "127.0.0.1"


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://example.com/x", "http:// or https://"),
        ("file:///etc/passwd", "http:// or https://"),
        ("example.com/hook", "http:// or https://"),
        ("http:///path", "no host"),
        ("https://user:pw@example.com/", "user name or password"),
        ("http://example.com:99999/", "not a URL"),
    ],
)
def test_only_plain_http_and_https_urls(url: str, why: str) -> None:
    with pytest.raises(CallbackRefused, match=why):
        check_scheme(url)
