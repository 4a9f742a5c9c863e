"""What a peer probe returns: its level, the peer's identity, and the transcript (DESIGN.md, evidence levels).

:mod:`p2pwatch.probe.peer_probe` produces these; they are plain frozen dataclasses, JSON-able with ``to_json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from p2pwatch.probe.pex import PexPeer


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class TranscriptEntry:
    at: str
    direction: str  # "out" | "in" | "note"
    message: str
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at, "direction": self.direction, "message": self.message, "detail": self.detail}


@dataclass(frozen=True)
class ProbeTimeouts:
    connect: float = 5.0
    handshake: float = 5.0
    metadata: float = 15.0
    piece: float = 30.0
    idle: float = 10.0
    #: after the other steps, wait this long for a first BEP 11 ut_pex message from a peer that advertised
    #: ut_pex (0: keep only what arrived during the probe)
    pex: float = 0.0


@dataclass(frozen=True)
class ProbeResult:
    ip: str
    port: int
    infohash: bytes
    level: int = 0
    client: str | None = None
    peer_id: bytes | None = None
    have_fraction: float | None = None
    metadata_verified: bool = False
    metadata: bytes | None = None
    piece_verified: int | None = None
    piece_hash: str | None = None
    piece_hash_algorithm: str | None = None  # "sha1" (v1 piece hash) | "sha256-merkle" (v2)
    piece_sha1: str | None = None  # SHA-1 of the piece bytes received, whatever the torrent version
    flagged: str | None = None
    error: str | None = None
    encrypted: bool = False
    encryption: str = "none"  # "none" | "mse-plaintext" | "rc4"
    bytes_received: int = 0
    bytes_sent: int = 0
    started_at: str = ""
    finished_at: str = ""
    transcript: tuple[TranscriptEntry, ...] = ()
    #: v2 piece layers this peer handed over by BEP 52 hash requests, each verified against its pieces root
    piece_layers: dict[bytes, bytes] = field(default_factory=dict)
    #: peers this peer listed over BEP 11 ut_pex during the probe (claims, level 0; bounded)
    pex_peers: tuple[PexPeer, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "level": self.level, "client": self.client,
            "peer_id": self.peer_id.hex() if self.peer_id is not None else None,
            "have_fraction": self.have_fraction, "metadata_verified": self.metadata_verified,
            "piece_verified": self.piece_verified, "transcript": [t.to_json() for t in self.transcript],
            "ip": self.ip, "port": self.port, "infohash": self.infohash.hex(),
            "piece_hash": self.piece_hash, "piece_hash_algorithm": self.piece_hash_algorithm,
            "piece_sha1": self.piece_sha1, "flagged": self.flagged, "error": self.error,
            "encrypted": self.encrypted, "encryption": self.encryption,
            "bytes_received": self.bytes_received, "bytes_sent": self.bytes_sent,
            "metadata_size": len(self.metadata) if self.metadata is not None else None,
            "started_at": self.started_at, "finished_at": self.finished_at,
            "pex_peers": [p.to_json() for p in self.pex_peers],
        }


def result_from_state(ip: str, port: int, infohash: bytes, r: dict[str, Any], bytes_in: int, bytes_out: int,
                      transcript: tuple[TranscriptEntry, ...], pex_peers: tuple[PexPeer, ...] = ()) -> ProbeResult:
    """The :class:`ProbeResult` of a finished probe from its state (``r`` holds what the steps found)."""
    return ProbeResult(
        ip=ip, port=port, infohash=infohash, level=r["level"], client=r.get("client"),
        peer_id=r.get("peer_id"), have_fraction=r.get("have_fraction"),
        metadata_verified=r.get("metadata_verified", False), metadata=r.get("metadata"),
        piece_verified=r.get("piece_verified"), piece_hash=r.get("piece_hash"),
        piece_hash_algorithm=r.get("piece_hash_algorithm"), piece_sha1=r.get("piece_sha1"),
        flagged=r.get("flagged"), error=r.get("error"), encrypted=r.get("encrypted", False),
        encryption=r.get("encryption", "none"), bytes_received=bytes_in, bytes_sent=bytes_out,
        started_at=r["started_at"], finished_at=utc_now(), transcript=transcript,
        piece_layers=r.get("piece_layers", {}), pex_peers=pex_peers,
    )
