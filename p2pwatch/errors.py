"""The single error hierarchy of p2pwatch (DESIGN.md, house style).

``RemoteProtocolError`` means a remote party (DHT node, tracker, peer, a file from outside) sent
something wrong; ``LocalProtocolError`` means our own code misused an API. Timeouts have their own
types. Every decoder raises a subclass of ``RemoteProtocolError`` and nothing else.
"""

from __future__ import annotations

import errno

from p2pwatch.endpoints import format_addr


class P2PWatchError(Exception):
    """Root of every error p2pwatch raises on purpose."""


class RemoteProtocolError(P2PWatchError):
    """A remote party (or an input file) broke a protocol or format rule."""


class LocalProtocolError(P2PWatchError):
    """We misused an API (a bug in the caller, not in the remote party)."""


class DecodeError(RemoteProtocolError):
    """Bencoded input is malformed or exceeds a named limit."""


class MetainfoError(RemoteProtocolError):
    """A .torrent file, info dict or magnet URI is malformed."""


class CompactAddressError(RemoteProtocolError):
    """A compact peer or node string (BEP 23, 7, 32, 5) has the wrong length (p2pwatch.torrent.compact).

    Each protocol codec re-raises it as its own type (PexError, KRPCError, TrackerError)."""


class KRPCError(RemoteProtocolError):
    """A KRPC message is malformed, or a node replied with a KRPC error.

    ``code`` is the BEP 5 error code (201 generic, 202 server, 203 protocol, 204 method unknown).
    ``transaction_id`` is set when the malformed message still carried one, so a reply can be sent.
    ``from_query`` is true when the malformed message was a query (``"y": "q"``); only those get an
    error reply, never a response or an error (that could make two nodes answer each other forever).
    """

    def __init__(
        self,
        message: str,
        code: int = 203,
        transaction_id: bytes | None = None,
        *,
        from_query: bool = False,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.transaction_id = transaction_id
        self.from_query = from_query


class NetworkRefused(P2PWatchError):
    """The network policy (netguard) refuses this destination."""


class P2PWatchTimeout(P2PWatchError):
    """Base of every timeout p2pwatch raises."""


class QueryTimeout(P2PWatchTimeout):
    """A DHT query got no answer in time."""


class ConfigError(P2PWatchError):
    """The configuration or a command-line value is invalid."""


class PeerWireError(RemoteProtocolError):
    """A BitTorrent peer broke the peer-wire protocol (BEP 3/6/9/10/52) or the MSE/PE handshake."""


class PeerTimeout(P2PWatchTimeout):
    """A BitTorrent peer did not answer in time."""


class TrackerError(RemoteProtocolError):
    """A tracker (BEP 3/15/48) sent a malformed or unexpected reply."""


class TrackerFailure(TrackerError):
    """A tracker refused a request: HTTP ``failure reason`` or UDP error action 3. ``reason`` is its text."""

    def __init__(self, reason: str, tracker: str = "") -> None:
        super().__init__(f"tracker {tracker} failed: {reason}" if tracker else f"tracker failed: {reason}")
        self.reason = reason
        self.tracker = tracker


class TrackerTimeout(P2PWatchTimeout):
    """A tracker did not answer in time (after the BEP 15 retransmissions, or the HTTP deadline)."""


class TrackerUnreachable(P2PWatchError):
    """A tracker could not be reached at all (name not resolved, connection refused or reset, TLS failed)."""


class StorageError(P2PWatchError):
    """The evidence store refused or failed an operation (p2pwatch.storage)."""


class SchemaOutOfDate(StorageError):
    """The database schema is missing, older or newer than this p2pwatch; the message names the fix."""


class AppendOnlyViolation(StorageError):
    """Something tried to change or delete an append-only row (observations, audit log)."""


class FingerprintError(P2PWatchError):
    """A file cannot be fingerprinted (unreadable, a directory, empty), or a fingerprint file or imported
    hash list is malformed or of an unknown format version."""


class MediaError(FingerprintError):
    """Media could not be decoded or perceptually hashed (no ffmpeg, no video stream, corrupt data)."""


class KeyFileError(P2PWatchError):
    """The signing key file is missing, unreadable, too widely readable, or not an Ed25519 key."""


class BundleError(P2PWatchError):
    """An evidence bundle cannot be written from the data given (a broken chain, a missing transcript…)."""


class BindError(P2PWatchError, OSError):
    """A local socket could not be bound: the port is in use (``EADDRINUSE``, often another BitTorrent client
    on 6881), the address is not one of this machine (``EADDRNOTAVAIL``), or the port is privileged
    (``EACCES``). The one-line message names the protocol, address and port, what the socket was for, and what
    to do: ``remedy`` (the command line sets it to its own option and configuration key). An ``OSError``
    too, so code that survives a failed socket still does."""

    def __init__(self, protocol: str, host: str, port: int, error: OSError, *, purpose: str = "",
                 remedy: str = "") -> None:
        super().__init__(error.errno, error.strerror or str(error))
        self.protocol, self.host, self.port = protocol, host, port
        self.purpose, self.remedy = purpose, remedy

    @property
    def endpoint(self) -> str:
        """``host:port``, an IPv6 host in brackets (:func:`p2pwatch.endpoints.format_addr`)."""
        return format_addr((self.host, self.port))

    @property
    def reason(self) -> str:
        if self.errno == errno.EADDRINUSE:
            return "the port is already in use by another program (perhaps another BitTorrent client)"
        if self.errno == errno.EADDRNOTAVAIL:
            return f"{self.host} is not an address of this machine"
        if self.errno == errno.EACCES:
            return f"permission denied (ports below 1024 need root; {self.port} was asked)"
        return str(self.strerror)

    def __str__(self) -> str:
        what = f" for {self.purpose}" if self.purpose else ""
        remedy = self.remedy or "choose another address or port"
        return f"cannot bind {self.protocol} {self.endpoint}{what}: {self.reason}; {remedy}"
