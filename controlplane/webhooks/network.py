"""Sending a webhook to a URL a project admin typed, without letting it reach inside our network.

The host is resolved once; every address it resolves to must be public (not
loopback, private, link-local, the cloud metadata address, multicast or
reserved) unless an address falls in ``WEBHOOK_ALLOWED_NETWORKS``, which a site
admin sets. The request then goes to the address that was checked, never to
the name again, so a DNS answer that changes between the check and the
connection (DNS rebinding) cannot move it. HTTPS still verifies the
certificate against the name (SNI). Redirects are not followed: a redirect
could point anywhere.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import httpx
from django.conf import settings

from controlplane.errors import ValidationFailed

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# What we keep of an answer's body for the delivery log.
ANSWER_KEEP_BYTES = 1000


@dataclass(frozen=True)
class Target:
    """A URL checked for sending: its parts, and the one address it will be sent to."""

    scheme: str
    host: str
    port: int
    path: str
    address: IPAddress


@dataclass(frozen=True)
class Answer:
    status: int | None
    body: str
    error: str
    duration_ms: int

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def _allowed_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(net, strict=False) for net in settings.WEBHOOK_ALLOWED_NETWORKS]


def address_refusal(address: IPAddress) -> str:
    """Why webhooks may not be sent to ``address``, or "" if they may."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if any(address in network for network in _allowed_networks()):
        return ""
    if address.is_unspecified:
        return "not a public address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address (cloud metadata lives there)"
    if address.is_private:
        return "a private address"
    if address.is_multicast or address.is_reserved or address.is_unspecified or not address.is_global:
        return "not a public address"
    return ""


def url_parse(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path-and-query) of a webhook URL; ValidationFailed if it cannot be one."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValidationFailed(f"The URL {url!r} is not valid: {exc}.") from exc
    if parts.scheme not in ("https", "http"):
        raise ValidationFailed("A webhook URL must start with https:// (or http://).")
    if not parts.hostname:
        raise ValidationFailed("A webhook URL must name a host.")
    if parts.username is not None or parts.password is not None:
        raise ValidationFailed(
            "A webhook URL may not carry a user name or password; the signature proves the sender."
        )
    if parts.fragment:
        raise ValidationFailed("A webhook URL may not have a #fragment.")
    path = urlunsplit(("", "", parts.path or "/", parts.query, ""))
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80), path


def target_resolve(url: str) -> Target:
    """Check ``url`` and resolve its host once; ValidationFailed naming why it may not be sent to."""
    scheme, host, port, path = url_parse(url)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ValidationFailed(f"The host {host!r} cannot be resolved.") from exc
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
    # Every address must pass: a name that resolves to a public and a private address would
    # otherwise be a coin toss between them.
    for address in addresses:
        refusal = address_refusal(address)
        if refusal:
            raise ValidationFailed(
                f"Webhooks are not sent to {host} ({address}): it is {refusal}. "
                "A site admin can allow a network with WEBHOOK_ALLOWED_NETWORKS."
            )
    return Target(scheme=scheme, host=host, port=port, path=path, address=addresses[0])


def _netloc(host: str, port: int, scheme: str) -> str:
    bracketed = f"[{host}]" if ":" in host else host
    default = 443 if scheme == "https" else 80
    return bracketed if port == default else f"{bracketed}:{port}"


def post(target: Target, *, body: bytes, headers: dict[str, str]) -> Answer:
    """POST ``body`` to the checked address of ``target``; the answer or why there was none."""
    url = urlunsplit(
        (target.scheme, _netloc(str(target.address), target.port, target.scheme), target.path, "", "")
    )
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    started = time.monotonic()
    try:
        # trust_env=False: a proxy from the environment would resolve the name itself.
        with httpx.Client(
            timeout=settings.WEBHOOK_TIMEOUT_SECONDS, follow_redirects=False, trust_env=False
        ) as client:
            request = client.build_request(
                "POST",
                url,
                content=body,
                headers={**headers, "Host": _netloc(target.host, target.port, target.scheme)},
                extensions=extensions,
            )
            response = client.send(request, stream=True)
            try:
                kept = b""
                for chunk in response.iter_bytes():
                    kept += chunk
                    if len(kept) >= ANSWER_KEEP_BYTES:
                        break
            finally:
                response.close()
            return Answer(
                status=response.status_code,
                body=kept[:ANSWER_KEEP_BYTES].decode("utf-8", "replace"),
                error="",
                duration_ms=round((time.monotonic() - started) * 1000),
            )
    except httpx.HTTPError as exc:
        return Answer(
            status=None,
            body="",
            error=f"{type(exc).__name__}: {exc}"[:500],
            duration_ms=round((time.monotonic() - started) * 1000),
        )
