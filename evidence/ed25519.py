"""Ed25519 signature verification (RFC 8032 section 5.1) on the Python standard library alone.

Written from the RFC so that a police examiner can check a bundle's signature on a bare Python, with neither
``cryptography`` nor OpenSSL. Only verification is here (no secret key is ever handled), so nothing needs
to be constant-time.

- Curve edwards25519 (section 5.1): p = 2^255 - 19, d = -121665/121666, a = -1, group order L.
- Points in extended homogeneous coordinates (X:Y:Z:T) with x = X/Z, y = Y/Z, x*y = T/Z (section 5.1.4).
- Decoding (section 5.1.3) fails for y >= p (a non-canonical encoding), for a y with no x on the curve, and
  for x = 0 with the sign bit set.
- Verification (section 5.1.7) fails for S >= L (a non-canonical, malleable S) and for an R or A that does
  not decode. It then checks the group equation without the cofactor, [S]B = R + [k]A', which section
  5.1.7 allows ("sufficient, but not required"): it is the stricter of the two equations, and the one
  OpenSSL (hence the ``cryptography`` package) checks, so both give the same answer for any signature an
  honest signer makes.
"""

from __future__ import annotations

import hashlib

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, P - 2, P) % P
D2 = 2 * D % P
SQRT_M1 = pow(2, (P - 1) // 4, P)  # a square root of -1 (section 5.1.3 step 3)
KEY_BYTES, SIGNATURE_BYTES = 32, 64

Point = tuple[int, int, int, int]
IDENTITY: Point = (0, 1, 1, 0)


def _add(p1: Point, p2: Point) -> Point:
    """Point addition in extended coordinates (section 5.1.4, the formulas for a = -1)."""
    x1, y1, z1, t1 = p1
    x2, y2, z2, t2 = p2
    a = (y1 - x1) * (y2 - x2) % P
    b = (y1 + x1) * (y2 + x2) % P
    c = t1 * D2 * t2 % P
    d = z1 * 2 * z2 % P
    e, f, g, h = b - a, d - c, d + c, b + a
    return e * f % P, g * h % P, f * g % P, e * h % P


def _double(p1: Point) -> Point:
    """Point doubling (section 5.1.4)."""
    x1, y1, z1, _ = p1
    a = x1 * x1 % P
    b = y1 * y1 % P
    c = 2 * z1 * z1 % P
    h = a + b
    e = h - (x1 + y1) * (x1 + y1) % P
    g = a - b
    f = c + g
    return e * f % P, g * h % P, f * g % P, e * h % P


def _negate(p1: Point) -> Point:
    x1, y1, z1, t1 = p1
    return -x1 % P, y1, z1, -t1 % P


def _equal(p1: Point, p2: Point) -> bool:
    """x1/z1 == x2/z2 and y1/z1 == y2/z2, without inverting."""
    return (p1[0] * p2[2] - p2[0] * p1[2]) % P == 0 and (p1[1] * p2[2] - p2[1] * p1[2]) % P == 0


def _recover_x(y: int, sign: int) -> int | None:
    """The x of the curve point with this y and low bit ``sign`` (section 5.1.3 steps 2-4), or None."""
    u = (y * y - 1) % P
    v = (D * y * y + 1) % P
    x = u * pow(v, 3, P) * pow(u * pow(v, 7, P), (P - 5) // 8, P) % P
    vxx = v * x * x % P
    if vxx == (-u) % P:
        x = x * SQRT_M1 % P
    elif vxx != u:
        return None  # u/v is not a square: no point has this y
    if x == 0 and sign:
        return None
    if x & 1 != sign:
        x = P - x
    return x


def decode_point(data: bytes) -> Point | None:
    """The point encoded in 32 bytes (section 5.1.3), or None when the encoding is invalid or non-canonical."""
    if len(data) != KEY_BYTES:
        return None
    value = int.from_bytes(data, "little")
    sign, y = value >> 255, value & ((1 << 255) - 1)
    if y >= P:
        return None
    x = _recover_x(y, sign)
    if x is None:
        return None
    return x, y, 1, x * y % P


def encode_point(point: Point) -> bytes:
    """The 32-byte encoding of a point (section 5.1.2): y, with the low bit of x in the top bit."""
    x, y, z, _ = point
    inverse = pow(z, P - 2, P)
    x, y = x * inverse % P, y * inverse % P
    return (y | (x & 1) << 255).to_bytes(KEY_BYTES, "little")


_BASE_Y = 4 * pow(5, P - 2, P) % P
_BASE_X = _recover_x(_BASE_Y, 0)
assert _BASE_X is not None
BASE: Point = (_BASE_X, _BASE_Y, 1, _BASE_X * _BASE_Y % P)  # B of section 5.1, x positive (even)


def scalar_mult(scalar: int, point: Point) -> Point:
    """[scalar]point, double-and-add from the top bit."""
    result = IDENTITY
    for i in range(scalar.bit_length() - 1, -1, -1):
        result = _double(result)
        if scalar >> i & 1:
            result = _add(result, point)
    return result


def _double_scalar_mult(s: int, p1: Point, k: int, p2: Point) -> Point:
    """[s]p1 + [k]p2 in one pass of doublings (Shamir's trick)."""
    both = _add(p1, p2)
    table = (None, p1, p2, both)
    result = IDENTITY
    for i in range(max(s.bit_length(), k.bit_length()) - 1, -1, -1):
        result = _double(result)
        index = (s >> i & 1) | (k >> i & 1) << 1
        if index:
            addend = table[index]
            assert addend is not None
            result = _add(result, addend)
    return result


def verify(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """True when ``signature`` is a valid Ed25519 signature of ``message`` under ``public_key``
    (RFC 8032 section 5.1.7: PureEdDSA, no context, no pre-hash)."""
    if len(public_key) != KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    r_bytes, s_bytes = signature[:32], signature[32:]
    s = int.from_bytes(s_bytes, "little")
    if s >= L:
        return False  # non-canonical S: s + L would verify too, so a second signature could be made
    a_point = decode_point(public_key)
    r_point = decode_point(r_bytes)
    if a_point is None or r_point is None:
        return False
    k = int.from_bytes(hashlib.sha512(r_bytes + public_key + message).digest(), "little") % L
    # [S]B - [k]A' must be R.
    return _equal(_double_scalar_mult(s, BASE, k, _negate(a_point)), r_point)
