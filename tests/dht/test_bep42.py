"""BEP 42 node ids: CRC32C vectors, the BEP's own id vectors, exemptions, IPv6, hypothesis cross-checks."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pwatch.dht import bep42
from p2pwatch.errors import LocalProtocolError

# RFC 3720 (iSCSI) appendix B.4 and the usual "123456789" check value
CRC32C_VECTORS = [
    (b"", 0x00000000),
    (b"123456789", 0xE3069283),
    (bytes(32), 0x8A9136AA),
    (b"\xff" * 32, 0x62A8AB43),
    (bytes(range(32)), 0x46DD794E),
    (bytes(range(31, -1, -1)), 0x113FDB5C),
]

# BEP 42's table: IP, rand, example node id (prefix and last byte are what matters)
BEP42_VECTORS = [
    ("124.31.75.21", 1, "5fbfbff10c5d6a4ec8a88e4c6ab4c28b95eee401"),
    ("21.75.31.124", 86, "5a3ce9c14e7a08645677bbd1cfe7d8f956d53256"),
    ("65.23.51.170", 22, "a5d43220bc8f112a3d426c84764f8c2a1150e616"),
    ("84.124.73.14", 65, "1b0321dd1bb1fe518101ceef99462b947a01ff41"),
    ("43.213.53.83", 90, "e56f6cbf5b7c4be0237986d5243b87aa6d51305a"),
]


@pytest.mark.parametrize(("data", "expected"), CRC32C_VECTORS)
def test_crc32c_vectors(data: bytes, expected: int) -> None:
    assert bep42.crc32c(data) == expected


def test_crc32c_continues() -> None:
    assert bep42.crc32c(b"6789", bep42.crc32c(b"12345")) == 0xE3069283


@pytest.mark.parametrize(("ip", "rand", "example"), BEP42_VECTORS)
def test_bep42_vectors_generate(ip: str, rand: int, example: str) -> None:
    expected = bytes.fromhex(example)
    node_id = bep42.node_id_for_ip(ip, rand)
    assert len(node_id) == 20
    assert node_id[:2] == expected[:2]
    assert node_id[2] & 0xF8 == expected[2] & 0xF8
    assert node_id[19] == rand
    assert bep42.is_valid_node_id(node_id, ip)


@pytest.mark.parametrize(("ip", "rand", "example"), BEP42_VECTORS)
def test_bep42_vectors_verify(ip: str, rand: int, example: str) -> None:
    node_id = bytes.fromhex(example)
    assert node_id[19] == rand
    assert bep42.is_valid_node_id(node_id, ip)
    for bit in range(21):  # every one of the 21 prefix bits matters
        flipped = bytearray(node_id)
        flipped[bit // 8] ^= 0x80 >> (bit % 8)
        assert not bep42.is_valid_node_id(bytes(flipped), ip)
    for bit in range(21, 152):  # the random middle does not
        flipped = bytearray(node_id)
        flipped[bit // 8] ^= 0x80 >> (bit % 8)
        assert bep42.is_valid_node_id(bytes(flipped), ip)
    other_r = bytearray(node_id)
    other_r[19] ^= 0x07  # a different r hashes to a different prefix
    assert not bep42.is_valid_node_id(bytes(other_r), ip)
    high_bits = bytearray(node_id)
    high_bits[19] ^= 0xF8  # only the low 3 bits of the last byte are r
    assert bep42.is_valid_node_id(bytes(high_bits), ip)


def test_example_ids_do_not_fit_other_addresses() -> None:
    first = bytes.fromhex(BEP42_VECTORS[0][2])
    assert not bep42.is_valid_node_id(first, BEP42_VECTORS[1][0])


EXEMPT_V4 = [
    "10.1.2.3",
    "172.16.0.1",
    "172.31.255.254",
    "192.168.1.1",
    "169.254.9.9",
    "127.0.0.1",
    "127.9.8.7",
]
EXEMPT_V6 = ["::1", "fe80::1", "fec0::1", "fc00::1", "fd12:3456::1", "::ffff:192.168.0.1", "::ffff:127.0.0.1"]


@pytest.mark.parametrize("ip", [*EXEMPT_V4, *EXEMPT_V6])
def test_local_addresses_are_exempt(ip: str) -> None:
    assert bep42.is_exempt(ip)
    assert bep42.is_valid_node_id(bytes(20), ip)
    assert bep42.is_valid_node_id(b"\xff" * 20, ip)


@pytest.mark.parametrize(
    "ip",
    [
        "172.15.255.255",
        "172.32.0.1",
        "11.0.0.1",
        "192.169.0.1",
        "100.64.0.1",
        "2001:db8::1",
        "::ffff:8.8.8.8",
    ],
)
def test_other_addresses_are_checked(ip: str) -> None:
    assert not bep42.is_exempt(ip)
    node_id = bep42.node_id_for_ip(ip, 3)
    assert bep42.is_valid_node_id(node_id, ip)
    assert not bep42.is_valid_node_id(bytes([node_id[0] ^ 0x01]) + node_id[1:], ip)


def test_ipv4_mapped_is_checked_as_ipv4() -> None:
    node_id = bep42.node_id_for_ip("124.31.75.21", 1)
    assert bep42.is_valid_node_id(node_id, "::ffff:124.31.75.21")
    assert bep42.node_id_for_ip("::ffff:124.31.75.21", 1)[:2] == bytes.fromhex("5fbf")


def test_random_ids_are_valid_and_distinct() -> None:
    a = bep42.node_id_for_ip("124.31.75.21")
    b = bep42.node_id_for_ip("124.31.75.21")
    assert a != b
    assert bep42.is_valid_node_id(a, "124.31.75.21") and bep42.is_valid_node_id(b, "124.31.75.21")


def test_bad_input() -> None:
    with pytest.raises(LocalProtocolError):
        bep42.node_id_for_ip("124.31.75.21", 256)
    with pytest.raises(LocalProtocolError):
        bep42.node_id_for_ip("124.31.75.21", -1)
    with pytest.raises(LocalProtocolError):
        bep42.node_id_for_ip("not-an-ip")
    with pytest.raises(LocalProtocolError):
        bep42.is_valid_node_id(bytes(20), "1.2.3")
    assert not bep42.is_valid_node_id(bytes.fromhex(BEP42_VECTORS[0][2])[:19], BEP42_VECTORS[0][0])
    assert not bep42.is_valid_node_id(bytes(21), "10.0.0.1")


def _reference_prefix(ip: str, r: int) -> int:
    """The BEP's integer expression, written independently of the byte-wise implementation."""
    address = ipaddress.ip_address(ip)
    if address.version == 4:
        value = (int(address) & 0x030F3FFF) | (r << 29)
        crc = bep42.crc32c(value.to_bytes(4, "big"))
    else:
        value = ((int(address) >> 64) & 0x0103070F1F3F7FFF) | (r << 61)
        crc = bep42.crc32c(value.to_bytes(8, "big"))
    return crc >> 11  # the 21 bits that must match


@given(st.ip_addresses(v=4) | st.ip_addresses(v=6), st.integers(0, 255))
def test_generated_ids_match_the_bep_expression(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, rand: int
) -> None:
    ip = str(address)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        ip = str(address.ipv4_mapped)
    node_id = bep42.node_id_for_ip(ip, rand)
    assert int.from_bytes(node_id[:3], "big") >> 3 == _reference_prefix(ip, rand & 7)
    assert node_id[19] == rand
    assert bep42.is_valid_node_id(node_id, ip)
    if not bep42.is_exempt(ip):
        wrong = bytes([node_id[0] ^ 0x80]) + node_id[1:]
        assert not bep42.is_valid_node_id(wrong, ip)
