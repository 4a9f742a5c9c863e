"""Infohashes as users type them, and magnet URIs (BEP 9, with the v2 ``urn:btmh`` form of BEP 52).

An infohash is accepted as 40 hex characters (v1 SHA-1), 64 hex characters (v2 SHA-256), 32 base32
characters (v1, the older magnet form), or a ``1220``-prefixed SHA-256 multihash (v2). A magnet carries
``xt=urn:btih:`` (v1, hex or base32) and/or ``xt=urn:btmh:1220…`` (v2); a hybrid magnet carries both.

Departures from a strict reader, all for links found in the wild:

* parameter names may carry an index suffix (``xt.1``, ``tr.2``), as in the generic magnet format;
* ``xt`` values of other URN namespaces (``urn:sha1``, ``urn:ed2k``…) are ignored, as long as one
  BitTorrent ``xt`` is present; two different BitTorrent hashes of the same version are refused;
* a malformed optional parameter (an ``x.pe`` without a valid port, a non-numeric ``xl``) is dropped
  rather than refusing a magnet whose infohash is fine; trackers and web seeds are deduplicated in order.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote

from p2pwatch import limits
from p2pwatch.errors import LocalProtocolError, MetainfoError

_HEX40 = re.compile(r"[0-9a-fA-F]{40}")
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_BASE32 = re.compile(r"[A-Za-z2-7]{32}")
_MULTIHASH = re.compile(r"1220[0-9a-fA-F]{64}")
_INDEXED = re.compile(r"(xt|dn|tr|ws|xl|as|xs|kt|so)(\.\d+)?")

ACCEPTED_INFOHASH = (
    "40 hex characters (v1), 64 hex characters (v2), 32 base32 characters (v1) "
    "or a 1220-prefixed SHA-256 multihash (v2)"
)


@dataclass(frozen=True)
class InfoHash:
    """The identity of a torrent: its v1 (SHA-1, 20 bytes) and/or v2 (SHA-256, 32 bytes) infohash."""

    v1: bytes | None
    v2: bytes | None

    def __post_init__(self) -> None:
        if self.v1 is None and self.v2 is None:
            raise LocalProtocolError("an InfoHash needs a v1 or a v2 hash")
        if self.v1 is not None and (not isinstance(self.v1, bytes) or len(self.v1) != 20):
            raise LocalProtocolError("a v1 infohash is 20 bytes")
        if self.v2 is not None and (not isinstance(self.v2, bytes) or len(self.v2) != 32):
            raise LocalProtocolError("a v2 infohash is 32 bytes")

    @property
    def hex(self) -> str:
        """The canonical text form: the v1 hash in hex when there is one, else the v2 hash (64 hex)."""
        return self.v1.hex() if self.v1 is not None else self._v2.hex()

    @property
    def dht_id(self) -> bytes:
        """The 20-byte id used on the DHT, trackers and the wire: v1, else the truncated v2 (BEP 52)."""
        return self.v1 if self.v1 is not None else self._v2[:20]

    @property
    def _v2(self) -> bytes:
        assert self.v2 is not None  # __post_init__ guarantees one of the two
        return self.v2

    def __str__(self) -> str:
        return self.hex


def parse_infohash(text: str) -> InfoHash:
    """Parse an infohash typed by a user (see module docstring for the accepted forms)."""
    if not isinstance(text, str):
        raise MetainfoError(f"an infohash must be text; accepted: {ACCEPTED_INFOHASH}")
    value = text.strip()
    if _HEX40.fullmatch(value):
        return InfoHash(v1=bytes.fromhex(value), v2=None)
    if _HEX64.fullmatch(value):
        return InfoHash(v1=None, v2=bytes.fromhex(value))
    if _BASE32.fullmatch(value):
        return InfoHash(v1=_b32(value), v2=None)
    if _MULTIHASH.fullmatch(value):
        return InfoHash(v1=None, v2=bytes.fromhex(value[4:]))
    shown = value if len(value) <= 80 else value[:77] + "..."
    raise MetainfoError(f"not an infohash: {shown!r}; accepted: {ACCEPTED_INFOHASH}")


def _b32(value: str) -> bytes:
    try:
        return base64.b32decode(value.upper())
    except (binascii.Error, ValueError) as exc:  # unreachable after the regex, kept for safety
        raise MetainfoError(f"bad base32 infohash {value!r}") from exc


@dataclass(frozen=True)
class Magnet:
    """A parsed magnet URI. ``peers`` are ``(host, port)``; IPv6 hosts are kept without brackets."""

    infohash: InfoHash
    display_name: str | None = None
    trackers: tuple[str, ...] = ()
    peers: tuple[tuple[str, int], ...] = ()
    web_seeds: tuple[str, ...] = ()
    exact_length: int | None = None

    def to_uri(self) -> str:
        """Render as a magnet URI; :func:`parse_magnet` of the result gives back an equal Magnet."""
        params: list[str] = []
        if self.infohash.v1 is not None:
            params.append("xt=urn:btih:" + self.infohash.v1.hex())
        if self.infohash.v2 is not None:
            params.append("xt=urn:btmh:1220" + self.infohash.v2.hex())
        if self.display_name is not None:
            params.append("dn=" + quote(self.display_name, safe=""))
        if self.exact_length is not None:
            params.append(f"xl={self.exact_length}")
        params.extend("tr=" + quote(tracker, safe="") for tracker in self.trackers)
        params.extend("ws=" + quote(seed, safe="") for seed in self.web_seeds)
        for host, port in self.peers:
            shown = f"[{host}]" if ":" in host else host
            params.append("x.pe=" + quote(f"{shown}:{port}", safe=":[]"))
        return "magnet:?" + "&".join(params)

    def __str__(self) -> str:
        return self.to_uri()


def _parse_xt(value: str) -> tuple[str, bytes] | None:
    """Return ("v1"|"v2", digest) for a BitTorrent xt, None for other namespaces."""
    lowered = value.lower()
    if lowered.startswith("urn:btih:"):
        digest = value[9:]
        if _HEX40.fullmatch(digest):
            return "v1", bytes.fromhex(digest)
        if _BASE32.fullmatch(digest):
            return "v1", _b32(digest)
        raise MetainfoError(f"bad urn:btih infohash {digest[:80]!r}: expected 40 hex or 32 base32 characters")
    if lowered.startswith("urn:btmh:"):
        digest = value[9:]
        if not re.fullmatch(r"[0-9a-fA-F]*", digest) or len(digest) % 2:
            raise MetainfoError(f"bad urn:btmh multihash {digest[:80]!r}: expected hex")
        if not digest.startswith("1220"):
            raise MetainfoError(
                f"unsupported multihash {digest[:8]!r}…: only SHA-256 ('1220': code 0x12, 32 bytes) is used"
            )
        if len(digest) != 68:
            raise MetainfoError("bad urn:btmh multihash: 1220 must be followed by 64 hex characters")
        return "v2", bytes.fromhex(digest[4:])
    return None


def _parse_peer(value: str) -> tuple[str, int] | None:
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})", value) or re.fullmatch(
        r"([^\s:\[\]/@]+):(\d{1,5})", value
    )
    if match is None:
        return None
    port = int(match.group(2))
    if not 0 < port < 65536:
        return None
    return match.group(1), port


def parse_magnet(uri: str) -> Magnet:
    """Parse a ``magnet:?`` URI; raise :class:`MetainfoError` saying what is wrong."""
    if not isinstance(uri, str):
        raise MetainfoError("a magnet URI must be text")
    if len(uri) > limits.MAX_MAGNET_LENGTH:
        raise MetainfoError(
            f"magnet URI of {len(uri)} characters exceeds the limit of {limits.MAX_MAGNET_LENGTH}"
        )
    text = uri.strip()
    if text[:7].lower() != "magnet:":
        scheme = text.split(":", 1)[0][:20] if ":" in text else ""
        hint = f"scheme {scheme!r}" if scheme else "no scheme"
        raise MetainfoError(f"not a magnet URI ({hint}); expected 'magnet:?xt=urn:btih:…'")
    query = text[7:]
    if query.startswith("?"):
        query = query[1:]
    elif query.startswith("//?"):
        query = query[3:]
    hashes: dict[str, bytes] = {}
    display_name: str | None = None
    trackers: list[str] = []
    web_seeds: list[str] = []
    peers: list[tuple[str, int]] = []
    exact_length: int | None = None
    for raw_key, value in parse_qsl(query, keep_blank_values=True, errors="replace"):
        key = raw_key.lower()
        indexed = _INDEXED.fullmatch(key)
        if indexed is not None:
            key = indexed.group(1)
        if key == "xt":
            parsed = _parse_xt(value)
            if parsed is None:
                continue
            version, digest = parsed
            if hashes.get(version, digest) != digest:
                raise MetainfoError(f"magnet URI has two different {version} infohashes")
            hashes[version] = digest
        elif key == "dn":
            if display_name is None:
                display_name = value
        elif key == "tr":
            if value and value not in trackers:
                trackers.append(value)
        elif key == "ws":
            if value and value not in web_seeds:
                web_seeds.append(value)
        elif key == "x.pe":
            peer = _parse_peer(value)
            if peer is not None and peer not in peers:
                peers.append(peer)
        elif key == "xl" and exact_length is None and value.isascii() and value.isdigit() and len(value) < 20:
            exact_length = int(value)
    if not hashes:
        raise MetainfoError(
            "magnet URI has no BitTorrent 'xt' (urn:btih:<hex or base32> or urn:btmh:1220<hex>)"
        )
    return Magnet(
        infohash=InfoHash(v1=hashes.get("v1"), v2=hashes.get("v2")),
        display_name=display_name,
        trackers=tuple(trackers),
        peers=tuple(peers),
        web_seeds=tuple(web_seeds),
        exact_length=exact_length,
    )
