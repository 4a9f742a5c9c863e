"""Verify an evidence bundle (SPEC.md) on the Python standard library alone.

Checks, in order (each prints one line; details follow on indented lines):

1. ``zip``: the archive is in the canonical ZIP profile (:mod:`evidence.zipcanon`);
2. ``manifest``: manifest.json lists every other file with its SHA-256 and size, in archive order, nothing
   unlisted or missing, and the SHA-256 of the archive bytes before manifest.json;
3. ``bundle.json``: the description parses and agrees with the manifest (time, tool version, configuration);
4. ``key``: the fingerprint of public_key.pem equals the one in manifest.json, bundle.json and report.html
   (and ``--expect-fingerprint`` when given);
5. ``signature``: Ed25519 over the manifest.json bytes (:mod:`evidence.ed25519`, and ``cryptography`` too
   when installed; the OpenSSL command is printed as an independent second check);
6. ``torrents``: each torrent's info dict hashes to its infohash(es); what its metainfo holds (a .torrent or
   the info dict alone, which piece layers) is what bundle.json declares (:mod:`evidence.torrent_record`);
7. ``match <id>``: each match proof re-hashed against the metainfo (:mod:`evidence.proofs`);
8. ``chain``: every row's hash re-computed and linked, anchored to chain.json (:mod:`evidence.hashchain`);
   every level >= 1 row has its transcript (SHA-256 chained); levels 3-4 re-checked against the metainfo;
9. ``peers``: the per-peer summaries in bundle.json agree with the observations.

Exit codes: 0 every check holds; 1 a check failed; 2 usage (no such file, bad option). (Before the pure-Python
Ed25519 verifier, 3 meant "the signature was not checked here"; it is no longer used.)
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from evidence import FORMAT_NAME, FORMAT_VERSION, signature
from evidence.hashchain import GENESIS_HASH, ChainChecker, ChainError, is_hash
from evidence.proofs import ProofError, TorrentIndex, check_match, check_served, short
from evidence.torrent import TorrentError
from evidence.torrent_record import check_record
from evidence.zipcanon import Entry, ZipProfileError, iter_content, iter_raw, read_content, scan

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
#: Largest member read into memory (observations.jsonl is streamed, whatever its size).
MAX_MEMBER = 512 * 1024 * 1024
MAX_LINE = 1024 * 1024
_decode = json.JSONDecoder().decode
OK, FAIL, WARN, SKIPPED = "ok", "FAIL", "warn", "skipped"


@dataclass
class Check:
    name: str
    status: str
    summary: str
    details: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        tag = {OK: "[ ok ]", FAIL: "[FAIL]", WARN: "[warn]", SKIPPED: "[skip]"}[self.status]
        return [f"{tag} {self.name}: {self.summary}", *(f"       {d}" for d in self.details)]


@dataclass
class Options:
    use_cryptography: bool = True
    run_openssl: bool = False
    extract_dir: Path | None = None
    expect_fingerprint: str | None = None
    fail_fast: bool = False
    on_check: Callable[[Check], None] | None = None


@dataclass
class Result:
    checks: list[Check] = field(default_factory=list)
    fingerprint: str | None = None
    openssl_command: str | None = None

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.status == FAIL]

    @property
    def exit_code(self) -> int:
        return EXIT_FAILED if self.failed else EXIT_OK

    def to_json(self) -> dict[str, Any]:
        return {
            "verified": self.exit_code == EXIT_OK, "exit_code": self.exit_code, "key_fingerprint": self.fingerprint,
            "openssl_command": self.openssl_command,
            "checks": [{"name": c.name, "status": c.status.lower(), "summary": c.summary, "details": c.details}
                       for c in self.checks],
        }


class _Stop(Exception):
    """Stop verifying (a failure that leaves nothing else checkable, or fail-fast)."""


class _Bundle:
    """Members of a scanned bundle, read on demand."""

    def __init__(self, f: BinaryIO, entries: list[Entry]) -> None:
        self.f = f
        self.entries = entries
        self.by_name = {e.name: e for e in entries}
        self._pieces: dict[str, set[str]] = {}
        for e in entries:
            parts = e.name.split("/")
            if len(parts) == 3 and parts[0] == "pieces":
                self._pieces.setdefault(parts[1], set()).add(parts[2])

    def read(self, name: str) -> bytes:
        if name not in self.by_name:
            raise ZipProfileError(f"{name} is missing from the bundle")
        return read_content(self.f, self.by_name[name], MAX_MEMBER)

    def json(self, name: str) -> Any:
        try:
            return json.loads(self.read(name))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ZipProfileError(f"{name} is not valid JSON: {exc}") from None

    def piece(self, key: str, index: int) -> tuple[str, bytes] | None:
        files = self._pieces.get(key, set())
        for kind in ("bin", "sha1", "sha256"):
            if f"{index}.{kind}" in files:
                return kind, self.read(f"pieces/{key}/{index}.{kind}")
        return None

    def lines(self, name: str) -> Iterator[bytes]:
        buffer = b""
        for chunk in iter_content(self.f, self.by_name[name]):
            buffer += chunk
            *complete, buffer = buffer.split(b"\n")
            yield from complete
            if len(buffer) > MAX_LINE:
                raise ZipProfileError(f"{name}: a line longer than {MAX_LINE} bytes")
        if buffer:
            raise ZipProfileError(f"{name}: the last line has no newline")


class Verifier:
    def __init__(self, options: Options) -> None:
        self.o = options
        self.result = Result()

    def add(self, check: Check) -> None:
        self.result.checks.append(check)
        if self.o.on_check is not None:
            self.o.on_check(check)
        if check.status == FAIL and self.o.fail_fast:
            raise _Stop

    def run(self, f: BinaryIO, size: int) -> Result:
        with contextlib.suppress(_Stop):
            self._run(f, size)
        return self.result

    def _guard(self, name: str, func: Callable[[], Check], *, fatal: bool = False) -> Check | None:
        try:
            check = func()
        except (ZipProfileError, ProofError, ChainError, TorrentError, signature.KeyFormatError) as exc:
            check = Check(name, FAIL, str(exc))
        except Exception as exc:  # malformed input of any other kind: a failure, never a traceback
            check = Check(name, FAIL, f"malformed data ({type(exc).__name__}: {str(exc)[:200]})")
        self.add(check)
        if fatal and check.status == FAIL:
            raise _Stop
        return check

    def _run(self, f: BinaryIO, size: int) -> None:
        entries: list[Entry] = []

        def zip_check() -> Check:
            entries.extend(scan(f, size))
            names = [e.name for e in entries]
            if names[-2:] != ["manifest.json", "manifest.sig"]:
                raise ZipProfileError("manifest.json and manifest.sig must be the last two entries")
            missing = {"public_key.pem", "bundle.json", "chain.json", "observations.jsonl", "report.html"} - set(names)
            if missing:
                raise ZipProfileError(f"missing {', '.join(sorted(missing))}")
            return Check("zip", OK, f"{len(entries)} entries in the canonical layout, {size} bytes, no stray bytes")

        self._guard("zip", zip_check, fatal=True)
        b = _Bundle(f, entries)
        manifest: dict[str, Any] = {}
        manifest_bytes = b""

        def manifest_check() -> Check:
            nonlocal manifest_bytes
            manifest_bytes = b.read("manifest.json")
            return self._manifest(b, manifest_bytes, manifest)

        self._guard("manifest", manifest_check, fatal=True)
        bundle: dict[str, Any] = {}

        def bundle_check() -> Check:
            loaded = b.json("bundle.json")
            if not isinstance(loaded, dict) or loaded.get("format") != FORMAT_NAME:
                raise ZipProfileError(f"bundle.json is not a {FORMAT_NAME} description")
            bundle.update(loaded)
            for name in ("created_at", "tool_version", "config_sha256"):
                if bundle.get(name) != manifest.get(name):
                    raise ZipProfileError(f"bundle.json {name} differs from manifest.json's")
            case = bundle.get("case") or {}
            config = short(str(bundle.get("config_sha256")))
            return Check("bundle.json", OK, f"case {str(case.get('name'))[:80]!r}, created {bundle.get('created_at')} "
                         f"by p2pwatch {bundle.get('tool_version')}, configuration SHA-256 {config}")

        self._guard("bundle.json", bundle_check, fatal=True)
        raw_key = b""

        def key_check() -> Check:
            nonlocal raw_key
            raw_key = signature.raw_public_key(b.read("public_key.pem"))
            return self._key(raw_key, manifest, bundle, b.read("report.html"))

        self._guard("key", key_check)
        self._guard("signature", lambda: self._signature(b, raw_key, manifest_bytes))
        torrents = TorrentIndex()
        self._guard("torrents", lambda: self._torrents(b, bundle, torrents))
        matches = bundle.get("matches") or []
        if not isinstance(matches, list):
            self.add(Check("matches", FAIL, "bundle.json matches is not a list"))
            matches = []
        for i, match in enumerate(matches):
            name = f"match {match.get('id', i) if isinstance(match, dict) else i}"

            def match_check(m: Any = match, n: str = name) -> Check:
                detail = check_match(m, torrents, b.piece)
                return Check(n, OK, f"{m.get('method')} for content {m.get('content_id')}: {detail}")

            self._guard(name, match_check)
        if not matches:
            self.add(Check("matches", WARN, "the bundle records no match proof"))
        peers: dict[tuple[str, str, int], dict[str, Any]] = {}
        chain = self._guard("chain", lambda: self._chain(b, torrents, peers))
        if chain is not None and chain.status == OK:
            self._guard("peers", lambda: self._peers(bundle, torrents, peers))
        else:
            self.add(Check("peers", SKIPPED, "not checked: the summaries are compared with a chain that verifies"))

    def _manifest(self, b: _Bundle, raw: bytes, out: dict[str, Any]) -> Check:
        manifest = json.loads(raw)
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
            raise ZipProfileError(f"manifest.json is not a {FORMAT_NAME} manifest")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise ZipProfileError(f"format_version {manifest.get('format_version')} (this verifier reads "
                                  f"{FORMAT_VERSION})")
        out.update(manifest)
        listed = manifest.get("files")
        members = b.entries[:-2]
        if not isinstance(listed, list) or [x.get("path") for x in listed] != [e.name for e in members]:
            names = {e.name for e in members}
            paths = {x.get("path") for x in listed} if isinstance(listed, list) else set()
            raise ZipProfileError(
                f"the manifest does not list the archive's files in order (unlisted: {sorted(names - paths)[:5]}, "
                f"missing: {sorted(str(p) for p in paths - names)[:5]})")
        archive = manifest.get("archive") or {}
        prefix = b.by_name["manifest.json"].offset
        if archive.get("prefix_bytes") != prefix:
            raise ZipProfileError(f"manifest says the archive prefix is {archive.get('prefix_bytes')} bytes, "
                                  f"it is {prefix}")
        digest = hashlib.sha256()
        for chunk in iter_raw(b.f, 0, prefix):
            digest.update(chunk)
        if digest.hexdigest() != archive.get("prefix_sha256"):
            raise ZipProfileError("the SHA-256 of the archive bytes before manifest.json differs from the manifest")
        for item, entry in zip(listed, members, strict=True):
            h, n = hashlib.sha256(), 0
            for chunk in iter_content(b.f, entry):
                h.update(chunk)
                n += len(chunk)
            if h.hexdigest() != item.get("sha256") or n != item.get("size"):
                raise ZipProfileError(f"{entry.name}: SHA-256 or size differs from the manifest")
        b.read("manifest.sig")  # its CRC and size too
        return Check("manifest", OK, f"{len(listed)} files listed, every SHA-256 and size matches; "
                     f"archive prefix ({prefix} bytes) SHA-256 matches",
                     [f"manifest.json SHA-256 {hashlib.sha256(raw).hexdigest()}"])

    def _key(self, raw_key: bytes, manifest: dict[str, Any], bundle: dict[str, Any], report: bytes) -> Check:
        fp = signature.fingerprint(raw_key)
        self.result.fingerprint = fp
        problems = []
        if manifest.get("key_fingerprint") != fp:
            problems.append("manifest.json")
        if bundle.get("signing_key_fingerprint") != fp:
            problems.append("bundle.json")
        if fp.encode() not in report:
            problems.append("report.html")
        expected = (self.o.expect_fingerprint or "").replace(" ", "").replace(":", "").lower()
        if expected and expected != fp:
            problems.append("--expect-fingerprint")
        details = [f"SHA-256 of the raw Ed25519 public key: {signature.format_fingerprint(fp)}"]
        if problems:
            return Check("key", FAIL, f"public_key.pem's fingerprint differs from the one in {', '.join(problems)}",
                         details)
        if not expected:
            details.append("compare it with the fingerprint the centre published (or pass --expect-fingerprint)")
        return Check("key", OK, f"fingerprint {fp} matches manifest.json, bundle.json, report.html"
                     + (" and --expect-fingerprint" if expected else ""), details)

    def _signature(self, b: _Bundle, raw_key: bytes, manifest_bytes: bytes) -> Check:
        sig = b.read("manifest.sig")
        if len(sig) != 64 or len(raw_key) != 32:
            return Check("signature", FAIL, "manifest.sig is not a 64-byte Ed25519 signature (or no valid key)")
        verdict = signature.check_signature(raw_key, sig, manifest_bytes, use_cryptography=self.o.use_cryptography)
        directory = self.o.extract_dir
        if directory is None and self.o.run_openssl:
            directory = Path(tempfile.mkdtemp(prefix="evidence-signature-"))
        if directory is not None:
            signature.extract_signed_files(directory, manifest_bytes, sig, b.read("public_key.pem"))
        command = signature.openssl_command(directory)
        self.result.openssl_command = signature.command_text(command)
        where = (f"extracted manifest.json, manifest.sig, public_key.pem to {directory}" if directory is not None
                 else "unzip manifest.json, manifest.sig, public_key.pem from the bundle (or pass --extract-dir)")
        details = [f"independent second check with OpenSSL 3.0 or later: {where}, then run (it "
                   "must print 'Signature Verified Successfully'):", f"  {self.result.openssl_command}"]
        summary = verdict.summary
        if self.o.run_openssl:
            ok, output = signature.run_openssl(command)
            details.append(f"openssl said: {output}")
            if not ok:
                return Check("signature", FAIL, "openssl did not verify the signature over manifest.json", details)
            summary += "; and by openssl" if verdict.valid else "; openssl verified it"
        return Check("signature", OK if verdict.valid else FAIL, summary, details)

    def _torrents(self, b: _Bundle, bundle: dict[str, Any], index: TorrentIndex) -> Check:
        records = bundle.get("torrents")
        if not isinstance(records, list):
            raise ZipProfileError("bundle.json has no torrents list")
        listed = {r.get("file") for r in records if isinstance(r, dict)}
        stray = [e.name for e in b.entries if e.name.startswith("torrents/") and e.name not in listed]
        if stray:
            raise ZipProfileError(f"{stray[0]} is not described in bundle.json")
        details = []
        for record in records:
            key, torrent, what = check_record(record, b.read(str(record.get("file"))))
            index.add(key, torrent)
            ids = ", ".join(f"{n} {v.hex()}" for n, v in (("SHA-1", torrent.infohash_v1),
                                                          ("SHA-256", torrent.infohash_v2)) if v)
            details.append(f"{record.get('file')}: {torrent.version}, {ids}; {what}")
        return Check("torrents", OK, f"{len(records)} torrents: each info dict hashes to its infohashes", details)

    def _chain(self, b: _Bundle, torrents: TorrentIndex, peers: dict[tuple[str, str, int], dict[str, Any]]) -> Check:
        anchors = b.json("chain.json")
        if not isinstance(anchors, dict):
            raise ChainError("chain.json is not an object")
        checker = ChainChecker()
        if anchors.get("first_prev_hash") is not None:
            checker.start(anchors["first_prev_hash"])
        levels = [0] * 5
        transcripts: dict[str, tuple[Any, ...]] = {}
        served: dict[str, int] = {"bytes re-hashed": 0, "hash compared": 0, "whole file": 0}
        with_transcript = 0
        keys: dict[Any, str] = {}
        for line in b.lines("observations.jsonl"):
            row = _decode(line.decode("utf-8"))
            extra = checker.feed(row)
            if extra is None:
                continue
            level = row.get("level")
            if type(level) is not int or not 0 <= level <= 4 or row.get("kind") != "observation":
                raise ChainError(f"seq {row['seq']}: not an observation of level 0..4")
            levels[level] += 1
            key = keys.get(row.get("torrent"))
            if key is None:
                key = keys[row.get("torrent")] = torrents.get(row.get("torrent"))[0]
            if level >= 1 or row.get("transcript") is not None:
                verdict = self._transcript(b, row, extra, torrents, transcripts)
                with_transcript += 1
                if level >= 3:
                    served[verdict] += 1
            if extra["ip"] is not None:
                self._aggregate(peers, key, extra["ip"], extra["port"], level, row.get("observed_at"))
        self._anchors(anchors, checker)
        details = [
            f"{checker.rows} rows re-hashed (seq {checker.first_seq}..{checker.last_seq}); {checker.redacted} rows "
            f"of other cases linked by their body hash only; {checker.purged} rows with a purged address",
            f"anchored: first prev_hash {short(str(checker.first_prev_hash))}, last row_hash "
            f"{short(str(checker.last_row_hash))}, chain head at export: seq {anchors.get('head_seq')} "
            f"{short(str(anchors.get('head_hash')))}",
            "rows per level: " + ", ".join(f"{lv}: {n}" for lv, n in enumerate(levels)),
            f"{with_transcript} rows have their transcript (SHA-256 chained); {levels[3] + levels[4]} level 3-4 rows "
            f"re-checked against the metainfo ({served['bytes re-hashed']} with piece bytes re-hashed, "
            f"{served['hash compared']} by piece hash, {served['whole file']} whole files)",
        ]
        if checker.last_seq is not None and anchors.get("head_seq") != checker.last_seq:
            details.append(f"note: the chain head lies {anchors['head_seq'] - checker.last_seq} rows beyond this "
                           "segment; its head_hash cannot be re-computed from this bundle")
        return Check("chain", OK, "every row hash re-computed and linked; anchors match chain.json", details)

    def _transcript(self, b: _Bundle, row: dict[str, Any], extra: dict[str, Any], torrents: TorrentIndex,
                    cache: dict[str, tuple[Any, ...]]) -> str:
        tsha, level, seq = row.get("transcript"), row["level"], row["seq"]
        name = f"transcripts/{tsha}.json"
        if not is_hash(tsha) or name not in b.by_name:
            raise ProofError(f"seq {seq}: level {level} without its transcript ({str(tsha)[:80]})")
        cached = cache.get(tsha)
        if cached is None or (level >= 3 and cached[1] is None):
            data = b.read(name)
            if hashlib.sha256(data).hexdigest() != tsha:
                raise ProofError(f"{name}: its SHA-256 is not the one the chained row records")
            transcript = json.loads(data)
            if not isinstance(transcript, dict):
                raise ProofError(f"{name} is not an object")
            claim = {"torrent": row.get("torrent"), "level": level, "ip": extra["ip"], "port": extra["port"]}
            verdict = check_served(claim, transcript, torrents, b.piece) if level >= 3 else None
            key = torrents.get(transcript.get("infohash", row.get("torrent")))[0]
            cached = (key, verdict, transcript.get("level"), transcript.get("ip"), transcript.get("port"))
            cache[tsha] = cached
        key, verdict, t_level, ip, port = cached
        if key != torrents.get(row.get("torrent"))[0] or type(t_level) is not int or t_level < level:
            raise ProofError(f"seq {seq}: transcript {short(tsha)} is for another torrent or a lower level")
        if (extra["ip"] is not None and ip != extra["ip"]) or (extra["port"] is not None and port != extra["port"]):
            raise ProofError(f"seq {seq}: transcript {short(tsha)} is for another peer")
        return str(verdict)

    @staticmethod
    def _aggregate(peers: dict[tuple[str, str, int], dict[str, Any]], key: str, ip: str, port: int, level: int,
                   at: Any) -> None:
        peer = peers.get((key, ip, port))
        if peer is None:
            peers[(key, ip, port)] = {"level": level, "first_seen": at, "last_seen": at, "observations": 1}
            return
        if level > peer["level"]:
            peer["level"] = level
        peer["observations"] += 1
        if isinstance(at, str):
            peer["first_seen"] = min(peer["first_seen"] or at, at)
            peer["last_seen"] = max(peer["last_seen"] or at, at)

    @staticmethod
    def _anchors(anchors: dict[str, Any], checker: ChainChecker) -> None:
        for name in ("first_seq", "first_prev_hash", "last_seq", "last_row_hash"):
            if anchors.get(name) != getattr(checker, name):
                raise ChainError(f"chain.json {name} {str(anchors.get(name))[:20]} differs from the rows' "
                                 f"{str(getattr(checker, name))[:20]}")
        if anchors.get("rows") != checker.rows or anchors.get("redacted") != checker.redacted:
            raise ChainError("chain.json row counts differ from observations.jsonl")
        if checker.first_seq == 1 and checker.first_prev_hash != GENESIS_HASH:
            raise ChainError("the chain's first row must follow the genesis hash")
        head = anchors.get("head_seq")
        if checker.last_seq is not None:
            if type(head) is not int or head < checker.last_seq:
                raise ChainError("chain.json head_seq lies before the segment's last row")
            if head == checker.last_seq and anchors.get("head_hash") != checker.last_row_hash:
                raise ChainError("chain.json head_hash is not the last row's hash")

    @staticmethod
    def _peers(bundle: dict[str, Any], torrents: TorrentIndex,
               peers: dict[tuple[str, str, int], dict[str, Any]]) -> Check:
        summaries = bundle.get("peers")
        if not isinstance(summaries, list):
            raise ProofError("bundle.json has no peers list")
        seen = set()
        for s in summaries:
            if not isinstance(s, dict):
                raise ProofError("a peer summary is not an object")
            key = (torrents.get(s.get("infohash"))[0], s.get("ip"), s.get("port"))
            found = peers.get(key)  # type: ignore[arg-type]
            if found is None or key in seen:
                raise ProofError(f"peer {s.get('ip')}:{s.get('port')} has no observation in the chain, or is "
                                 "listed twice")
            seen.add(key)
            for name in ("level", "first_seen", "last_seen", "observations"):
                if s.get(name) != found[name]:
                    raise ProofError(f"peer {s.get('ip')}:{s.get('port')}: {name} {s.get(name)} but the observations "
                                     f"say {found[name]}")
        if len(seen) != len(peers):
            raise ProofError(f"{len(peers) - len(seen)} observed peers are missing from bundle.json's summaries")
        distributing = sum(1 for p in peers.values() if p["level"] >= 3)
        return Check("peers", OK, f"{len(summaries)} peer summaries agree with the observations "
                     f"({distributing} at level 3-4, i.e. distribution)")


def verify_bundle(source: str | os.PathLike[str] | bytes | BinaryIO, options: Options | None = None) -> Result:
    """Verify a bundle given as a path, its bytes, or a seekable binary file."""
    options = options or Options()
    if isinstance(source, bytes):
        return Verifier(options).run(io.BytesIO(source), len(source))
    if isinstance(source, str | os.PathLike):
        with open(source, "rb") as f:
            return Verifier(options).run(f, os.fstat(f.fileno()).st_size)
    source.seek(0, os.SEEK_END)
    size = source.tell()
    return Verifier(options).run(source, size)
