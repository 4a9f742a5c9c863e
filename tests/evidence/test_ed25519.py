"""The pure-Python Ed25519 verifier (evidence/ed25519.py, RFC 8032 section 5.1.7): the RFC's own test vectors
(section 7.1), signatures made by ``cryptography`` (OpenSSL) over random messages, and mutated signatures, keys
and messages, which must all fail."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from evidence import ed25519
from evidence.signature import check_signature, verify_with_cryptography

# RFC 8032 section 7.1: (name, SECRET KEY, PUBLIC KEY, MESSAGE, SIGNATURE), all hex.
TEST_1024_MESSAGE = (
    "08b8b2b733424243760fe426a4b54908632110a66c2f6591eabd3345e3e4eb98fa6e264bf09efe12ee50f8f54e9f77b1"
    "e355f6c50544e23fb1433ddf73be84d879de7c0046dc4996d9e773f4bc9efe5738829adb26c81b37c93a1b270b20329d"
    "658675fc6ea534e0810a4432826bf58c941efb65d57a338bbd2e26640f89ffbc1a858efcb8550ee3a5e1998bd177e93a"
    "7363c344fe6b199ee5d02e82d522c4feba15452f80288a821a579116ec6dad2b3b310da903401aa62100ab5d1a36553e"
    "06203b33890cc9b832f79ef80560ccb9a39ce767967ed628c6ad573cb116dbefefd75499da96bd68a8a97b928a8bbc10"
    "3b6621fcde2beca1231d206be6cd9ec7aff6f6c94fcd7204ed3455c68c83f4a41da4af2b74ef5c53f1d8ac70bdcb7ed1"
    "85ce81bd84359d44254d95629e9855a94a7c1958d1f8ada5d0532ed8a5aa3fb2d17ba70eb6248e594e1a2297acbbb39d"
    "502f1a8c6eb6f1ce22b3de1a1f40cc24554119a831a9aad6079cad88425de6bde1a9187ebb6092cf67bf2b13fd65f270"
    "88d78b7e883c8759d2c4f5c65adb7553878ad575f9fad878e80a0c9ba63bcbcc2732e69485bbc9c90bfbd62481d9089b"
    "eccf80cfe2df16a2cf65bd92dd597b0707e0917af48bbb75fed413d238f5555a7a569d80c3414a8d0859dc65a46128ba"
    "b27af87a71314f318c782b23ebfe808b82b0ce26401d2e22f04d83d1255dc51addd3b75a2b1ae0784504df543af8969b"
    "e3ea7082ff7fc9888c144da2af58429ec96031dbcad3dad9af0dcbaaaf268cb8fcffead94f3c7ca495e056a9b47acdb7"
    "51fb73e666c6c655ade8297297d07ad1ba5e43f1bca32301651339e22904cc8c42f58c30c04aafdb038dda0847dd988d"
    "cda6f3bfd15c4b4c4525004aa06eeff8ca61783aacec57fb3d1f92b0fe2fd1a85f6724517b65e614ad6808d6f6ee34df"
    "f7310fdc82aebfd904b01e1dc54b2927094b2db68d6f903b68401adebf5a7e08d78ff4ef5d63653a65040cf9bfd4aca7"
    "984a74d37145986780fc0b16ac451649de6188a7dbdf191f64b5fc5e2ab47b57f7f7276cd419c17a3ca8e1b939ae49e4"
    "88acba6b965610b5480109c8b17b80e1b7b750dfc7598d5d5011fd2dcc5600a32ef5b52a1ecc820e308aa342721aac09"
    "43bf6686b64b2579376504ccc493d97e6aed3fb0f9cd71a43dd497f01f17c0e2cb3797aa2a2f256656168e6c496afc5f"
    "b93246f6b1116398a346f1a641f3b041e989f7914f90cc2c7fff357876e506b50d334ba77c225bc307ba537152f3f161"
    "0e4eafe595f6d9d90d11faa933a15ef1369546868a7f3a45a96768d40fd9d03412c091c6315cf4fde7cb68606937380d"
    "b2eaaa707b4c4185c32eddcdd306705e4dc1ffc872eeee475a64dfac86aba41c0618983f8741c5ef68d3a101e8a3b8ca"
    "c60c905c15fc910840b94c00a0b9d0"
)
RFC8032_VECTORS = [
    ("TEST 1",
     "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
     "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
     "",
     "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46b"
     "d25bf5f0595bbe24655141438e7a100b"),
    ("TEST 2",
     "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
     "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
     "72",
     "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c"
     "387b2eaeb4302aeeb00d291612bb0c00"),
    ("TEST 3",
     "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
     "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
     "af82",
     "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc659"
     "4a7c15e9716ed28dc027beceea1ec40a"),
    ("TEST 1024",
     "f5e5767cf153319517630f226876b86c8160cc583bc013744c6bf255f5cc0ee5",
     "278117fc144c72340f67d0f2316e8386ceffbf2b2428c9c51fef7c597f1d426e",
     TEST_1024_MESSAGE,
     "0aab4c900501b3e24d7cdf4663326a3a87df5e4843b2cbdb67cbf6e460fec350aa5371b1508f9f4528ecea23c436d94b"
     "5e8fcd4f681e30a6ac00a9704a188a03"),
    ("TEST SHA(abc)",
     "833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42",
     "ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf",
     "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd"
     "454d4423643ce80e2a9ac94fa54ca49f",
     "dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b58909351fc9ac90b3ecfdfbc7c66431e030"
     "3dca179c138ac17ad9bef1177331a704"),
]


def _raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@pytest.mark.parametrize(("name", "secret", "public", "message", "sig"), RFC8032_VECTORS,
                         ids=[v[0] for v in RFC8032_VECTORS])
def test_rfc8032_section_7_1_vectors(name: str, secret: str, public: str, message: str, sig: str) -> None:
    public_key, msg, signature = bytes.fromhex(public), bytes.fromhex(message), bytes.fromhex(sig)
    assert ed25519.verify(public_key, signature, msg)
    # The vectors are typed in by hand: cryptography re-derives the key and (deterministic) signature.
    private = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(secret))
    assert _raw(private) == public_key and private.sign(msg) == signature
    assert ed25519.encode_point(ed25519.decode_point(public_key) or ed25519.IDENTITY) == public_key
    assert not ed25519.verify(public_key, signature, msg + b"\x00")
    assert not ed25519.verify(public_key, signature[:63] + bytes([signature[63] ^ 0x01]), msg)


def test_vector_sizes_and_the_sha_abc_message() -> None:
    assert len(bytes.fromhex(TEST_1024_MESSAGE)) == 1023
    assert bytes.fromhex(RFC8032_VECTORS[4][3]) == hashlib.sha512(b"abc").digest()


def test_base_point_and_order() -> None:
    # B encodes as y = 4/5 with an even x (RFC 8032 section 5.1); [L]B is the neutral element.
    assert ed25519.encode_point(ed25519.BASE) == bytes.fromhex(
        "5866666666666666666666666666666666666666666666666666666666666666")
    assert ed25519.encode_point(ed25519.scalar_mult(ed25519.L, ed25519.BASE)) == ed25519.encode_point(
        ed25519.IDENTITY)
    assert ed25519.encode_point(ed25519.scalar_mult(ed25519.L - 1, ed25519.BASE)) != ed25519.encode_point(
        ed25519.IDENTITY)


@settings(max_examples=150, deadline=None)
@given(seed=st.binary(min_size=32, max_size=32), message=st.binary(max_size=2000))
def test_signatures_made_by_cryptography_verify(seed: bytes, message: bytes) -> None:
    key = Ed25519PrivateKey.from_private_bytes(seed)
    assert ed25519.verify(_raw(key), key.sign(message), message)


@settings(max_examples=150, deadline=None)
@given(seed=st.binary(min_size=32, max_size=32), message=st.binary(max_size=500), where=st.integers(0, 10**6),
       bit=st.integers(0, 7), part=st.sampled_from(["signature", "key", "message"]))
def test_mutated_signatures_keys_and_messages_fail(seed: bytes, message: bytes, where: int, bit: int,
                                                   part: str) -> None:
    key = Ed25519PrivateKey.from_private_bytes(seed)
    public_key, signature = _raw(key), key.sign(message)
    if part == "message":
        mutated = bytearray(message or b"\x00")
        if message:
            mutated[where % len(mutated)] ^= 1 << bit
        message = bytes(mutated)  # empty: one byte appended instead
    else:
        target = bytearray(signature if part == "signature" else public_key)
        target[where % len(target)] ^= 1 << bit
        if part == "signature":
            signature = bytes(target)
        else:
            public_key = bytes(target)
    assert not ed25519.verify(public_key, signature, message)
    # OpenSSL agrees (except where it may be more lenient about a public key that is not canonical).
    if part != "key" or ed25519.decode_point(public_key) is not None:
        assert not verify_with_cryptography(public_key, signature, message)


@settings(max_examples=50, deadline=None)
@given(seed=st.binary(min_size=32, max_size=32), other=st.binary(min_size=32, max_size=32),
       message=st.binary(max_size=100))
def test_another_key_or_truncated_input_fails(seed: bytes, other: bytes, message: bytes) -> None:
    key = Ed25519PrivateKey.from_private_bytes(seed)
    signature = key.sign(message)
    if seed != other:
        assert not ed25519.verify(_raw(Ed25519PrivateKey.from_private_bytes(other)), signature, message)
    assert not ed25519.verify(_raw(key)[:31], signature, message)
    assert not ed25519.verify(_raw(key), signature[:63], message)
    assert not ed25519.verify(_raw(key), signature + b"\x00", message)


def test_non_canonical_s_is_rejected() -> None:
    """S and S + L satisfy the same group equation; RFC 8032 section 5.1.7 rejects S >= L (malleability)."""
    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    message = b"manifest"
    signature = key.sign(message)
    s = int.from_bytes(signature[32:], "little")
    assert ed25519.verify(_raw(key), signature, message)
    for bad_s in (s + ed25519.L, ed25519.L, 2**256 - 1):
        if bad_s < 2**256:
            forged = signature[:32] + bad_s.to_bytes(32, "little")
            assert not ed25519.verify(_raw(key), forged, message)
            assert not verify_with_cryptography(_raw(key), forged, message)


def _y_without_x() -> int:
    """The smallest y for which (y^2 - 1) / (d y^2 + 1) is not a square mod p: no curve point has it."""
    p = ed25519.P
    for y in range(2, 100):
        ratio = (y * y - 1) * pow(ed25519.D * y * y + 1, p - 2, p) % p
        if pow(ratio, (p - 1) // 2, p) == p - 1:
            return y
    raise AssertionError("no such y below 100")


def test_invalid_point_encodings_are_rejected() -> None:
    p = ed25519.P
    off_curve = _y_without_x().to_bytes(32, "little")
    y_is_p = p.to_bytes(32, "little")  # y >= p: the non-canonical encoding of y = 0 (a valid point)
    y_above_p = (p + 1).to_bytes(32, "little")  # non-canonical y = 1
    zero_x_negative = (1 | 1 << 255).to_bytes(32, "little")  # y = 1 gives x = 0, whose sign bit must be 0
    assert ed25519.decode_point((0).to_bytes(32, "little")) is not None  # y = 0 encoded canonically
    assert ed25519.decode_point((1).to_bytes(32, "little")) == (0, 1, 1, 0)  # the neutral element
    for bad in (off_curve, y_is_p, y_above_p, zero_x_negative, b"\x00" * 31):
        assert ed25519.decode_point(bad) is None, bad.hex()
    key = Ed25519PrivateKey.from_private_bytes(bytes(32))
    message = b"m"
    signature = key.sign(message)
    for bad in (off_curve, y_is_p, zero_x_negative):
        assert not ed25519.verify(bad, signature, message)  # as the public key
        assert not ed25519.verify(_raw(key), bad + signature[32:], message)  # as R
    assert not verify_with_cryptography(off_curve, signature, message)


def test_a_key_encoded_non_canonically_fails_where_its_canonical_form_verifies() -> None:
    """With A the neutral element, (R, S) = ([r]B, r) satisfies [S]B = R + [k]A for every message. Encoded as
    y = 1 the key verifies (RFC 8032 does not forbid it); encoded as y = p + 1 (same point, y >= p) it must not."""
    r = 123456789
    signature = ed25519.encode_point(ed25519.scalar_mult(r, ed25519.BASE)) + r.to_bytes(32, "little")
    canonical, non_canonical = (1).to_bytes(32, "little"), (ed25519.P + 1).to_bytes(32, "little")
    assert ed25519.verify(canonical, signature, b"any message")
    assert not ed25519.verify(non_canonical, signature, b"any message")


def test_check_signature_needs_every_verifier_to_agree() -> None:
    key = Ed25519PrivateKey.from_private_bytes(bytes([7]) * 32)
    message = b'{"format": "p2pwatch-evidence-bundle"}'
    signature = key.sign(message)
    both = check_signature(_raw(key), signature, message)
    assert both.valid and "pure-Python" in both.summary and "cryptography" in both.summary
    alone = check_signature(_raw(key), signature, message, use_cryptography=False)
    assert alone.valid and "cryptography" not in alone.summary
    bad = check_signature(_raw(key), signature, message + b" ")
    assert not bad.valid and "does not verify" in bad.summary


def test_a_disagreement_between_the_verifiers_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    from evidence import signature

    key = Ed25519PrivateKey.from_private_bytes(bytes([9]) * 32)
    signature_bytes = key.sign(b"m")
    monkeypatch.setattr(signature, "verify_with_cryptography", lambda *args: False)
    verdict = signature.check_signature(_raw(key), signature_bytes, b"m")
    assert not verdict.valid and "the verifiers disagree: pure Python says valid" in verdict.summary
    monkeypatch.setattr(signature, "verify_with_cryptography", lambda *args: True)
    verdict = signature.check_signature(_raw(key), signature_bytes, b"other")
    assert not verdict.valid and "pure Python says invalid" in verdict.summary
