"""p2pwatch.endpoints: one ``ip:port`` formatter and one unmapping of IPv4-mapped IPv6 addresses, shared by the
compact codec and the error tree (branch cleanup-a: BindError had its own copy, to avoid an import circle)."""

from __future__ import annotations

import ast
import errno
from pathlib import Path

import pytest

import p2pwatch.endpoints
from p2pwatch import endpoints, errors
from p2pwatch.errors import BindError
from p2pwatch.torrent import compact


def test_one_function_serves_the_codec_and_the_errors() -> None:
    assert compact.format_addr is endpoints.format_addr and compact.unmap is endpoints.unmap
    assert errors.format_addr is endpoints.format_addr
    assert compact.Endpoint == endpoints.Endpoint


def test_the_foundation_module_imports_nothing_of_p2pwatch() -> None:
    tree = ast.parse(Path(p2pwatch.endpoints.__file__).read_text(encoding="utf-8"))
    imported = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    imported += [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    assert [name for name in imported if name.startswith("p2pwatch")] == []


@pytest.mark.parametrize(("host", "port", "text"), [
    ("10.1.2.3", 6881, "10.1.2.3:6881"),
    ("0.0.0.0", 0, "0.0.0.0:0"),
    ("::1", 6881, "[::1]:6881"),
    ("::", 6881, "[::]:6881"),
    ("::ffff:10.1.2.3", 1, "[::ffff:10.1.2.3]:1"),
    ("fe80::1%eth0", 80, "[fe80::1%eth0]:80"),
])
def test_bind_error_names_the_endpoint_as_format_addr_does(host: str, port: int, text: str) -> None:
    error = BindError("UDP", host, port, OSError(errno.EADDRINUSE, "Address already in use"), purpose="the DHT")
    assert error.endpoint == endpoints.format_addr((host, port)) == text
    assert str(error).startswith(f"cannot bind UDP {text} for the DHT: the port is already in use")


def test_unmap() -> None:
    assert endpoints.unmap("::ffff:127.0.0.9") == "127.0.0.9"
    assert endpoints.unmap("::FFFF:7f00:9") == "127.0.0.9"
    assert endpoints.unmap("::1") == "::1" and endpoints.unmap("127.0.0.9") == "127.0.0.9"
    assert endpoints.unmap("::ffff:127.0.0.9%lo") == "::ffff:127.0.0.9%lo"  # a scope: not an address as text
    assert endpoints.unmap("") == "" and endpoints.unmap("::ffff:") == "::ffff:"
