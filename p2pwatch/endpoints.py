"""Endpoint text: the one ``ip:port`` form of an endpoint, and the IPv4 form of an IPv4-mapped IPv6 address.

Foundation, standard library only and importing nothing from p2pwatch, so that every layer can use it,
the error tree (:class:`~p2pwatch.errors.BindError` names the address it could not bind) and the compact
address codec (:mod:`p2pwatch.torrent.compact`, which re-exports both functions) included.

* :func:`format_addr`: ``ip:port``, an IPv6 address in brackets (RFC 3986 host syntax, as in BEP 7/32 tracker
  and DHT listings written as text);
* :func:`unmap`: ``::ffff:a.b.c.d`` (RFC 4291 section 2.5.5.2) as ``a.b.c.d``, for callers that compare or
  contact peers by address (BEP 11 PEX, the UDP tracker's check of a reply's source); the codecs themselves
  never apply it (docs/DECISIONS.md, branch codec).
"""

from __future__ import annotations

import socket

__all__ = ["Endpoint", "format_addr", "unmap"]

Endpoint = tuple[str, int]

_MAPPED_PREFIX = bytes(10) + b"\xff\xff"


def format_addr(addr: Endpoint) -> str:
    """``ip:port``, an IPv6 address in brackets (``[::1]:6881``): the one text form of an endpoint in logs,
    command output, error messages and listings (:func:`p2pwatch.investigate.examine.parse_endpoint_text`
    reads it back)."""
    return f"[{addr[0]}]:{addr[1]}" if ":" in addr[0] else f"{addr[0]}:{addr[1]}"


def unmap(ip: str) -> str:
    """The IPv4 text of an IPv4-mapped IPv6 address (``::ffff:10.1.2.3`` gives ``10.1.2.3``); else ``ip``.

    Text that is not an IPv6 address is returned unchanged.
    """
    if ":" not in ip:
        return ip
    try:
        packed = socket.inet_pton(socket.AF_INET6, ip)
    except (OSError, ValueError):
        return ip
    return socket.inet_ntop(socket.AF_INET, packed[12:]) if packed[:12] == _MAPPED_PREFIX else ip
