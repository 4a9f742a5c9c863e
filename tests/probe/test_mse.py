"""MSE/PE: RC4 known answers, and pair tests of our initiator against the test-side responder."""

from __future__ import annotations

import hashlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pwatch.errors import LocalProtocolError, RemoteProtocolError
from p2pwatch.probe import mse
from p2pwatch.probe.mse import CRYPTO_PLAINTEXT, CRYPTO_RC4, RC4, MSEError, MSEInitiator
from tests.hostile_peers import MSEResponder, ResponderError

SKEY = hashlib.sha1(b"some torrent").digest()


# ------------------------------------------------------------------------------------------- RC4


@pytest.mark.parametrize(("key", "plaintext", "ciphertext"), [
    (b"Key", b"Plaintext", "bbf316e8d940af0ad3"),
    (b"Wiki", b"pedia", "1021bf0420"),
    (b"Secret", b"Attack at dawn", "45a01f645fc35b383552544b9bf5"),
    # RFC 6229, key 0x0102030405, keystream at offset 0
    (bytes([1, 2, 3, 4, 5]), bytes(32),
     "b2396305f03dc027ccc3524a0a1118a86982944f18fc82d589c403a47a0d0919"),
])
def test_rc4_known_answers(key: bytes, plaintext: bytes, ciphertext: str) -> None:
    assert RC4(key, discard=0, backend="python").process(plaintext).hex() == ciphertext
    assert RC4(key, discard=0).process(plaintext).hex() == ciphertext  # whichever backend is in use


def test_rc4_discard_drops_the_first_1024_bytes() -> None:
    key = bytes(range(20))
    full = RC4(key, discard=0, backend="python").process(bytes(1024 + 64))
    assert RC4(key, backend="python").process(bytes(64)) == full[1024:]
    assert RC4(key).process(bytes(64)) == full[1024:]


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=1, max_size=32), st.binary(max_size=700), st.lists(st.integers(0, 700), max_size=6))
def test_rc4_chunking_does_not_matter(key: bytes, data: bytes, cuts: list[int]) -> None:
    whole = RC4(key, discard=0, backend="python").process(data)
    cipher = RC4(key, discard=0, backend="python")
    pieces, prev = [], 0
    for cut in [*sorted(c % (len(data) + 1) for c in cuts), len(data)]:
        pieces.append(cipher.process(data[prev:cut]))
        prev = max(prev, cut)
    assert b"".join(pieces) == whole
    assert RC4(key, discard=0, backend="python").process(whole) == data


def test_rc4_backends_agree() -> None:
    key = hashlib.sha1(b"k").digest()
    fast = RC4(key, backend="openssl")  # cryptography is a runtime dependency: this backend is always there
    data = bytes(range(256)) * 40
    assert fast.process(data) == RC4(key, backend="python").process(data)


def test_rc4_rejects_bad_keys() -> None:
    with pytest.raises(LocalProtocolError):
        RC4(b"")
    with pytest.raises(LocalProtocolError):
        RC4(b"k", backend="rot13")


# ------------------------------------------------------------------------------------ pair tests


def run_pair(initiator: MSEInitiator, responder: MSEResponder, *, bytewise: bool = False) -> None:
    to_b = initiator.start()
    to_a = b""
    for _ in range(50):
        if to_b:
            chunks = [to_b[i : i + 1] for i in range(len(to_b))] if bytewise else [to_b]
            to_b = b""
            for chunk in chunks:
                to_a += responder.feed(chunk)
        if to_a:
            chunks = [to_a[i : i + 1] for i in range(len(to_a))] if bytewise else [to_a]
            to_a = b""
            for chunk in chunks:
                to_b += initiator.feed(chunk)
        if initiator.done and responder.done:
            return
    raise AssertionError("handshake did not finish")


@pytest.mark.parametrize(("provide", "prefer", "method"), [
    (CRYPTO_RC4 | CRYPTO_PLAINTEXT, CRYPTO_RC4, "rc4"),
    (CRYPTO_RC4 | CRYPTO_PLAINTEXT, CRYPTO_PLAINTEXT, "plaintext"),
    (CRYPTO_RC4, CRYPTO_PLAINTEXT, "rc4"),
])
@pytest.mark.parametrize("bytewise", [False, True])
def test_pair_negotiates_and_carries_the_stream(provide: int, prefer: int, method: str,
                                                bytewise: bool) -> None:
    a = MSEInitiator(SKEY, crypto_provide=provide)
    b = MSEResponder([hashlib.sha1(b"other").digest(), SKEY], prefer=prefer)
    run_pair(a, b, bytewise=bytewise)
    assert a.method == b.method == method
    assert b.skey == SKEY
    assert b.provided == provide
    # the stream after the handshake, both directions
    handshake = b"\x13BitTorrent protocol" + bytes(48)
    on_wire = a.encrypt(handshake)
    assert (on_wire == handshake) is (method == "plaintext")
    assert b.decrypt(on_wire) == handshake
    assert a.decrypt(b.encrypt(b"reply" * 100)) == b"reply" * 100


def test_payload_arriving_with_the_handshake_end_is_kept() -> None:
    a = MSEInitiator(SKEY, pad_length=0)
    b = MSEResponder([SKEY], pad_length=0)
    step2 = b.feed(a.start())
    step3 = a.feed(step2)
    step4 = b.feed(step3)
    assert b.done
    assert a.feed(step4 + b.encrypt(b"early payload")) == b""
    assert a.done and a.take_payload() == b"early payload"
    assert a.take_payload() == b""


def test_wrong_stream_key_is_refused_by_the_responder() -> None:
    with pytest.raises(ResponderError):
        run_pair(MSEInitiator(SKEY), MSEResponder([hashlib.sha1(b"other").digest()]))


def test_no_sync_within_pad_limit() -> None:
    a = MSEInitiator(SKEY)
    a.start()
    a.feed(mse.dh_public_key(12345))
    with pytest.raises(MSEError):
        a.feed(bytes(520))


def test_weak_public_key_refused() -> None:
    a = MSEInitiator(SKEY)
    a.start()
    with pytest.raises(MSEError):
        a.feed((1).to_bytes(96, "big"))


def _responder_reply(initiator: MSEInitiator, select: int, pad_d: int) -> bytes:
    """Hand-built step 4 with a chosen crypto_select and PadD length (a misbehaving responder)."""
    x = 0x1234567890ABCDEF
    ya = initiator.start()[:96]
    secret = mse.dh_shared_secret(x, ya)
    initiator.feed(mse.dh_public_key(x))
    _, key_b = mse.stream_keys(secret, SKEY)
    return RC4(key_b).process(mse.VC + struct.pack(">IH", select, pad_d))


@pytest.mark.parametrize(("provide", "select", "pad_d"), [
    (CRYPTO_RC4, CRYPTO_PLAINTEXT, 0),  # selects what we did not offer
    (CRYPTO_RC4 | CRYPTO_PLAINTEXT, 0x03, 0),  # selects two methods
    (CRYPTO_RC4, CRYPTO_RC4, 513),  # PadD too long
])
def test_misbehaving_responder(provide: int, select: int, pad_d: int) -> None:
    a = MSEInitiator(SKEY, crypto_provide=provide)
    with pytest.raises(MSEError):
        a.feed(_responder_reply(a, select, pad_d))


def test_api_misuse() -> None:
    with pytest.raises(LocalProtocolError):
        MSEInitiator(b"short")
    with pytest.raises(LocalProtocolError):
        MSEInitiator(SKEY, crypto_provide=0)
    a = MSEInitiator(SKEY)
    with pytest.raises(LocalProtocolError):
        a.feed(b"x")
    a.start()
    with pytest.raises(LocalProtocolError):
        a.start()
    with pytest.raises(LocalProtocolError):
        a.encrypt(b"x")


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=1200), st.integers(min_value=1, max_value=300))
def test_initiator_raises_only_typed_errors_on_garbage(data: bytes, chunk: int) -> None:
    a = MSEInitiator(SKEY, pad_length=0)
    a.start()
    try:
        for i in range(0, len(data), chunk):
            a.feed(data[i : i + chunk])
            if a.done:
                break
    except RemoteProtocolError:
        pass
