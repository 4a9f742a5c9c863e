"""The matcher end to end on loopback (issue 4's proof): libtorrent seeds nine torrents, p2pwatch's DHT node
finds their seeders with get_peers, and a TorrentReader fed with those peers supplies the pieces the stages ask
for. Registered: a 24 s 640x360 H.264 video and a 640x480 image (lavfi, generated into tmp_path).

(a) the exact video, single-file v1            -> exact-metadata (v1 piece table), no content byte fetched
(b) the exact video, hybrid v1+v2              -> exact-metadata (v2 pieces root), no content byte fetched
(c) the exact video behind a text file (v1)    -> exact-piece, one piece fetched
(d) the video re-encoded smaller and worse     -> perceptual
(e) a clip of it remuxed into Matroska         -> perceptual, at the clip's time offset
(f) the image resized and recompressed (JPEG)  -> perceptual
decoys: another video named with the keyword (a candidate, no match), random bytes of the video's exact size
and name (rejected at exact-piece), another image (no match).

Every proof is re-checked with the evidence verifier's own code (evidence/proofs.py).
"""

from __future__ import annotations

import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio

from evidence.proofs import TorrentIndex, check_match
from evidence.torrent import parse_torrent as evidence_torrent
from p2pwatch.dht.node import open_dht_node
from p2pwatch.match import media
from p2pwatch.match.fingerprint import fingerprint_file
from p2pwatch.match.matcher import (
    METHOD_EXACT_METADATA,
    METHOD_EXACT_PIECE,
    METHOD_PERCEPTUAL,
    MatchReport,
    RegisteredContent,
    RegistryIndex,
    match_torrent,
)
from p2pwatch.match.media import ContentKind, FrameHash, MediaFingerprint
from p2pwatch.match.perceptual import (
    PerceptualSettings,
    decide_video,
    frames_at,
    near_any,
    perceptual_matches,
    sample_order,
)
from p2pwatch.probe.bulk_fetch import FetchOptions, open_torrent_reader
from p2pwatch.testswarm.media import have_ffmpeg, make_image, make_video, remux, resize_recompress, transcode
from p2pwatch.torrent.maker import make_v1_torrent
from p2pwatch.torrent.metainfo import Metainfo, parse_torrent
from tests.conftest import loopback_address, require_component
from tests.dht_helpers import node_config

try:
    import libtorrent as lt

    from p2pwatch.testswarm.localswarm import LocalSwarm, create_torrent
except ImportError:  # pragma: no cover - reported by require_component
    lt = None  # type: ignore[assignment]

KEYWORD = "Kim Jiyoung"
SMALL_PIECE = 16 * 1024  # what libtorrent picks for files this small
PACK_PIECE = 32 * 1024


def test_sampled_frames_hash_like_the_registry(tmp_path: Path) -> None:
    """perceptual.frames_at decodes and hashes exactly as media.video_frame_hashes (which registration uses)."""
    require_component("ffmpeg", have_ffmpeg(), "pip install imageio-ffmpeg")
    video = make_video(tmp_path / "v.mp4", 3, seconds=6.0, segments=2)
    for start in (0.0, 1.3, 4.1):
        ours = frames_at(str(video), start, accurate=True, frames=3, step=0.2, window=1.0, protocols="file")
        theirs = media.video_frame_hashes(str(video), start=start, duration=1.0, max_frames=3, step=0.2)
        assert ours and ours == theirs
    # without an accurate seek the first frame is the key frame at or before the point, then frames follow it
    for point in (1.1, 4.3):
        key = frames_at(str(video), point, accurate=False, frames=3, step=0.2, window=1.0, protocols="file")
        first = key[0].t
        assert first <= point and [round(f.t - first, 3) for f in key] == [0.0, 0.2, 0.4]
        assert key == media.video_frame_hashes(str(video), start=first, duration=1.0, max_frames=3, step=0.2)


def test_sample_order_is_coarse_to_fine() -> None:
    assert sample_order(10) == [5, 0, 9, 2, 7, 1, 3, 4, 6, 8]
    assert sorted(sample_order(7)) == list(range(7)) and sample_order(1) == [0] and sample_order(0) == []


def test_a_match_needs_spread_parts_not_many_frames() -> None:
    rng = random.Random(7)
    reg_frames = tuple(FrameHash(round(0.5 * i, 3), rng.getrandbits(64)) for i in range(121))  # 60 s
    registered = MediaFingerprint(ContentKind.VIDEO, 640, 360, 60.0, "h264", reg_frames)
    settings = PerceptualSettings()  # 10 samples: parts of a 50 s candidate are 2.5 s apart

    def observed(times: list[float], offset: float = 5.0) -> list[FrameHash]:  # a copy trimmed by `offset`
        by_time = {f.t: f for f in reg_frames}
        return [FrameHash(round(t - offset, 3), by_time[t].phash ^ 0b101) for t in times]  # 2 bits off

    spread_out = observed([10.0, 10.5, 25.0, 25.5, 40.0, 40.5])
    decision = decide_video(registered, spread_out, 50.0, settings)
    assert decision.matched and decision.spread == 3 and decision.offset == 5.0
    assert all(p.distance == 2 for p in decision.pairs) and len(decision.pairs) == 6
    # as many agreeing frames, but from one part of the candidate: one scene, not a match
    one_scene = observed([20.0, 20.5, 21.0, 21.5, 22.0])
    decision = decide_video(registered, one_scene, 50.0, settings)
    assert not decision.matched and decision.spread == 1
    # three parts agree, but most of the overlapping parts sampled do not: not a match either
    unrelated = [FrameHash(float(t), rng.getrandbits(64)) for t in range(0, 50, 3)]
    decision = decide_video(registered, spread_out + unrelated, 50.0, settings)
    assert not decision.matched and decision.spread == 3 and decision.expected > 6
    assert not near_any(registered, unrelated, settings.frame_threshold)
    assert near_any(registered, one_scene, settings.frame_threshold)


@dataclass
class Case:
    name: str
    torrent: bytes
    data_dir: Path
    meta: Metainfo
    report: MatchReport | None = None
    downloaded: int = -1
    redundant: int = 0  # bytes libtorrent received twice (a loaded machine: a request timed out, two peers)
    seeders: set[tuple[str, int]] = field(default_factory=set)
    peers: tuple[tuple[str, int], ...] = ()

    @property
    def dht_id(self) -> bytes:
        return self.meta.infohash_v1 or (self.meta.infohash_v2 or b"")[:20]


def _single(root: Path, name: str, source: Path, piece_length: int = SMALL_PIECE) -> tuple[bytes, Path]:
    """A single-file v1 torrent of ``source`` named ``name``, its data in its own folder under ``root``."""
    folder = root / name.replace(".", "_")
    folder.mkdir()
    shutil.copy(source, folder / name)
    return make_v1_torrent(name, [(name, folder / name)], piece_length=piece_length, single_file=True), folder


def _build(tmp_path: Path) -> tuple[RegistryIndex, dict[str, str], dict[str, Case], dict[str, Path]]:
    src, torrents = tmp_path / "media", tmp_path / "torrents"
    src.mkdir()
    torrents.mkdir()
    video = make_video(src / "kim_jiyoung_holiday.mp4", 4, seconds=24.0, size="640x360", rate=25)
    image = make_image(src / "kim_jiyoung.png", 20_004, size="640x480")
    files = {
        "small": transcode(video, src / "holiday_small.mp4", width=480, crf=28),
        "clip": remux(video, src / "clip.mkv", start=8.0, duration=10.0),
        "photo": resize_recompress(image, src / "photo.jpg", scale=0.5, quality=60),
        "other": make_video(src / "Kim.Jiyoung.2024.mp4", 11, seconds=12.0),
        "other_image": make_image(src / "other.png", 20_011, size="640x480"),
        "noise": src / "noise.bin",
    }
    files["noise"].write_bytes(os.urandom(video.stat().st_size))
    video_fp, image_fp = fingerprint_file(video), fingerprint_file(image)
    assert video_fp.media is not None and len(video_fp.media.frame_hashes) > 100
    ids = {"video": video_fp.fingerprint_id, "image": image_fp.fingerprint_id}
    index = RegistryIndex([RegisteredContent(ids["video"], "case-1", video_fp),
                           RegisteredContent(ids["image"], "case-1", image_fp)], {"case-1": [KEYWORD]})

    made: dict[str, tuple[bytes, Path]] = {}
    for version, key in (("v1", "a"), ("hybrid", "b")):
        folder = torrents / key
        folder.mkdir()
        shutil.copy(video, folder / video.name)
        made[key] = (create_torrent(folder / video.name, version=version, piece_length=SMALL_PIECE), folder)
    pack = torrents / "c" / "pack"
    pack.mkdir(parents=True)
    (pack / "readme.txt").write_text("holiday pictures\n" * 400)
    shutil.copy(video, pack / "holiday.mp4")
    made["c"] = (make_v1_torrent("pack", [("readme.txt", pack / "readme.txt"), ("holiday.mp4", pack / "holiday.mp4")],
                                 piece_length=PACK_PIECE), pack.parent)
    made["d"] = _single(torrents, "holiday_small.mp4", files["small"])
    made["e"] = _single(torrents, "clip.mkv", files["clip"])
    made["f"] = _single(torrents, "photo.jpg", files["photo"])
    made["keyword"] = _single(torrents, "Kim.Jiyoung.2024.mp4", files["other"])
    made["same-size"] = _single(torrents, video.name, files["noise"])
    made["other-image"] = _single(torrents, "other.jpg", files["other_image"])
    cases = {key: Case(key, torrent, folder, parse_torrent(torrent)) for key, (torrent, folder) in made.items()}
    assert cases["c"].meta.files[1].offset % PACK_PIECE != 0  # unaligned
    return index, ids, cases, files


async def _find_peers(node: Any, infohash: bytes, want: set[tuple[str, int]]) -> tuple[tuple[str, int], ...]:
    """get_peers until every seeder is listed (libtorrent announces asynchronously)."""
    found: set[tuple[str, int]] = set()
    for _ in range(60):
        found = set((await node.get_peers(infohash)).peers)
        if want <= found:
            break
        await trio.sleep(0.5)
    return tuple(sorted(found))


async def _match(index: RegistryIndex, case: Case, settings: PerceptualSettings) -> None:
    async def perceptual(idx: RegistryIndex, meta: Metainfo, source: Any, done: set[tuple[int, str]]) -> list[Any]:
        return await perceptual_matches(idx, meta, source, done, settings)

    options = FetchOptions(bind_ip=loopback_address(), peers=case.peers, allow_local=True, timeout=60)
    async with open_torrent_reader(case.meta, options) as reader:
        case.report = await match_torrent(index, case.meta, reader, perceptual, timeout=60)
        case.downloaded, case.redundant = reader.downloaded(), reader.redundant()


def _verified(case: Case) -> list[str]:
    """Every match of the case re-checked by the evidence verifier (given the piece bytes an exact-piece proof
    rests on, as a bundle includes them); returns the verifier's one-line descriptions."""
    key = case.meta.infohash.hex()
    torrents = TorrentIndex()
    torrents.add(key, evidence_torrent(case.torrent))
    stream = b"".join((case.data_dir.joinpath(*f.path)).read_bytes() for f in case.meta.files)
    length = case.meta.piece_length

    def piece(torrent_key: str, index: int) -> tuple[str, bytes] | None:
        return ("bin", stream[index * length : (index + 1) * length]) if torrent_key == key else None

    assert case.report is not None
    return [check_match({"infohash": m.infohash, "file_index": m.file_index, "file_path": m.file_path,
                         "method": m.method, "proof": m.proof}, torrents, piece)
            for m in case.report.matches]


@pytest.mark.interop
async def test_matcher_end_to_end_through_the_dht(tmp_path: Path) -> None:
    require_component("libtorrent", lt is not None, "pip install libtorrent")
    require_component("ffmpeg", have_ffmpeg(), "pip install imageio-ffmpeg")
    index, ids, cases, files = await trio.to_thread.run_sync(_build, tmp_path)
    settings = PerceptualSettings()
    # libtorrent announces at most five of a session's torrents on the DHT at once (the others a minute
    # later), so two pairs of seeders share the nine torrents
    with LocalSwarm(tmp_path) as swarm:
        sessions = [swarm.start_session(loopback_address()) for _ in range(6)]
        pairs = (sessions[0:2], sessions[2:4])
        for n, case in enumerate(cases.values()):
            case.seeders = {s.endpoint for s in pairs[n % 2]}
            for seeder in pairs[n % 2]:
                swarm.seed(seeder, case.torrent, case.data_dir)
        await trio.to_thread.run_sync(lambda: swarm.start_dht(min_nodes=3, timeout=60))
        with trio.fail_after(240):
            async with open_dht_node(node_config(bootstrap=tuple(s.endpoint for s in sessions[4:]))) as node:
                for case in cases.values():
                    case.peers = await _find_peers(node, case.dht_id, case.seeders)
                    assert case.seeders <= set(case.peers), f"{case.name}: seeders not on the DHT: {case.peers}"
            for case in cases.values():
                await _match(index, case, settings)

    def only(key: str) -> Any:
        report = cases[key].report
        assert report is not None and not report.errors, (key, report)
        assert len(report.matches) == 1, (key, report.matches)
        return report.matches[0]

    # (a), (b): proven by the metainfo alone; the torrent's reader fetched nothing at all
    for key, kind in (("a", "v1-piece-table"), ("b", "v2-pieces-root")):
        m = only(key)
        assert (m.method, m.content_id, m.proof["kind"]) == (METHOD_EXACT_METADATA, ids["video"], kind)
        assert m.bytes_fetched == 0 and cases[key].downloaded == 0
    # (c): one verified piece (the readme's sniff reads that same piece)
    m = only("c")
    assert (m.method, m.content_id, m.file_path) == (METHOD_EXACT_PIECE, ids["video"], "pack/holiday.mp4")
    assert m.bytes_fetched == cases["c"].downloaded == PACK_PIECE
    assert m.proof["blocks"] and set(m.proof["served_by"]) <= {f"{h}:{p}" for h, p in cases["c"].seeders}
    # (d), (e): perceptual, from frames sampled at a consistent offset; only the pieces ffmpeg touched
    for key, offset in (("d", 0.0), ("e", -8.0)):
        m = only(key)
        size, touched = cases[key].meta.files[0].length, m.proof["pieces_touched"]
        assert (m.method, m.content_id) == (METHOD_PERCEPTUAL, ids["video"])
        assert m.proof["matched_frames"] >= 3 and m.proof["spread"] >= 3
        assert all(f["distance"] <= m.proof["threshold"] for f in m.proof["frames"])
        assert abs(m.proof["time_offset"] - offset) <= m.proof["offset_tolerance"], m.proof
        distinct = m.bytes_fetched - cases[key].redundant
        assert (touched - 1) * SMALL_PIECE < distinct <= touched * SMALL_PIECE, (key, m.bytes_fetched, cases[key])
        assert m.bytes_fetched == cases[key].downloaded and m.bytes_fetched < size // 2, (key, m.bytes_fetched, size)
    # (f): the image is fetched whole (it is small) and matched by its hash
    m = only("f")
    assert (m.method, m.content_id, m.proof["kind"]) == (METHOD_PERCEPTUAL, ids["image"], "image")
    assert m.bytes_fetched == cases["f"].downloaded == files["photo"].stat().st_size
    # every proof holds for the evidence verifier
    for key in "abcdef":
        assert len(_verified(cases[key])) == 1

    # decoys: no match; the keyword makes candidates, the same-size noise is rejected at exact-piece
    for key in ("keyword", "same-size", "other-image"):
        report = cases[key].report
        assert report is not None and report.matches == [] and not report.errors, (key, report)
    keyword, same_size = cases["keyword"].report, cases["same-size"].report
    assert keyword is not None and same_size is not None
    assert keyword.candidates and {(c.case, c.keyword) for c in keyword.candidates} == {("case-1", KEYWORD)}
    assert 0 < cases["keyword"].downloaded <= cases["keyword"].meta.files[0].length  # sampled, ruled out
    assert [r.content_id for r in same_size.rejections] == [ids["video"]]
    assert "differ" in same_size.rejections[0].reason
    assert cases["same-size"].downloaded == SMALL_PIECE  # the one piece that disproved it (and its sniff)
    # the registered files' own names are candidates too, never matches by themselves
    assert same_size.candidates and {c.case for c in same_size.candidates} == {"case-1"}

