"""The value types of perceptual matching: what kind a file is, one sampled frame, and the fingerprint of
an image or video. Plain data with no ffmpeg or imagehash behind it, so the comparison primitives
(:mod:`p2pwatch.match.media_match`) and the hashing (:mod:`p2pwatch.match.media`) share them without
importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any


class ContentKind(Enum):
    IMAGE = "image"
    VIDEO = "video"
    OTHER = "other"


@dataclass(frozen=True)
class FrameHash:
    """One sampled video frame: its presentation time (s, from the start of the file) and 64-bit pHash."""

    t: float
    phash: int


@dataclass(frozen=True)
class VideoInfo:
    """What ffmpeg says about an input's first video stream."""

    width: int
    height: int
    duration: float | None
    codec: str


@dataclass(frozen=True)
class MediaFingerprint:
    """Perceptual fingerprint of one image or video. Holds hashes and dimensions, never pixels."""

    kind: ContentKind
    width: int
    height: int
    duration: float | None = None
    codec: str | None = None
    frame_hashes: tuple[FrameHash, ...] = ()
    image_phash: int | None = None
    image_pdq: bytes | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value, "width": self.width, "height": self.height,
            "duration": self.duration, "codec": self.codec,
            "image_phash": None if self.image_phash is None else f"{self.image_phash:016x}",
            "image_pdq": None if self.image_pdq is None else self.image_pdq.hex(),
            "frame_hash": "phash64-32x32-gray",
            "frames": [[round(f.t, 3), f"{f.phash:016x}"] for f in self.frame_hashes],
        }

    @classmethod
    def from_json(cls, doc: Any) -> MediaFingerprint:
        """Parse :meth:`to_json`'s output; raises ValueError/KeyError/TypeError on malformed input."""
        if not isinstance(doc, dict):
            raise TypeError("media must be an object")
        phash, pdq = doc.get("image_phash"), doc.get("image_pdq")
        frames = tuple(FrameHash(float(t), hex_int(h, 16)) for t, h in doc.get("frames", []))
        pdq_bytes = None if pdq is None else bytes.fromhex(pdq)
        if pdq_bytes is not None and len(pdq_bytes) != 32:
            raise ValueError("image_pdq must be 64 hex digits")
        duration = doc.get("duration")
        return cls(
            kind=ContentKind(doc["kind"]), width=int(doc["width"]), height=int(doc["height"]),
            duration=None if duration is None else float(duration), codec=doc.get("codec"),
            frame_hashes=frames, image_phash=None if phash is None else hex_int(phash, 16),
            image_pdq=pdq_bytes,
        )


def hex_int(text: Any, digits: int) -> int:
    if not isinstance(text, str) or len(text) != digits:
        raise ValueError(f"expected {digits} hex digits, got {text!r}")
    return int(text, 16)
