"""Message Stream Encryption / Protocol Encryption (MSE/PE), the initiator side, sans-IO.

There is no BEP for MSE; this follows the Azureus/Vuze "Message Stream Encryption" specification as
implemented by libtorrent and most clients:

    A->B: Ya, PadA
    B->A: Yb, PadB
    A->B: HASH('req1', S), HASH('req2', SKEY) xor HASH('req3', S), ENCRYPT(VC, crypto_provide, len(PadC),
          PadC, len(IA)), ENCRYPT(IA)
    B->A: ENCRYPT(VC, crypto_select, len(PadD), PadD), ENCRYPT2(payload stream)

768-bit Diffie-Hellman with the specification's prime and generator 2, SHA-1 for HASH, RC4 keyed with
HASH('keyA', S, SKEY) (A's sending direction) and HASH('keyB', S, SKEY), each discarding the first 1024
bytes of keystream. SKEY is the 20-byte infohash sent on the wire (a v2 infohash truncated to 20 bytes).

Departures and choices:

* We are always the initiator (probes only connect out); the responder lives in the tests.
* IA is always empty: the BitTorrent handshake is sent after crypto_select arrives, as libtorrent does.
  This costs one round trip and avoids guessing how a peer treats IA when it selects plaintext.
* Weak DH public keys (Yb <= 1 or Yb >= P - 1) are refused.

RC4 runs in pure Python (a tight loop in local variables, XOR done on big integers). When the
``cryptography`` package happens to be installed its OpenSSL ARC4 is used instead (``RC4.backend``);
p2pwatch does not depend on it.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import struct
from collections.abc import Callable
from enum import Enum
from itertools import cycle, islice
from typing import Any

from p2pwatch import limits
from p2pwatch.errors import LocalProtocolError, PeerWireError

P = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DDEF"
    "9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A63A36210000000000090563",
    16,
)
G = 2
DH_KEY_LENGTH = 96
VC = bytes(8)
CRYPTO_PLAINTEXT = 0x01
CRYPTO_RC4 = 0x02
RC4_DISCARD = 1024
_I_ORDER = (*range(1, 256), 0)


class MSEError(PeerWireError):
    """The MSE/PE handshake failed (no sync, an unoffered crypto method, a bad key or padding)."""


# ------------------------------------------------------------------------------------------------ RC4

try:  # optional accelerator; never a dependency
    from cryptography.hazmat.decrepit.ciphers.algorithms import ARC4 as _ARC4
    from cryptography.hazmat.primitives.ciphers import Cipher as _Cipher

    _HAVE_OPENSSL_RC4 = True
except Exception:  # pragma: no cover - depends on the environment
    _HAVE_OPENSSL_RC4 = False


class RC4:
    """RC4 stream cipher with an initial keystream discard (RC4-drop[n]); ``process`` en/decrypts."""

    def __init__(self, key: bytes, *, discard: int = RC4_DISCARD, backend: str = "auto") -> None:
        if not 1 <= len(key) <= 256:
            raise LocalProtocolError("RC4 key must be 1..256 bytes")
        if backend not in ("auto", "python", "openssl"):
            raise LocalProtocolError(f"unknown RC4 backend {backend!r}")
        self._ctx: Any = None
        if backend != "python" and _HAVE_OPENSSL_RC4 and len(key) in (5, 7, 8, 10, 16, 20, 24, 32):
            self._ctx = _Cipher(_ARC4(key), mode=None).encryptor()
            self.backend = "openssl"
        elif backend == "openssl":
            raise LocalProtocolError("the OpenSSL RC4 backend is not available for this key")
        else:
            self.backend = "python"
            s = list(range(256))
            j = 0
            n = len(key)
            for i in range(256):
                j = (j + s[i] + key[i % n]) & 255
                s[i], s[j] = s[j], s[i]
            self._s = s
            self._i = 0
            self._j = 0
        if discard:
            self.process(bytes(discard))

    def process(self, data: bytes) -> bytes:
        n = len(data)
        if not n:
            return b""
        if self._ctx is not None:
            return bytes(self._ctx.update(data))
        s = self._s
        j = self._j
        out: list[int] = []
        append = out.append
        # i runs 1, 2, ..., 255, 0, 1, ...: iterate a precomputed cycle instead of computing (i + 1) & 255
        for i in islice(cycle(_I_ORDER), self._i, self._i + n):
            si = s[i]
            j = (j + si) & 255
            s[i] = sj = s[j]
            s[j] = si
            append(s[(si + sj) & 255])
        self._i = (self._i + n) & 255
        self._j = j
        return (int.from_bytes(data, "little") ^ int.from_bytes(out, "little")).to_bytes(n, "little")


# ----------------------------------------------------------------------------------------- handshake


def _sha1(*parts: bytes) -> bytes:
    return hashlib.sha1(b"".join(parts)).digest()


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def dh_public_key(private_key: int) -> bytes:
    return pow(G, private_key, P).to_bytes(DH_KEY_LENGTH, "big")


def dh_shared_secret(private_key: int, remote_public: bytes) -> bytes:
    y = int.from_bytes(remote_public, "big")
    if not 1 < y < P - 1:
        raise MSEError("the peer sent a weak Diffie-Hellman public key")
    return pow(y, private_key, P).to_bytes(DH_KEY_LENGTH, "big")


def stream_keys(secret: bytes, skey: bytes) -> tuple[bytes, bytes]:
    """(keyA, keyB): keyA encrypts A->B (initiator to responder), keyB B->A."""
    return _sha1(b"keyA", secret, skey), _sha1(b"keyB", secret, skey)


def obfuscated_skey(secret: bytes, skey: bytes) -> bytes:
    return _xor(_sha1(b"req2", skey), _sha1(b"req3", secret))


class MSEState(Enum):
    START = "start"
    WAIT_KEY = "wait_key"
    WAIT_SYNC = "wait_sync"
    WAIT_SELECT = "wait_select"
    WAIT_PAD = "wait_pad"
    DONE = "done"


class MSEInitiator:
    """Initiator state machine. ``start()`` gives the first bytes; ``feed(data)`` returns bytes to send.

    When :attr:`done`, :attr:`method` is ``"rc4"`` or ``"plaintext"``; :meth:`encrypt` and
    :meth:`decrypt` then apply to the BitTorrent stream, and :meth:`take_payload` returns payload bytes
    (already decrypted) that arrived together with the end of the handshake.
    """

    def __init__(self, skey: bytes, *, crypto_provide: int = CRYPTO_RC4 | CRYPTO_PLAINTEXT,
                 private_key: int | None = None, pad_length: int | None = None,
                 random_bytes: Callable[[int], bytes] = os.urandom, rc4_backend: str = "auto") -> None:
        if len(skey) != 20:
            raise LocalProtocolError("the MSE stream key (infohash) must be 20 bytes")
        if not crypto_provide or crypto_provide & ~(CRYPTO_RC4 | CRYPTO_PLAINTEXT):
            raise LocalProtocolError("crypto_provide must offer RC4 and/or plaintext")
        self._skey = skey
        self._provide = crypto_provide
        self._x = private_key if private_key is not None else secrets.randbits(160) | (1 << 159)
        self._pad_length = pad_length
        self._random = random_bytes
        self._rc4_backend = rc4_backend
        self._buf = bytearray()
        self._pad_d = 0
        self._payload = b""
        self._enc: RC4 | None = None
        self._dec: RC4 | None = None
        self._vc_pattern = b""
        self.state = MSEState.START
        self.method: str | None = None

    @property
    def done(self) -> bool:
        return self.state is MSEState.DONE

    def _pad(self) -> bytes:
        n = self._pad_length if self._pad_length is not None else secrets.randbelow(limits.MSE_MAX_PAD + 1)
        return self._random(n)

    def start(self) -> bytes:
        if self.state is not MSEState.START:
            raise LocalProtocolError("MSE handshake already started")
        self.state = MSEState.WAIT_KEY
        return dh_public_key(self._x) + self._pad()

    def feed(self, data: bytes) -> bytes:
        """Process received bytes; return what must be sent next (often nothing)."""
        if self.state is MSEState.START:
            raise LocalProtocolError("call start() before feed()")
        if self.state is MSEState.DONE:
            raise LocalProtocolError("MSE handshake is finished; decrypt() the stream instead")
        self._buf += data
        out = b""
        if self.state is MSEState.WAIT_KEY and len(self._buf) >= DH_KEY_LENGTH:
            out = self._on_key(bytes(self._buf[:DH_KEY_LENGTH]))
            del self._buf[:DH_KEY_LENGTH]
        if self.state is MSEState.WAIT_SYNC:
            self._find_sync()
        if self.state is MSEState.WAIT_SELECT and len(self._buf) >= 6:
            assert self._dec is not None
            select, pad_d = struct.unpack(">IH", self._dec.process(bytes(self._buf[:6])))
            del self._buf[:6]
            if select not in (CRYPTO_RC4, CRYPTO_PLAINTEXT) or not select & self._provide:
                raise MSEError(f"the peer selected crypto method {select:#x}, which we did not offer")
            if pad_d > limits.MSE_MAX_PAD:
                raise MSEError(f"PadD of {pad_d} bytes exceeds {limits.MSE_MAX_PAD}")
            self.method = "rc4" if select == CRYPTO_RC4 else "plaintext"
            self._pad_d = pad_d
            self.state = MSEState.WAIT_PAD
        if self.state is MSEState.WAIT_PAD and len(self._buf) >= self._pad_d:
            assert self._dec is not None
            self._dec.process(bytes(self._buf[: self._pad_d]))
            rest = bytes(self._buf[self._pad_d :])
            self._buf.clear()
            self.state = MSEState.DONE
            self._payload = self.decrypt(rest)
        return out

    def _on_key(self, remote_public: bytes) -> bytes:
        secret = dh_shared_secret(self._x, remote_public)
        key_a, key_b = stream_keys(secret, self._skey)
        self._enc = RC4(key_a, backend=self._rc4_backend)
        self._dec = RC4(key_b, backend=self._rc4_backend)
        # the next 8 bytes the responder encrypts are VC; keep their ciphertext as the sync pattern
        self._vc_pattern = self._dec.process(VC)
        pad_c = self._pad()
        self.state = MSEState.WAIT_SYNC
        return (_sha1(b"req1", secret) + obfuscated_skey(secret, self._skey)
                + self._enc.process(VC + struct.pack(">IH", self._provide, len(pad_c)) + pad_c
                                    + struct.pack(">H", 0)))

    def _find_sync(self) -> None:
        at = self._buf.find(self._vc_pattern)
        if at < 0:
            if len(self._buf) >= limits.MSE_MAX_PAD + len(VC):
                raise MSEError("no MSE sync (encrypted VC) within 512 bytes: not MSE, or another infohash")
            return
        if at > limits.MSE_MAX_PAD:
            raise MSEError("encrypted VC found beyond PadB's 512 bytes")
        del self._buf[: at + len(VC)]
        self.state = MSEState.WAIT_SELECT

    def encrypt(self, data: bytes) -> bytes:
        if self.state is not MSEState.DONE:
            raise LocalProtocolError("MSE handshake not finished")
        if self.method == "rc4":
            assert self._enc is not None
            return self._enc.process(data)
        return data

    def decrypt(self, data: bytes) -> bytes:
        if self.state is not MSEState.DONE:
            raise LocalProtocolError("MSE handshake not finished")
        if self.method == "rc4":
            assert self._dec is not None
            return self._dec.process(data)
        return data

    def take_payload(self) -> bytes:
        payload, self._payload = self._payload, b""
        return payload
