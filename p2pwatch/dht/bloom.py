"""BEP 33 scrape bloom filters: 256-byte filters of seed / peer IPs, and the population estimate."""

from __future__ import annotations

import hashlib
import ipaddress
import math

BLOOM_BYTES = 256
BLOOM_BITS = BLOOM_BYTES * 8


def bloom_insert(bloom: bytearray, ip: str) -> None:
    """Insert an IPv4/IPv6 address exactly as BEP 33's pseudocode does (k = 2, m = 2048)."""
    digest = hashlib.sha1(ipaddress.ip_address(ip).packed).digest()
    for index in (digest[0] | digest[1] << 8, digest[2] | digest[3] << 8):
        index %= BLOOM_BITS
        bloom[index // 8] |= 1 << (index % 8)


def bloom_of(ips: list[str] | set[str]) -> bytes:
    bloom = bytearray(BLOOM_BYTES)
    for ip in ips:
        bloom_insert(bloom, ip)
    return bytes(bloom)


def bloom_estimate(bloom: bytes) -> float:
    """BEP 33's estimate of how many distinct IPs a filter (or an OR of filters) holds."""
    if len(bloom) != BLOOM_BYTES:
        raise ValueError("a BEP 33 bloom filter is 256 bytes")
    zero_bits = BLOOM_BITS - sum(bin(b).count("1") for b in bloom)
    c = min(BLOOM_BITS - 1, zero_bits)
    if c == 0:
        return float("inf")
    return math.log(c / BLOOM_BITS) / (2 * math.log(1 - 1 / BLOOM_BITS))


def bloom_union(filters: list[bytes]) -> bytes:
    out = bytearray(BLOOM_BYTES)
    for f in filters:
        for i, b in enumerate(f[:BLOOM_BYTES]):
            out[i] |= b
    return bytes(out)
