"""``python -m evidence verify BUNDLE``: check an evidence bundle with the Python standard library alone.

From a copy of the ``evidence/`` folder, on a bare Python that trusts nothing around it::

    python3 -I -S evidence verify BUNDLE.zip        # -I isolated, -S no site-packages

(the folder is run as a script; ``python3 -I -S -m evidence`` cannot find a package in the current directory
on Python 3.11 and later, since -I implies -P). ``python3 -S -m evidence verify BUNDLE.zip`` works too.

Exit codes: 0 every check holds; 1 a check failed; 2 usage error. The signature is checked by the pure-Python
Ed25519 verifier (and by ``cryptography`` when installed); the report gives the ``openssl`` command as an
independent second check, and ``--run-openssl`` runs it too.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

if not __package__:  # run as a folder (python3 -I -S path/to/evidence ...): import the package from its parent
    _here = os.path.dirname(os.path.abspath(__file__))
    if sys.path and os.path.abspath(sys.path[0]) == _here:
        del sys.path[0]  # the folder itself would make its modules importable as top-level names
    sys.path.insert(0, os.path.dirname(_here))

from evidence.verify import (  # after the folder bootstrap above
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    Check,
    Options,
    Result,
    verify_bundle,
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m evidence", description="p2pwatch evidence bundles")
    sub = parser.add_subparsers(dest="command", required=True)
    v = sub.add_parser("verify", help="check a bundle: manifest, signature, chain, proofs")
    v.add_argument("bundle", type=Path, help="the bundle (.zip)")
    v.add_argument("--expect-fingerprint", metavar="HEX",
                   help="the centre's key fingerprint as published; the check fails when it differs")
    v.add_argument("--run-openssl", action="store_true",
                   help="also run the openssl command, an independent second check of the signature")
    v.add_argument("--extract-dir", type=Path, metavar="DIR",
                   help="write the files the openssl command reads to DIR (with --run-openssl and no DIR: a new "
                        "temporary directory)")
    v.add_argument("--no-cryptography", action="store_true",
                   help="do not cross-check the signature with the cryptography package even when installed")
    v.add_argument("--json", action="store_true", help="print one JSON document instead of the report")
    return parser


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def print_verdict(result: Result, out: TextIO) -> None:
    code = result.exit_code
    if code == EXIT_OK:
        out.write("RESULT: VERIFIED, every check holds\n")
    else:
        names = ", ".join(c.name for c in result.failed)
        out.write(f"RESULT: NOT VERIFIED: {len(result.failed)} check(s) failed ({names}); do not rely on this "
                  "bundle\n")


def run_verify(bundle: Path, options: Options, *, as_json: bool, out: TextIO, err: TextIO) -> int:
    """Verify ``bundle`` and print the report (or JSON); return the exit code."""
    if not bundle.is_file():
        err.write(f"evidence: error: {bundle}: no such file (give the path of a bundle .zip)\n")
        return EXIT_USAGE
    if not as_json:
        out.write(f"Evidence bundle {bundle} ({bundle.stat().st_size} bytes, SHA-256 {_file_sha256(bundle)})\n")

        def show(check: Check) -> None:
            out.write("\n".join(check.lines()) + "\n")
            out.flush()

        options.on_check = show
    try:
        result = verify_bundle(bundle, options)
    except OSError as exc:
        err.write(f"evidence: error: {bundle}: {exc.strerror or exc}\n")
        return EXIT_FAILED
    if as_json:
        out.write(json.dumps(result.to_json(), indent=2) + "\n")
    else:
        print_verdict(result, out)
    return result.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return EXIT_USAGE if exc.code else EXIT_OK
    options = Options(
        use_cryptography=not args.no_cryptography,
        run_openssl=args.run_openssl,
        extract_dir=args.extract_dir,
        expect_fingerprint=args.expect_fingerprint,
    )
    return run_verify(args.bundle, options, as_json=args.json, out=sys.stdout, err=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
