"""Media: sniffing, perceptual hashes of synthetic images and videos (ffmpeg lavfi), the offset-voting video
matcher, and hostile input (truncated, mislabelled, playlists, missing ffmpeg)."""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pwatch.errors import MediaError
from p2pwatch.match import media
from p2pwatch.match.fingerprint import fingerprint_file
from p2pwatch.match.media import ContentKind, FrameHash, MediaFingerprint, sniff_kind
from p2pwatch.testswarm.media import have_ffmpeg, make_image, make_video, remux, resize_recompress, transcode
from tests.conftest import require_component


@pytest.mark.parametrize("head, kind", [
    (b"\xff\xd8\xff\xe0\x00\x10JFIF", ContentKind.IMAGE),
    (b"\x89PNG\r\n\x1a\n\x00\x00", ContentKind.IMAGE),
    (b"GIF89a\x01\x00", ContentKind.IMAGE),
    (b"RIFF\x00\x00\x00\x00WEBPVP8 ", ContentKind.IMAGE),
    (b"\x00\x00\x00\x18ftypheic\x00\x00", ContentKind.IMAGE),
    (b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00", ContentKind.VIDEO),
    (b"\x00\x00\x00\x08free\x00\x00\x00\x10mdat", ContentKind.VIDEO),
    (b"\x1aE\xdf\xa3\x9fB\x86\x81\x01", ContentKind.VIDEO),
    (b"RIFF\x00\x00\x00\x00AVI LIST", ContentKind.VIDEO),
    (b"FLV\x01\x05", ContentKind.VIDEO),
    (b"\x00\x00\x01\xba\x44", ContentKind.VIDEO),
    ((b"\x47" + bytes(187)) * 3, ContentKind.VIDEO),
    (b"OggS\x00\x02" + bytes(22) + b"\x80theora", ContentKind.VIDEO),
    (b"OggS\x00\x02" + bytes(22) + b"\x01vorbis", ContentKind.OTHER),
    (b"hello, this is text named video.mp4", ContentKind.OTHER),
    (b"", ContentKind.OTHER),
    (b"RIFF", ContentKind.OTHER),
    (b"\x00\x00\x00\x00free", ContentKind.OTHER),
])
def test_sniff_kind_by_magic_bytes(head: bytes, kind: ContentKind) -> None:
    assert sniff_kind(head) is kind


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_sniff_kind_takes_any_bytes(head: bytes) -> None:
    assert isinstance(sniff_kind(head), ContentKind)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=2000))
def test_image_decoder_raises_only_media_error(data: bytes) -> None:
    with contextlib.suppress(MediaError):
        assert media.hash_image_bytes(b"\x89PNG\r\n\x1a\n" + data).image_phash is not None


def test_hamming() -> None:
    assert media.hamming(0b1011, 0b0001) == 2
    assert media.hamming(b"\xff\x00", b"\x0f\x00") == 4
    with pytest.raises(ValueError):
        media.hamming(b"\x00", b"\x00\x00")
    with pytest.raises(TypeError):
        media.hamming(1, b"\x01")


def _video(t0: float, hashes: list[int], step: float = 1.0) -> tuple[FrameHash, ...]:
    return tuple(FrameHash(t0 + i * step, h) for i, h in enumerate(hashes))


def test_match_video_votes_for_one_offset() -> None:
    hashes = [(0x9E3779B97F4A7C15 * (i + 1)) & (2**64 - 1) for i in range(30)]
    registered = MediaFingerprint(ContentKind.VIDEO, 320, 240, 30.0, "h264", _video(0.0, hashes))
    clip = [h ^ 0b101 for h in hashes[10:18]]  # 2 bits off, starting at registered t=10
    result = media.match_video(registered, _video(0.0, clip))
    assert result.matched and result.offset == 10.0 and result.matched_frames == 8
    assert result.distances == (2,) * 8 and result.pairs[0].registered_t == 10.0
    # the same frames played backwards agree on no offset
    assert not media.match_video(registered, _video(0.0, clip[::-1])).matched
    unrelated = [(h * 0x2545F4914F6CDD1D + 7) & (2**64 - 1) for h in hashes[:8]]
    none = media.match_video(registered, _video(0.0, unrelated))
    assert not none.matched and none.matched_frames == 0
    assert not media.match_video(registered, ()).matched


# --- real media ---

@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    require_component("ffmpeg", have_ffmpeg(), "pip install imageio-ffmpeg")
    d = tmp_path_factory.mktemp("media")
    source = make_video(d / "source.mp4", 11, seconds=12.0)
    files = {
        "source": source,
        "scaled": transcode(source, d / "scaled.mp4", width=160, crf=30),
        "reencoded": transcode(source, d / "crf38.mp4", crf=38),
        "trimmed": transcode(source, d / "trim.mp4", start=3.3, duration=6.0, crf=28),
        "remuxed": remux(source, d / "remux.mkv"),
        "trimmed-remuxed": remux(source, d / "trimremux.mkv", start=4.0, duration=6.0),
        "other": make_video(d / "other.mp4", 12, seconds=12.0),
        "image": make_image(d / "image.png", 21),
        "other-image": make_image(d / "other.png", 22),
    }
    files["image-small"] = resize_recompress(files["image"], d / "small.jpg", scale=0.5, quality=60)
    return files


@pytest.fixture(scope="module")
def registered(corpus: dict[str, Path]) -> MediaFingerprint:
    return media.hash_video_source(str(corpus["source"]))


def test_video_fingerprint_describes_the_video(registered: MediaFingerprint) -> None:
    assert (registered.kind, registered.width, registered.height, registered.codec) == \
        (ContentKind.VIDEO, 320, 240, "h264")
    assert registered.duration is not None and abs(registered.duration - 12.0) < 0.2
    times = [f.t for f in registered.frame_hashes]
    assert times == sorted(times) and 10 <= len(times) <= 130 and times[0] < 0.5 and times[-1] > 10.5
    assert MediaFingerprint.from_json(registered.to_json()) == registered


@pytest.mark.parametrize("variant", ["scaled", "reencoded", "trimmed", "remuxed", "trimmed-remuxed"])
def test_altered_copies_match(corpus: dict[str, Path], registered: MediaFingerprint, variant: str) -> None:
    result = media.match_video(registered, media.video_frame_hashes(str(corpus[variant])))
    assert result.matched, result
    assert result.matched_frames >= 4 and max(result.distances) <= media.DEFAULT_FRAME_THRESHOLD
    expected_offset = {"trimmed": 3.3, "trimmed-remuxed": 4.0}.get(variant, 0.0)
    assert abs(result.offset - expected_offset) <= 1.0 + media.DEFAULT_OFFSET_TOLERANCE


def test_a_different_video_does_not_match(corpus: dict[str, Path], registered: MediaFingerprint) -> None:
    result = media.match_video(registered, media.video_frame_hashes(str(corpus["other"])))
    assert not result.matched


def test_pipe_input_and_ranges(corpus: dict[str, Path], registered: MediaFingerprint) -> None:
    data = corpus["remuxed"].read_bytes()
    piped = media.video_frame_hashes("pipe:", data=data)
    assert media.match_video(registered, piped).matched
    piped_fp = media.hash_video_source("pipe:", data=data)
    assert piped_fp.codec == "h264" and piped_fp.width == 320
    window = media.video_frame_hashes(str(corpus["source"]), start=5.0, duration=3.0)
    assert window and all(4.9 <= f.t <= 8.1 for f in window)
    keys = media.video_frame_hashes(str(corpus["source"]), keyframes_only=True, max_frames=3)
    assert 1 <= len(keys) <= 3
    partial = corpus["remuxed"].parent / "half.mkv"
    partial.write_bytes(data[: len(data) // 2])  # a partially available file: decode what is there
    half = media.video_frame_hashes(str(partial))
    assert half and media.match_video(registered, half).matched


def test_image_resized_and_recompressed_matches(corpus: dict[str, Path]) -> None:
    original = media.hash_image_file(corpus["image"])
    small = media.hash_image_bytes(corpus["image-small"].read_bytes())
    other = media.hash_image_file(corpus["other-image"])
    assert original.kind is ContentKind.IMAGE and (original.width, original.height) == (320, 240)
    assert small.width == 160 and original.image_phash is not None
    assert media.match_image(original, small).matched
    assert not media.match_image(original, other).matched
    plain = [dataclasses.replace(fp, image_pdq=None) for fp in (original, small, other)]
    assert media.match_image(plain[0], plain[1]).method == "phash"
    assert media.match_image(plain[0], plain[1]).matched and not media.match_image(plain[0], plain[2]).matched
    assert MediaFingerprint.from_json(original.to_json()) == original


def test_pdq(corpus: dict[str, Path]) -> None:
    require_component("pdqhash (p2pwatch[pdq])", media.pdq_available(), "pip install -e '.[pdq]'")
    original = media.hash_image_file(corpus["image"])
    small = media.hash_image_file(corpus["image-small"])
    assert original.image_pdq is not None and len(original.image_pdq) == 32
    result = media.match_image(original, small)
    assert result.method == "pdq" and result.matched


def test_hostile_inputs_get_typed_errors(corpus: dict[str, Path], tmp_path: Path) -> None:
    text = tmp_path / "fake.mp4"
    text.write_text("not a video at all\n" * 50)
    truncated = tmp_path / "cut.mp4"
    truncated.write_bytes(corpus["source"].read_bytes()[:5000])
    playlist = tmp_path / "list.m3u8"  # ffmpeg must not follow it to other files
    playlist.write_text(f"#EXTM3U\n#EXTINF:10,\nfile://{corpus['source']}\n#EXT-X-ENDLIST\n")
    for path in (text, truncated, playlist, tmp_path, tmp_path / "missing.mp4"):
        with pytest.raises(MediaError):
            media.hash_video_source(str(path))
    with pytest.raises(MediaError):
        media.video_frame_hashes("pipe:", data=b"\x00" * 10_000)
    with pytest.raises(MediaError):
        media.hash_image_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(MediaError):
        media.hash_image_file(tmp_path)
    assert fingerprint_file(text).kind is ContentKind.OTHER


def test_missing_ffmpeg_is_reported_not_raised(corpus: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    monkeypatch.setenv("P2PWATCH_FFMPEG", str(tmp_path / "no-ffmpeg"))
    assert not media.ffmpeg_available()
    with pytest.raises(MediaError):
        media.hash_video_source(str(corpus["source"]))
    fp = fingerprint_file(corpus["source"])
    assert fp.kind is ContentKind.VIDEO and fp.media is None and "ffmpeg" in (fp.media_error or "")
