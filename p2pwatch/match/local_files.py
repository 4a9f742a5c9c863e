"""Opening the files a person asks us to fingerprint or import: a regular, readable file or one clear error.

Shared by :mod:`p2pwatch.match.fingerprint` (content) and :mod:`p2pwatch.match.hashlist` (hash lists).
"""

from __future__ import annotations

import os
import stat
from typing import BinaryIO

from p2pwatch.errors import FingerprintError


def open_regular_file(path: str | os.PathLike[str]) -> tuple[BinaryIO, int]:
    """An open binary handle on a readable regular file and its size; :class:`FingerprintError` naming the
    problem (missing, a directory, a device or pipe, unreadable) otherwise. The caller closes the handle."""
    name = os.fspath(path)
    try:
        info = os.stat(name)
    except FileNotFoundError:
        raise FingerprintError(f"{name}: no such file") from None
    except OSError as exc:
        raise FingerprintError(f"cannot read {name}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(info.st_mode):
        raise FingerprintError(f"{name} is a directory: give the files in it")
    if not stat.S_ISREG(info.st_mode):
        raise FingerprintError(f"{name} is not a regular file")
    try:
        handle = open(name, "rb")  # noqa: SIM115 - closed by the caller
    except OSError as exc:
        raise FingerprintError(f"cannot read {name}: {exc.strerror or exc}") from None
    return handle, info.st_size


def check_regular_file(path: str | os.PathLike[str]) -> int:
    """The size of a readable regular file; :class:`FingerprintError` naming the problem otherwise."""
    handle, size = open_regular_file(path)
    handle.close()
    return size
