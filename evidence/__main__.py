"""``python -m evidence verify BUNDLE``: check an evidence bundle with the Python standard library alone.

Exit codes: 0 every check holds; 1 a check failed; 2 usage error; 3 everything else holds but the signature
was not checked here (the ``cryptography`` package is missing): run the printed ``openssl`` command, or pass
``--run-openssl`` to have it run, or ``--allow-unchecked-signature`` to exit 0 with a warning.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from evidence.verify import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_SIGNATURE_UNCHECKED,
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
    v.add_argument("--allow-unchecked-signature", action="store_true",
                   help="exit 0 (with a warning) when the signature cannot be checked here")
    v.add_argument("--run-openssl", action="store_true",
                   help="without the cryptography package, run the openssl command to check the signature")
    v.add_argument("--extract-dir", type=Path, metavar="DIR",
                   help="where to write the files the openssl command reads (default: a new temporary directory)")
    v.add_argument("--no-cryptography", action="store_true",
                   help="do not use the cryptography package even when installed (as on a bare Python)")
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
        unchecked = any(c.status == "unchecked" for c in result.checks)
        out.write("RESULT: VERIFIED, every check holds" + (
            " EXCEPT the signature, which was NOT checked here (--allow-unchecked-signature): run the openssl "
            "command above" if unchecked else "") + "\n")
    elif code == EXIT_SIGNATURE_UNCHECKED:
        out.write("RESULT: INCOMPLETE: every other check holds, but the signature was not checked here; run the "
                  "openssl command above (it must print 'Signature Verified Successfully') to complete "
                  "verification (exit code 3)\n")
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
        allow_unchecked_signature=args.allow_unchecked_signature,
        use_cryptography=not args.no_cryptography,
        run_openssl=args.run_openssl,
        extract_dir=args.extract_dir,
        expect_fingerprint=args.expect_fingerprint,
    )
    return run_verify(args.bundle, options, as_json=args.json, out=sys.stdout, err=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
