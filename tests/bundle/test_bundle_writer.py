"""Evidence bundles: a sample built from synthetic data (random bytes, real .torrent files from libtorrent, a
hash chain made with the store's own chain module) is written, verified, and checked for determinism.

:func:`sample_inputs` is reused by the other bundle and evidence tests.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import struct
import zipfile
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from evidence.verify import EXIT_OK, Options, verify_bundle
from p2pwatch.bundle import PieceRecord, TorrentRecord, write_bundle
from p2pwatch.errors import BundleError
from p2pwatch.storage import chain as store_chain
from p2pwatch.torrent import merkle
from p2pwatch.torrent.metainfo import Metainfo, parse_torrent
from tests.conftest import require_component

try:
    import libtorrent as lt
except ImportError:  # pragma: no cover - depends on the machine
    lt = None


@pytest.fixture(autouse=True)
def _needs_libtorrent() -> None:
    require_component("libtorrent", lt is not None, "pip install libtorrent")

CREATED = "2025-01-02T03:04:05.000000Z"
KEY_SEED = bytes(range(32))
OTHER_TORRENT = "ff" * 20


def make_torrent(root: Path, piece_length: int, flags: int) -> bytes:
    ct = lt.create_torrent(lt.list_files(str(root)), piece_length, flags)
    ct.set_creation_date(1735689600)
    lt.set_piece_hashes(ct, str(root.parent))
    return bytes(lt.bencode(ct.generate()))


def signing_key(seed: bytes = KEY_SEED) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(seed)


def _when(seq: int) -> str:
    return store_chain.format_timestamp(datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=37 * seq))


class _Builder:
    def __init__(self, tmp: Path, seed: int) -> None:
        self.rng = random.Random(seed)
        self.tmp = tmp
        self.torrents: dict[str, tuple[bytes, Metainfo, bytes]] = {}  # key -> (torrent, metainfo, stream bytes)

    def add(self, key_kind: str, root: Path, files: list[tuple[str, int]], piece_length: int, flags: int) -> str:
        stream = b""
        for rel, size in files:
            path = root.parent / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            data = self.rng.randbytes(size)
            path.write_bytes(data)
            stream += data
        raw = make_torrent(root, piece_length, flags)
        meta = parse_torrent(raw)
        key = meta.infohash_v2.hex() if key_kind == "v2" and meta.infohash_v2 else meta.infohash.hex()
        self.torrents[key] = (raw, meta, stream)
        return key

    def piece(self, key: str, index: int) -> bytes:
        _, meta, stream = self.torrents[key]
        if meta.piece_hashes:
            start = index * meta.piece_length
            return stream[start : start + meta.piece_size(index)]
        offset = 0  # v2-only: the one file of the sample's v2 torrent
        start = index * meta.piece_length - offset
        return stream[start : start + meta.piece_size(index)]

    def piece_hash(self, key: str, index: int) -> tuple[str, str]:
        _, meta, _ = self.torrents[key]
        if meta.piece_hashes:
            return meta.piece_hashes[index].hex(), "sha1"
        hashes = meta.v2_piece_hashes(meta.files[0])
        assert hashes is not None
        return hashes[index].hex(), "sha256-merkle"


def _matches(b: _Builder, keys: dict[str, str]) -> list[dict[str, Any]]:
    a_stream = b.torrents[keys["a"]][2]
    table = [hashlib.sha1(a_stream[i : i + 32768]).hexdigest() for i in range(0, len(a_stream), 32768)]
    b_meta, b_stream = b.torrents[keys["b"]][1], b.torrents[keys["b"]][2]
    root = merkle.pieces_root(merkle.block_hashes(b_stream)).hex()
    c_meta, c_stream = b.torrents[keys["c"]][1], b.torrents[keys["c"]][2]
    video = c_meta.files[1]
    video_bytes = c_stream[video.offset : video.offset + video.length]
    leaves = merkle.block_hashes(video_bytes)
    piece_start = 2 * c_meta.piece_length
    blocks = [{"leaf_index": k, "observed_sha256": leaves[k].hex(), "registered_sha256": leaves[k].hex()}
              for k in range(len(leaves))
              if video.offset + k * 16384 >= piece_start
              and video.offset + k * 16384 + min(16384, video.length - k * 16384) <= piece_start + 32768]
    registered = [b.rng.getrandbits(64) for _ in range(8)]
    frames = []
    for i, value in enumerate(registered):
        flips = b.rng.sample(range(64), 3 if i < 6 else 30)
        observed = value
        for bit in flips:
            observed ^= 1 << bit
        frames.append({"registered_hash": f"{value:016x}", "observed_hash": f"{observed:016x}",
                       "distance": len(flips), "registered_time": 10.0 * i, "observed_time": 10.0 * i + 2.1})
    common = {"case": "sample-case", "confirmed_at": CREATED}
    return [
        {**common, "id": "m1", "content_id": "c1", "infohash": keys["a"], "file_index": 0, "file_path": "a.bin",
         "file_length": len(a_stream), "method": "exact-metadata", "bytes_fetched": 0,
         "proof": {"kind": "v1-piece-table", "piece_length": 32768, "first_piece": 0, "piece_hashes": table}},
        {**common, "id": "m2", "content_id": "c2", "infohash": keys["b"], "file_index": 0, "file_path": "b.bin",
         "file_length": b_meta.files[0].length, "method": "exact-metadata", "bytes_fetched": 0,
         "proof": {"kind": "v2-pieces-root", "pieces_root": root}},
        {**common, "id": "m3", "content_id": "c3", "infohash": keys["c"], "file_index": 1,
         "file_path": "c/video.bin", "file_length": video.length, "method": "exact-piece", "bytes_fetched": 32768,
         "proof": {"piece_index": 2, "piece_hash": c_meta.piece_hashes[2].hex(), "piece_hash_algorithm": "sha1",
                   "blocks": blocks}},
        {**common, "id": "m4", "content_id": "c4", "infohash": keys["b"], "file_index": 0, "file_path": "b.bin",
         "method": "perceptual", "bytes_fetched": 65536,
         "proof": {"algorithm": "phash", "threshold": 10, "min_frames": 5, "matched_frames": 6, "time_offset": 2.0,
                   "offset_tolerance": 0.5, "frames": frames}},
    ]


def sample_inputs(tmp: Path, *, rows: int = 1000, allow_content: bool = False, seed: int = 7) -> dict[str, Any]:
    """Keyword arguments for :func:`write_bundle` describing a synthetic case (``out_path`` excluded)."""
    b = _Builder(tmp, seed)
    v1_only, v2_only = lt.create_torrent.v1_only, lt.create_torrent.v2_only
    keys = {
        "a": b.add("v1", tmp / "a.bin", [("a.bin", 5 * 32768 + 1000)], 32768, v1_only),
        "b": b.add("v2", tmp / "b.bin", [("b.bin", 3 * 65536 + 5000)], 65536, 0),
        "c": b.add("v1", tmp / "c", [("c/readme.txt", 1000), ("c/video.bin", 100 * 1024 + 123)], 32768, v1_only),
        "d": b.add("v1", tmp / "d.bin", [("d.bin", 50000)], 16384, v2_only),
    }
    matches = _matches(b, keys)
    peers = [(f"198.51.100.{i + 1}", 6881 + i) for i in range(34)] + [(f"2001:db8::{i + 1:x}", 51413) for i in range(6)]
    peer_level = [(0, 0, 1, 2, 3, 0, 3)[i % 7] for i in range(len(peers))]
    peer_level[5] = 4
    transcripts: dict[str, str] = {}
    pieces: dict[tuple[str, int], PieceRecord] = {}
    key_order = list(keys.values())
    observations: list[dict[str, Any]] = []
    prev = store_chain.GENESIS_HASH
    seq = 0
    case_rows = 0
    while case_rows < rows or seq % 10 != 9:
        seq += 1
        if seq % 10 == 0 or case_rows >= rows:  # another case's row: only its body hash leaves the store
            fields = store_chain.observation_fields(
                seq=seq, observed_at=_when(seq), torrent=OTHER_TORRENT, addr=f"{b.rng.getrandbits(256):064x}",
                level=0, source="dht", client=None, peer_id=None, have_fraction=None, transcript=None)
            observations.append({"seq": seq, "redacted": True, "body_hash": store_chain.body_hash(fields).hex()})
            prev = store_chain.row_hash(fields, prev)
            continue
        case_rows += 1
        p = seq % len(peers)
        ip, port = peers[p]
        key = keys["a"] if peer_level[p] == 4 else key_order[p % len(key_order)]
        meta = b.torrents[key][1]
        level = peer_level[p] if (seq // len(peers)) % 3 == 0 else 0
        tsha = None
        if level >= 1:
            transcript = _transcript(b, key, meta, ip, port, level, p, pieces)
            body = store_chain.canonical_json(transcript)
            tsha = hashlib.sha256(body.encode("utf-8")).hexdigest()
            transcripts[tsha] = body
        source = "probe" if level else ("dht" if seq % 3 else "tracker")
        reporter = None if level else ("203.0.113.9:6881" if source == "dht" else "udp://tracker.invalid:1337")
        salt = f"{b.rng.getrandbits(128):032x}"
        fields = store_chain.observation_fields(
            seq=seq, observed_at=_when(seq), torrent=meta.infohash.hex(),
            addr=store_chain.address_digest(salt, ip, port, reporter), level=level, source=source,
            client="qBittorrent/4.6.2" if level else None, peer_id=None, have_fraction=1.0 if level >= 2 else None,
            transcript=tsha)
        digest = store_chain.row_hash(fields, prev)
        purged = level == 0 and seq % 97 == 0
        disclosed = (None, None, None, None) if purged else (ip, port, reporter, salt)
        observations.append({**fields, "prev_hash": prev, "row_hash": digest,
                             **dict(zip(("ip", "port", "reporter", "addr_salt"), disclosed, strict=True))})
        prev = digest
    samples = [{"at": _when(600 * h), "infohash": key, "source": source, "dht_peers": 3 + (h * 7 + n) % 11,
                "seeders": None, "leechers": None}
               for h in range(24) for n, key in enumerate(key_order) for source in ("dht",)]
    samples += [{"at": _when(600 * h + 5), "infohash": keys["a"], "source": "udp://tracker.invalid:1337",
                 "seeders": 2 + h % 4, "leechers": h % 3} for h in range(24)]
    return {
        "case": {"name": "sample-case", "allow_content": allow_content, "opened_at": CREATED},
        "contents": [{"id": f"c{i}", "kind": "video" if i != 4 else "image", "size": 1000 * i,
                      "secret_note": "never exported"} for i in range(1, 5)],
        "torrents": [TorrentRecord(raw, key, meta.name) for key, (raw, meta, _) in b.torrents.items()],
        "matches": matches,
        "peers": [{"ip": ip, "port": port, "country": "ZZ", "asn": 64496 + i} for i, (ip, port) in enumerate(peers)],
        "observations": observations,
        "chain_anchor": {"head_seq": seq, "head_hash": prev},
        "transcripts": sorted(transcripts.items()),
        "pieces": [*sorted(pieces.values(), key=lambda r: (r.infohash, r.index)),
                   PieceRecord(keys["c"], 2, data=b.piece(keys["c"], 2))],
        "samples": samples,
        "signing_key": signing_key(),
        "config_hash": hashlib.sha256(b"[monitor]\ninterval = 600\n").hexdigest(),
        "tool_version": "0.1.0",
        "created_at": CREATED,
    }


def _transcript(b: _Builder, key: str, meta: Metainfo, ip: str, port: int, level: int, p: int,
                pieces: dict[tuple[str, int], PieceRecord]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ip": ip, "port": port, "infohash": meta.infohash.hex(), "level": level, "client": "qBittorrent/4.6.2",
        "peer_id": "2d71423436323022" + "00" * 12, "have_fraction": 1.0 if level >= 2 else None,
        "metadata_verified": True, "piece_verified": None, "piece_hash": None, "piece_hash_algorithm": None,
        "started_at": "2025-01-01T00:00:00.000000+00:00", "finished_at": "2025-01-01T00:00:01.000000+00:00",
        "transcript": [{"at": "2025-01-01T00:00:00.100000+00:00", "direction": "out", "message": "handshake",
                        "detail": {}}],
    }
    if level == 3:
        index = p % meta.num_pieces
        digest, algorithm = b.piece_hash(key, index)
        out.update(piece_verified=index, piece_hash=digest, piece_hash_algorithm=algorithm)
        pieces[(key, index)] = PieceRecord(key, index, data=b.piece(key, index))
    if level == 4:
        out.update(file_index=0, piece_hash_algorithm="sha1",
                   pieces_verified=[{"index": i, "hash": meta.piece_hashes[i].hex()} for i in range(meta.num_pieces)])
    return out


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    tmp = tmp_path_factory.mktemp("bundle")
    inputs = sample_inputs(tmp / "data")
    out = tmp / "sample.zip"
    write_bundle(out, **inputs)
    return inputs, out


def test_sample_bundle_verifies_every_check(sample: tuple[dict[str, Any], Path]) -> None:
    _, path = sample
    result = verify_bundle(path)
    assert result.exit_code == EXIT_OK, [c.lines() for c in result.failed]
    names = [c.name for c in result.checks]
    assert names == ["zip", "manifest", "bundle.json", "key", "signature", "torrents", "match m1", "match m2",
                     "match m3", "match m4", "chain", "peers"]
    assert all(c.status == "ok" for c in result.checks)
    chain = next(c for c in result.checks if c.name == "chain")
    assert "1000 rows re-hashed" in chain.details[0]
    assert "whole files" in chain.details[3] and "0 with piece bytes" in chain.details[3]


def test_same_input_gives_the_same_bytes(tmp_path: Path) -> None:
    first = write_bundle(tmp_path / "one.zip", **sample_inputs(tmp_path / "d1", rows=60))
    second = write_bundle(tmp_path / "two.zip", **sample_inputs(tmp_path / "d2", rows=60))
    assert (tmp_path / "one.zip").read_bytes() == (tmp_path / "two.zip").read_bytes()
    assert first.sha256 == second.sha256 == hashlib.sha256((tmp_path / "one.zip").read_bytes()).hexdigest()


def test_layout_opens_with_standard_unzip_and_holds_no_content(sample: tuple[dict[str, Any], Path]) -> None:
    _, path = sample
    with zipfile.ZipFile(path) as z:
        assert z.testzip() is None
        names = z.namelist()
        bundle = json.loads(z.read("bundle.json"))
        manifest = json.loads(z.read("manifest.json"))
        assert all(i.date_time == (1980, 1, 1, 0, 0, 0) for i in z.infolist())
    assert names[-3:] == ["public_key.pem", "manifest.json", "manifest.sig"]
    assert [f["path"] for f in manifest["files"]] == names[:-2]
    assert {n.split("/")[0] for n in names} == {
        "torrents", "observations.jsonl", "chain.json", "transcripts", "pieces", "bundle.json", "timeline.png",
        "report.html", "case.jsonld", "public_key.pem", "manifest.json", "manifest.sig"}
    assert not any(n.endswith(".bin") for n in names)  # the case does not allow content bytes
    assert all("secret_note" not in c for c in bundle["contents"])
    assert {p["level"] for p in bundle["peers"]} == {0, 1, 2, 3, 4}
    assert [p["level"] for p in bundle["peers"]] == sorted((p["level"] for p in bundle["peers"]), reverse=True)
    assert bundle["observations"]["rows"] == 1000 and bundle["observations"]["redacted"] > 100
    with zipfile.ZipFile(path) as z:
        for name in names:
            if name.startswith("transcripts/"):
                assert hashlib.sha256(z.read(name)).hexdigest() == name.split("/")[1][:-5]


def test_content_bytes_only_when_the_case_allows(tmp_path: Path) -> None:
    inputs = sample_inputs(tmp_path / "data", rows=120, allow_content=True)
    write_bundle(tmp_path / "content.zip", **inputs)
    with zipfile.ZipFile(tmp_path / "content.zip") as z:
        bins = [n for n in z.namelist() if n.endswith(".bin")]
    assert bins and all(n.startswith("pieces/") for n in bins)
    result = verify_bundle(tmp_path / "content.zip")
    assert result.exit_code == EXIT_OK, [c.lines() for c in result.failed]
    assert "with piece bytes re-hashed" in next(c for c in result.checks if c.name == "chain").details[3]
    assert "re-computed from the included piece bytes" in next(c for c in result.checks if c.name == "match m3").summary


def test_report_case_and_timeline(sample: tuple[dict[str, Any], Path]) -> None:
    _, path = sample
    result = verify_bundle(path)
    with zipfile.ZipFile(path) as z:
        html = z.read("report.html").decode()
        graph = json.loads(z.read("case.jsonld"))
        png = z.read("timeline.png")
    assert str(result.fingerprint) in html
    assert "Only levels 3 and 4 are evidence" in html and "openssl pkeyutl -verify" in html
    assert "python3 -m evidence verify" in html
    assert set(graph) == {"@context", "@graph"}
    types = {node["@type"] for node in graph["@graph"]}
    assert {"case-investigation:Investigation", "case-investigation:InvestigativeAction",
            "case-investigation:ProvenanceRecord", "uco-tool:Tool", "uco-observable:File",
            "uco-observable:IPv4Address", "uco-observable:IPv6Address"} <= types
    ids = [node["@id"] for node in graph["@graph"]]
    assert len(ids) == len(set(ids))
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = struct.unpack(">II", png[16:24])
    assert (width, height) == (960, 380)
    idat = png[png.index(b"IDAT") + 4 : png.index(b"IEND") - 8]
    raw = zlib.decompress(idat)
    assert len(raw) == height * (1 + 3 * width)
    assert bytes((31, 119, 180)) in raw  # the first series was drawn


@pytest.mark.parametrize("breakage", ["row", "transcript", "piece", "proof", "anchor"])
def test_writer_refuses_inputs_that_would_not_verify(tmp_path: Path, breakage: str) -> None:
    inputs = sample_inputs(tmp_path / "data", rows=120)
    if breakage == "row":
        full = next(r for r in inputs["observations"] if not r.get("redacted") and r["seq"] > 20)
        full["level"] = 1 - full["level"] if full["level"] <= 1 else 0
    elif breakage == "transcript":
        inputs["transcripts"] = inputs["transcripts"][1:]
    elif breakage == "piece":
        first = inputs["pieces"][0]
        inputs["pieces"][0] = PieceRecord(first.infohash, first.index, hash="00" * 20)
    elif breakage == "proof":
        inputs["matches"][1]["proof"]["pieces_root"] = "11" * 32
    else:
        inputs["chain_anchor"] = {"head_seq": inputs["chain_anchor"]["head_seq"], "head_hash": "22" * 32}
    with pytest.raises(BundleError):
        write_bundle(tmp_path / "broken.zip", **inputs)
    assert not (tmp_path / "broken.zip").exists()
    assert not any(p.name.endswith(".partial") for p in tmp_path.iterdir())


def test_streams_observations_from_a_generator(tmp_path: Path) -> None:
    inputs = sample_inputs(tmp_path / "data", rows=200)
    rows = inputs.pop("observations")
    consumed = []

    def stream() -> Any:
        for row in rows:
            consumed.append(row["seq"])
            yield row

    summary = write_bundle(tmp_path / "gen.zip", observations=stream(), **inputs)
    assert consumed == [r["seq"] for r in rows]
    assert summary.observations == 200 and summary.last_seq == rows[-1]["seq"]
    assert verify_bundle(io.BytesIO((tmp_path / "gen.zip").read_bytes()), Options()).exit_code == EXIT_OK


def test_a_case_without_observations_or_matches(tmp_path: Path) -> None:
    inputs = sample_inputs(tmp_path / "data", rows=10)
    inputs.update(observations=[], matches=[], transcripts=[], pieces=[], samples=[],
                  chain_anchor={"head_seq": 5000, "head_hash": "ab" * 32})
    summary = write_bundle(tmp_path / "empty.zip", **inputs)
    assert summary.observations == 0 and summary.peers == 0 and summary.first_seq is None
    result = verify_bundle(tmp_path / "empty.zip")
    assert result.exit_code == EXIT_OK, [c.lines() for c in result.failed]
    assert [c.status for c in result.checks if c.name == "matches"] == ["warn"]


def test_segment_opening_with_a_redacted_row_needs_its_anchor(tmp_path: Path) -> None:
    inputs = sample_inputs(tmp_path / "data", rows=50)
    rows = inputs["observations"]
    assert rows[19]["seq"] == 20 and rows[19].get("redacted") and not rows[18].get("redacted")
    inputs["observations"] = rows[19:]
    with pytest.raises(BundleError, match="first_prev_hash"):
        write_bundle(tmp_path / "x.zip", **inputs)
    inputs["chain_anchor"] = {**inputs["chain_anchor"], "first_prev_hash": rows[18]["row_hash"]}
    summary = write_bundle(tmp_path / "ok.zip", **inputs)
    assert summary.first_seq == 20
    result = verify_bundle(tmp_path / "ok.zip")
    assert result.exit_code == EXIT_OK, [c.lines() for c in result.failed]
    inputs["chain_anchor"] = {**inputs["chain_anchor"], "first_prev_hash": "cd" * 32}
    with pytest.raises(BundleError, match="prev_hash is not the hash of the row before"):
        write_bundle(tmp_path / "wrong.zip", **inputs)
