"""Webhooks: the signature of a POST to a job's callback_url, and which receivers may be called (SSRF).

A receiver checks a call the way Stripe's are checked: the `Ktune-Signature` header is
`t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>" keyed with KTUNE_WEBHOOK_SECRET>`; recompute it
over the raw body and compare in constant time (and refuse an old `t`, against replays).

A callback URL is refused when its host resolves to an address that is not public (loopback, link-local,
private, multicast, reserved, unspecified ...), unless the host is listed in KTUNE_WEBHOOK_ALLOWED_HOSTS:
when the job is submitted, and again when each POST is made (the POST then goes to the address checked).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

SIGNATURE_HEADER = "Ktune-Signature"

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The `Ktune-Signature` header value of `body` sent at `timestamp` (unix seconds)."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(secret: str, header: str, body: bytes, now: int, tolerance_seconds: int = 300) -> bool:
    """Whether `header` signs `body` with `secret` at a time within `tolerance_seconds` of `now` (what a
    receiver does; the tests use it)."""
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        parts.setdefault(name, []).append(value)
    try:
        timestamp = int(parts["t"][0])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance_seconds:
        return False
    expected = sign(secret, timestamp, body).split(",v1=", 1)[1]
    return any(hmac.compare_digest(expected, given) for given in parts.get("v1", []))


def public_address(address: IpAddress) -> bool:
    """Whether an address is on the public internet: not loopback, link-local, private (RFC 1918, ULA,
    CGNAT ...), multicast, reserved or unspecified; IPv4 inside IPv6 (::ffff:a.b.c.d, 6to4 ...) is judged
    by its IPv4 address."""
    if isinstance(address, ipaddress.IPv6Address):
        inner = address.ipv4_mapped or address.sixtofour or (address.teredo[1] if address.teredo else None)
        if inner is not None:
            return public_address(inner)
    return address.is_global and not (
        address.is_multicast
        or address.is_loopback
        or address.is_link_local
        or address.is_private
        or address.is_reserved
        or address.is_unspecified
    )


class CallbackRefused(ValueError):
    """A callback URL this service will not call; the message says why (for the 422 or the attempt)."""


@dataclass(frozen=True)
class Target:
    """Where a callback URL's POST goes: its host and port, and the checked address to connect to."""

    scheme: str
    host: str
    port: int
    address: str


def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (the system resolver); raises CallbackRefused when none."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise CallbackRefused(f"its host '{host}' does not resolve ({exc})") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def check_scheme(url: str) -> None:
    """Raises CallbackRefused unless `url` is an absolute http or https URL with a host and no credentials."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise CallbackRefused(f"not a URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise CallbackRefused("give an http:// or https:// URL")
    if not parts.hostname:
        raise CallbackRefused("the URL names no host")
    if parts.username is not None or parts.password is not None:
        raise CallbackRefused("the URL may not hold a user name or password")
    if port == 0:
        raise CallbackRefused("the URL's port must be 1-65535")


def target(url: str, allowed_hosts: Sequence[str], resolver: Resolver = resolve) -> Target:
    """Where to POST `url`: the first address of its host, every one of which must be public unless the host
    is in `allowed_hosts`. Raises CallbackRefused."""
    check_scheme(url)
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    addresses = resolver(host, port)
    if not addresses:
        raise CallbackRefused(f"its host '{host}' does not resolve")
    allowed = {name.strip().lower().strip("[]") for name in allowed_hosts}
    if host.lower() not in allowed:
        for text in addresses:
            address = ipaddress.ip_address(text.split("%", 1)[0])
            if not public_address(address):
                raise CallbackRefused(
                    f"its host '{host}' resolves to {address}, which is not a public address (loopback, "
                    "private, link-local, multicast or reserved); give a public receiver, or have the "
                    "operator list the host in KTUNE_WEBHOOK_ALLOWED_HOSTS"
                )
    return Target(parts.scheme, host, port, addresses[0].split("%", 1)[0])
