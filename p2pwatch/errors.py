"""The single error hierarchy of p2pwatch (DESIGN.md, house style).

``RemoteProtocolError`` means a remote party (DHT node, tracker, peer, a file from outside) sent
something wrong; ``LocalProtocolError`` means our own code misused an API. Timeouts have their own
types. Every decoder raises a subclass of ``RemoteProtocolError`` and nothing else.
"""

from __future__ import annotations


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


class KRPCError(RemoteProtocolError):
    """A KRPC message is malformed, or a node replied with a KRPC error.

    ``code`` is the BEP 5 error code (201 generic, 202 server, 203 protocol, 204 method unknown).
    ``transaction_id`` is set when the malformed message still carried one, so a reply can be sent.
    """

    def __init__(self, message: str, code: int = 203, transaction_id: bytes | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.transaction_id = transaction_id


class NetworkRefused(P2PWatchError):
    """The network policy (netguard) refuses this destination."""


class P2PWatchTimeout(P2PWatchError):
    """Base of every timeout p2pwatch raises."""


class QueryTimeout(P2PWatchTimeout):
    """A DHT query got no answer in time."""


class ConfigError(P2PWatchError):
    """The configuration or a command-line value is invalid."""
