"""The canonical ZIP profile of an evidence bundle: one writer, one strict reader, and nothing ambiguous.

A bundle is an ordinary ZIP (PKWARE APPNOTE 6.3) that any unzip tool opens, restricted so that every byte
of it is either covered by a hash or fully determined by the entries (see SPEC.md, "The ZIP profile"):

* entries follow each other from byte 0 with no gaps: local header, data, next local header, ...; then the
  central directory in the same order, then (only when a count, size or offset needs it) the ZIP64 end
  record and locator, then the end record, which ends the file (no comment, no trailing bytes);
* every local header: version needed 20 (45 for ZIP64), flags 0 (no data descriptor, no encryption),
  method 0 (stored) or 8 (deflate), time 00:00:00 and date 1980-01-01, CRC-32 and sizes filled in, no extra
  field except, for a ZIP64 entry, exactly the ZIP64 field with both sizes (the 32-bit sizes then 0xFFFFFFFF);
* every central header repeats the local fields, adds version made by 3 (Unix) / same version, no comment,
  disk 0, internal attributes 0, external attributes 0o100644 << 16, and for a ZIP64 entry a ZIP64 field
  holding the sizes and the local header offset (all three 32-bit fields 0xFFFFFFFF). An entry is ZIP64
  when the writer marks it large or when its local header starts at or beyond 4 GiB - 1;
* names are ASCII: components of ``[A-Za-z0-9._-]``, joined by ``/``, never ``.`` or ``..``, unique.

:class:`ZipWriter` writes this profile (streaming, seeking back to fill in each local header);
:func:`scan` reads it back and refuses anything else; :func:`directory_tail` is shared by both, so the
reader checks the central directory by rebuilding it byte for byte.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

STORED, DEFLATED = 0, 8
DOS_TIME, DOS_DATE = 0, (0 << 9) | (1 << 5) | 1  # 00:00:00, 1980-01-01
EXTERNAL_ATTR = 0o100644 << 16
LOCAL_SIG, CENTRAL_SIG = 0x04034B50, 0x02014B50
EOCD_SIG, ZIP64_EOCD_SIG, ZIP64_LOCATOR_SIG = 0x06054B50, 0x06064B50, 0x07064B50
MAX32, MAX16 = 0xFFFFFFFF, 0xFFFF
_LOCAL = struct.Struct("<IHHHHHIIIHH")
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
_EOCD = struct.Struct("<IHHHHIIH")
_ZIP64_EOCD = struct.Struct("<IQHHIIQQQQ")
_ZIP64_LOCATOR = struct.Struct("<IIQI")
_COMPONENT = re.compile(r"[A-Za-z0-9._-]{1,200}")
MAX_NAME = 512
CHUNK = 1 << 20
#: Entries smaller than this get a smaller deflate window (:func:`compressor`).
SMALL_ENTRY = 1 << 15


class ZipProfileError(ValueError):
    """The archive is not in the canonical profile (or is damaged)."""


def check_name(name: str) -> None:
    if len(name) > MAX_NAME or not name:
        raise ZipProfileError(f"entry name of {len(name)} characters")
    for part in name.split("/"):
        if part in (".", "..") or not _COMPONENT.fullmatch(part):
            raise ZipProfileError(f"entry name {name[:80]!r} is outside the allowed characters")


@dataclass
class Entry:
    name: str
    method: int
    crc: int
    compressed_size: int
    size: int
    offset: int  # of the local header
    zip64: bool

    @property
    def header_size(self) -> int:
        return _LOCAL.size + len(self.name) + (20 if self.zip64 else 0)

    @property
    def data_offset(self) -> int:
        return self.offset + self.header_size

    @property
    def end(self) -> int:
        return self.data_offset + self.compressed_size


def _version(zip64: bool) -> int:
    return 45 if zip64 else 20


def local_header(e: Entry) -> bytes:
    name = e.name.encode("ascii")
    sizes = (MAX32, MAX32) if e.zip64 else (e.compressed_size, e.size)
    extra = struct.pack("<HHQQ", 1, 16, e.size, e.compressed_size) if e.zip64 else b""
    return _LOCAL.pack(
        LOCAL_SIG, _version(e.zip64), 0, e.method, DOS_TIME, DOS_DATE, e.crc, *sizes, len(name), len(extra)
    ) + name + extra


def central_header(e: Entry) -> bytes:
    name = e.name.encode("ascii")
    v = _version(e.zip64)
    if e.zip64:
        fields = (MAX32, MAX32, MAX32)
        extra = struct.pack("<HHQQQ", 1, 24, e.size, e.compressed_size, e.offset)
    else:
        fields, extra = (e.compressed_size, e.size, e.offset), b""
    return _CENTRAL.pack(
        CENTRAL_SIG, 0x0300 | v, v, 0, e.method, DOS_TIME, DOS_DATE, e.crc, fields[0], fields[1],
        len(name), len(extra), 0, 0, 0, EXTERNAL_ATTR, fields[2],
    ) + name + extra


def directory_tail(entries: list[Entry], cd_offset: int) -> bytes:
    """Central directory, ZIP64 end records when needed, and the end record, for entries ending at
    ``cd_offset``."""
    cd = b"".join(central_header(e) for e in entries)
    count = len(entries)
    tail = [cd]
    if count > MAX16 - 1 or len(cd) >= MAX32 or cd_offset >= MAX32:
        eocd64_offset = cd_offset + len(cd)
        tail.append(_ZIP64_EOCD.pack(ZIP64_EOCD_SIG, 44, 0x0300 | 45, 45, 0, 0, count, count, len(cd), cd_offset))
        tail.append(_ZIP64_LOCATOR.pack(ZIP64_LOCATOR_SIG, 0, eocd64_offset, 1))
    tail.append(
        _EOCD.pack(EOCD_SIG, 0, 0, min(count, MAX16), min(count, MAX16), min(len(cd), MAX32),
                   min(cd_offset, MAX32), 0)
    )
    return b"".join(tail)


def compressor(level: int, size: int | None = None) -> Any:
    """A raw deflate compressor for an entry of ``size`` bytes (None: unknown, streamed).

    Entries under 32 KiB get a window just large enough to hold them and a hash table to match: zlib's
    defaults (a 32 KiB window, memLevel 8) cost some 80 us to set up, which for the tens of thousands of
    transcripts of a large case took longer than compressing them. Any raw inflater reads the result.
    """
    if size is None or size >= SMALL_ENTRY:
        return zlib.compressobj(level, zlib.DEFLATED, -15)
    wbits = max(9, (size - 1).bit_length())
    return zlib.compressobj(level, zlib.DEFLATED, -wbits, max(2, wbits - 7))


class ZipWriter:
    """Write the canonical profile to a seekable binary file, one entry at a time, in bounded memory."""

    def __init__(self, fileobj: BinaryIO, *, level: int = 3) -> None:
        self._f = fileobj
        self._level = level
        self.entries: list[Entry] = []
        self._names: set[str] = set()
        self._open: Entry | None = None

    @property
    def position(self) -> int:
        """Where the next local header will start."""
        return self.entries[-1].end if self.entries else 0

    def _claim(self, name: str, method: int) -> int:
        check_name(name)
        if name in self._names:
            raise ZipProfileError(f"duplicate entry {name!r}")
        if self._open is not None:
            raise ZipProfileError("an entry is still open")
        if method not in (STORED, DEFLATED):
            raise ZipProfileError(f"method {method} is outside the profile")
        return self.position

    def open(self, name: str, *, method: int = DEFLATED, large: bool = False) -> _EntryWriter:
        """Stream an entry of unknown size (its local header is filled in when it is closed)."""
        offset = self._claim(name, method)
        entry = Entry(name, method, 0, 0, 0, offset, large or offset >= MAX32)
        self._names.add(name)
        self._open = entry
        self._f.seek(offset)
        self._f.write(local_header(entry))
        return _EntryWriter(self, entry)

    def write(self, name: str, data: bytes, *, method: int = DEFLATED) -> Entry:
        """Write a whole entry held in memory (one write, no seeking back)."""
        offset = self._claim(name, method)
        if method == DEFLATED:
            z = compressor(self._level, len(data))
            payload = z.compress(data) + z.flush()
        else:
            payload = data
        entry = Entry(name, method, zlib.crc32(data), len(payload), len(data), offset, offset >= MAX32)
        if entry.size >= MAX32 or entry.compressed_size >= MAX32:
            raise ZipProfileError(f"{name} exceeds 4 GiB; stream it with open(large=True)")
        self._names.add(name)
        if self._f.tell() != offset:  # a seek flushes the write buffer: one system call per small entry
            self._f.seek(offset)
        self._f.write(local_header(entry) + payload)
        self.entries.append(entry)
        return entry

    def _close(self, entry: Entry) -> None:
        if not entry.zip64 and (entry.size >= MAX32 or entry.compressed_size >= MAX32):
            raise ZipProfileError(f"{entry.name} exceeds 4 GiB; open it with large=True")
        end = self._f.tell()
        self._f.seek(entry.offset)
        self._f.write(local_header(entry))
        self._f.seek(end)
        self.entries.append(entry)
        self._open = None

    def finish(self) -> None:
        """Write the central directory and end records."""
        if self._open is not None:
            raise ZipProfileError("an entry is still open")
        self._f.seek(self.position)
        self._f.write(directory_tail(self.entries, self.position))
        self._f.truncate()
        self._f.flush()


class _EntryWriter:
    def __init__(self, owner: ZipWriter, entry: Entry) -> None:
        self._owner = owner
        self._entry = entry
        self._z = compressor(owner._level) if entry.method == DEFLATED else None

    def write(self, data: bytes) -> None:
        e = self._entry
        e.crc = zlib.crc32(data, e.crc)
        e.size += len(data)
        out = self._z.compress(data) if self._z is not None else data
        if out:
            self._owner._f.write(out)
            e.compressed_size += len(out)

    def close(self) -> None:
        if self._z is not None:
            out = self._z.flush()
            self._owner._f.write(out)
            self._entry.compressed_size += len(out)
        self._owner._close(self._entry)

    def __enter__(self) -> _EntryWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()


def _read_exact(f: BinaryIO, offset: int, length: int) -> bytes:
    f.seek(offset)
    data = f.read(length)
    if len(data) != length:
        raise ZipProfileError(f"archive ends inside a structure at byte {offset}")
    return data


def scan(f: BinaryIO, size: int) -> list[Entry]:
    """Read every local header from byte 0, check each against the profile, then check that the rest of the
    file is exactly the directory those entries imply. Returns the entries in archive order."""
    entries: list[Entry] = []
    names: set[str] = set()
    pos = 0
    while pos + 4 <= size and struct.unpack("<I", _read_exact(f, pos, 4))[0] == LOCAL_SIG:
        fixed = _LOCAL.unpack(_read_exact(f, pos, _LOCAL.size))
        _, version, _flags, method, _t, _d, crc, csize, usize, name_len, extra_len = fixed
        raw_name = _read_exact(f, pos + _LOCAL.size, name_len + extra_len)
        try:
            name = raw_name[:name_len].decode("ascii")
        except UnicodeDecodeError:
            raise ZipProfileError(f"entry at byte {pos}: name is not ASCII") from None
        check_name(name)
        if name in names:
            raise ZipProfileError(f"entry {name!r} appears twice")
        names.add(name)
        zip64 = version == 45 and extra_len == 20
        if zip64:
            tag, length, usize, csize = struct.unpack("<HHQQ", raw_name[name_len:])
            if (tag, length) != (1, 16):
                raise ZipProfileError(f"{name}: unexpected extra field")
        entry = Entry(name, method, crc, csize, usize, pos, zip64)
        if _LOCAL.pack(*fixed) + raw_name != local_header(entry):
            raise ZipProfileError(f"{name}: local header at byte {pos} is outside the canonical profile")
        if method not in (STORED, DEFLATED) or (method == STORED and csize != usize):
            raise ZipProfileError(f"{name}: method {method} or sizes outside the profile")
        if pos >= MAX32 and not zip64:
            raise ZipProfileError(f"{name}: an entry beyond 4 GiB must be ZIP64")
        if entry.end > size:
            raise ZipProfileError(f"{name}: data runs past the end of the archive")
        entries.append(entry)
        pos = entry.end
    if not entries:
        raise ZipProfileError("no ZIP local header at byte 0")
    expected = directory_tail(entries, pos)
    if size - pos != len(expected) or _read_exact(f, pos, size - pos) != expected:
        raise ZipProfileError(
            f"the central directory and end records (bytes {pos}..{size}) are not exactly those the entries imply"
        )
    return entries


def iter_raw(f: BinaryIO, offset: int, length: int) -> Iterator[bytes]:
    """The archive's bytes ``[offset, offset + length)`` in chunks. Seeks before every read, so other reads of
    the same file may happen between chunks."""
    while length > 0:
        f.seek(offset)
        chunk = f.read(min(CHUNK, length))
        if not chunk:
            raise ZipProfileError("archive ends early")
        offset += len(chunk)
        length -= len(chunk)
        yield chunk


def iter_content(f: BinaryIO, entry: Entry) -> Iterator[bytes]:
    """An entry's uncompressed bytes in chunks; raises :class:`ZipProfileError` when the deflate stream,
    the size or the CRC-32 disagrees with the header (checked as the last chunk is produced)."""
    crc, produced = 0, 0
    z = zlib.decompressobj(-15) if entry.method == DEFLATED else None
    for raw in iter_raw(f, entry.data_offset, entry.compressed_size):
        pending = raw
        while pending:
            if z is None:
                out, pending = pending, b""
            else:
                try:
                    out = z.decompress(pending, CHUNK)
                except zlib.error as exc:
                    raise ZipProfileError(f"{entry.name}: corrupt deflate data ({exc})") from None
                pending = z.unconsumed_tail
            produced += len(out)
            if produced > entry.size:
                raise ZipProfileError(f"{entry.name}: more data than its declared size")
            crc = zlib.crc32(out, crc)
            if out:
                yield out
    if z is not None:
        while not z.eof:
            try:
                out = z.decompress(b"", CHUNK)
            except zlib.error as exc:
                raise ZipProfileError(f"{entry.name}: corrupt deflate data ({exc})") from None
            if not out:
                break
            produced += len(out)
            if produced > entry.size:
                raise ZipProfileError(f"{entry.name}: more data than its declared size")
            crc = zlib.crc32(out, crc)
            yield out
        if not z.eof or z.unused_data:
            raise ZipProfileError(f"{entry.name}: the deflate stream does not end exactly at the entry's end")
    if produced != entry.size or crc != entry.crc:
        raise ZipProfileError(f"{entry.name}: size or CRC-32 does not match its header")


def read_content(f: BinaryIO, entry: Entry, limit: int) -> bytes:
    """An entry's whole content; refuses entries larger than ``limit``."""
    if entry.size > limit:
        raise ZipProfileError(f"{entry.name}: {entry.size} bytes exceeds the limit of {limit}")
    return b"".join(iter_content(f, entry))
