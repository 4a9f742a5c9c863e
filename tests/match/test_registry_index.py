"""The matcher's registry index: incremental add and withdraw, and the perceptual lookups through the hash
index giving what comparing each registered item in turn gives."""

from __future__ import annotations

import dataclasses
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from p2pwatch.match import media
from p2pwatch.match.matcher import RegisteredContent, RegistryIndex
from p2pwatch.match.media_types import ContentKind, FrameHash, MediaFingerprint
from p2pwatch.match.perceptual import PerceptualSettings, Wanted, image_candidates, near_any
from p2pwatch.testswarm.synthetic_registry import synthetic_fingerprint, synthetic_image, synthetic_video


def _flip(value: int, bits: int, rng: random.Random, width: int = 64) -> int:
    for b in rng.sample(range(width), bits):
        value ^= 1 << b
    return value


def _registry(seed: int, videos: int, images: int) -> tuple[RegistryIndex, random.Random]:
    rng = random.Random(seed)
    items = [RegisteredContent(f"v{i}", f"case-{i % 3}", synthetic_fingerprint(rng, 50_000 + i,
                                                                             synthetic_video(rng, 20)))
             for i in range(videos)]
    items += [RegisteredContent(f"i{i}", "case-img", synthetic_fingerprint(rng, 9_000 + i,
                                                                         synthetic_image(rng, pdq=i % 2 == 0)))
              for i in range(images)]
    return RegistryIndex(items), rng


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32), flips=st.lists(st.integers(0, 16), min_size=1, max_size=12))
def test_video_frames_near_a_registered_video_are_found_as_by_comparing_each(seed: int, flips: list[int]) -> None:
    index, rng = _registry(seed, videos=30, images=0)
    items = index.contents
    frames = []
    for n, bits in enumerate(flips):
        source = rng.choice(items).fingerprint.media
        assert source is not None
        frames.append(FrameHash(float(n), _flip(rng.choice(source.frame_hashes).phash, bits, rng)))
    threshold = PerceptualSettings().frame_threshold
    by_each = {seq for seq, item in enumerate(items)
               if near_any(item.fingerprint.media, frames, threshold)}  # type: ignore[arg-type]
    assert index.frames.items_near([f.phash for f in frames], threshold) == by_each
    if any(bits <= threshold for bits in flips):
        assert by_each  # the test looks at hits, not only at misses


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32), phash_bits=st.integers(0, 12), pdq_bits=st.integers(0, 60))
def test_image_candidates_hold_every_image_match_image_accepts(seed: int, phash_bits: int, pdq_bits: int) -> None:
    index, rng = _registry(seed, videos=2, images=40)
    images = [(seq, item) for seq, item in enumerate(index.contents) if item.content_id.startswith("i")]
    _, target = rng.choice(images)
    reg = target.fingerprint.media
    assert reg is not None and reg.image_phash is not None
    candidate = MediaFingerprint(ContentKind.IMAGE, 800, 600, image_phash=_flip(reg.image_phash, phash_bits, rng),
                                 image_pdq=None if reg.image_pdq is None else _flip(
                                     int.from_bytes(reg.image_pdq, "big"), pdq_bits, rng, 256).to_bytes(32, "big"))
    settings_ = PerceptualSettings()
    accepted = {seq for seq, item in images
                if media.match_image(item.fingerprint.media, candidate, settings_.image_threshold).matched}  # type: ignore[arg-type]
    found = image_candidates(index, candidate, settings_)
    assert accepted <= found
    assert {seq for seq in found if media.match_image(index.item(seq).fingerprint.media,  # type: ignore[arg-type]
                                                      candidate, settings_.image_threshold).matched} == accepted
    if phash_bits <= media.DEFAULT_IMAGE_PHASH_THRESHOLD:
        assert accepted


def test_withdrawal_removes_every_trace_and_registration_after_it_works() -> None:
    index, _ = _registry(7, videos=5, images=3)
    victim = index.contents[2]
    assert victim.fingerprint.media is not None
    frame = victim.fingerprint.media.frame_hashes[4].phash
    assert index.frames.radius(frame, 0)[0].item_id == 2
    size, root = victim.fingerprint.size, victim.fingerprint.pieces_root()
    assert index.comparable_count(ContentKind.VIDEO) == 5
    assert index.remove("v2") == 1 and index.remove("v2") == 0
    assert index.frames.radius(frame, 0) == []
    assert size not in index.by_size and root not in index.by_root
    assert index.comparable_count(ContentKind.VIDEO) == 4 and len(index) == 7
    assert "v2" not in {c.content_id for c in index.contents}
    again = index.add(dataclasses.replace(victim, case="case-new"))
    assert index.frames.radius(frame, 0)[0].item_id == again and index.item(again).case == "case-new"
    assert index.by_size[size][0].case == "case-new"


def test_wanted_leaves_out_matched_content_and_other_kinds_of_a_proven_copy() -> None:
    index, _ = _registry(3, videos=2, images=2)
    seqs = {item.content_id: seq for seq, item in enumerate(index.contents)}
    everything = Wanted(index, 0, set())
    assert everything.any(ContentKind.VIDEO) and everything.any(ContentKind.IMAGE)
    assert everything(seqs["v0"], ContentKind.VIDEO) and not everything(seqs["v0"], ContentKind.IMAGE)
    proven_video = Wanted(index, 0, {(0, "v0"), (1, "i0")})  # file 0 is an exact copy of v0
    assert not proven_video(seqs["v0"], ContentKind.VIDEO) and proven_video(seqs["v1"], ContentKind.VIDEO)
    assert not proven_video.any(ContentKind.IMAGE) and proven_video.any(ContentKind.VIDEO)
    all_videos = Wanted(index, 0, {(0, "v0"), (0, "v1")})
    assert not all_videos.any(ContentKind.VIDEO) and not all_videos.any(ContentKind.IMAGE)
    assert Wanted(index, 1, {(0, "v0"), (0, "v1")}).any(ContentKind.VIDEO)


def test_an_empty_registry_has_no_media_and_no_hashes() -> None:
    index = RegistryIndex([])
    assert not index.has_media() and len(index) == 0 and len(index.frames) == 0
    assert not Wanted(index, 0, set()).any(ContentKind.VIDEO)
