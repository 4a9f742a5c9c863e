"""report.html: the bundle explained for police, in one self-contained page (no scripts, no external links).

It says what each evidence level means (DESIGN.md principle 4: only levels 3 and 4 show distribution),
how to verify the bundle with the stand-alone verifier or with OpenSSL and sha256sum, the signing key's
fingerprint, the torrents and match proofs, the distributing peers and the leads, the chain anchors and the
swarm timeline. Every value comes from bundle.json / chain.json, which the verifier checks.
"""

from __future__ import annotations

from html import escape
from typing import Any

LEVELS = [
    (0, "listed", "The address appeared in a DHT reply, a tracker peer list or PEX. Anyone can forge this; it is "
     "a claim, recorded with who made it.", "lead"),
    (1, "connected", "A BitTorrent handshake completed and the peer echoed the torrent's infohash.", "lead"),
    (2, "advertised", "The peer's bitfield / HAVE messages claimed pieces of the matched content.", "lead"),
    (3, "served", "At least one piece was downloaded from this single peer and verified against the piece hash "
     "in the torrent's metainfo.", "distribution"),
    (4, "served-whole", "The whole matched file was downloaded from this single peer and verified.", "distribution"),
]
MAX_LEAD_ROWS = 2000
_STYLE = """
body{font-family:sans-serif;max-width:70em;margin:2em auto;color:#222;line-height:1.4}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #bbb;padding:.25em .5em;text-align:left;
vertical-align:top}th{background:#eee}code,.mono{font-family:monospace;word-break:break-all}
.box{border:2px solid #444;padding:.5em 1em;margin:1em 0}.dist{background:#fde8e8}.lead{background:#f4f4f4}
"""


def _e(value: Any) -> str:
    return escape("" if value is None else str(value))


def _table(headers: list[str], rows: list[list[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><tr>{head}</tr>{body}</table>'


def _proof_text(match: dict[str, Any]) -> str:
    proof = match.get("proof") or {}
    method = match.get("method")
    if method == "exact-metadata":
        if proof.get("kind") == "v2-pieces-root":
            return f"v2 pieces root {proof.get('pieces_root')} equals the registered root (no content fetched)"
        return (f"{len(proof.get('piece_hashes') or [])} v1 piece hashes from piece {proof.get('first_piece')} equal "
                "the registered table (no content fetched)")
    if method == "exact-piece":
        return (f"piece {proof.get('piece_index')} verified against the metainfo; {len(proof.get('blocks') or [])} "
                "16 KiB blocks equal the registered leaf hashes")
    if method == "perceptual":
        return (f"{proof.get('matched_frames')} of {len(proof.get('frames') or [])} frames within "
                f"{proof.get('algorithm', 'perceptual')} distance {proof.get('threshold')} (needs "
                f"{proof.get('min_frames', 1)})")
    return str(method)


def render_report(doc: dict[str, Any], chain: dict[str, Any]) -> str:
    case = doc.get("case") or {}
    fp = str(doc.get("signing_key_fingerprint"))
    grouped = " ".join(fp[i : i + 4] for i in range(0, len(fp), 4))
    peers = doc.get("peers") or []
    dist = [p for p in peers if p.get("level", 0) >= 3]
    leads = [p for p in peers if p.get("level", 0) < 3]
    bundle_name = f"{_e(case.get('name') or 'bundle')}.zip"
    parts = [
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        f"<title>Evidence bundle: {_e(case.get('name'))}</title><style>{_STYLE}</style></head><body>",
        f"<h1>Evidence bundle: case {_e(case.get('name'))}</h1>",
        '<div class="box">',
        f"<p>Created {_e(doc.get('created_at'))} by p2pwatch {_e(doc.get('tool_version'))}. Configuration SHA-256 "
        f"<code>{_e(doc.get('config_sha256'))}</code>.</p>",
        "<p>Signed by the centre's Ed25519 key with fingerprint (SHA-256 of the raw public key):<br>"
        f"<code>{_e(fp)}</code><br>(in groups: <code>{_e(grouped)}</code>).<br>Compare it with the fingerprint the "
        "centre published or gave you by another channel; a bundle signed by another key is not from the centre.</p>",
        f"<p>{len(dist)} peers reached level 3-4 (distribution); {len(leads)} peers are leads only (levels 0-2). "
        f"{_e(doc.get('observations', {}).get('rows'))} observations, chained and signed.</p></div>",
        "<h2>What the evidence levels mean</h2>",
        "<p><strong>Only levels 3 and 4 are evidence that a peer distributed the content.</strong> Levels 0-2 are "
        "leads: a DHT or tracker listing can be forged by anyone, and a handshake or a bitfield shows no data.</p>",
        _table(["level", "name", "what was observed", "counts as"], [list(r) for r in LEVELS]),
        "<p>No person viewed the content. Matches are proven by hashes: the registered fingerprints (hashes of the "
        "victim's file, never the file) are compared with the hashes in the torrent's metainfo or of one verified "
        "piece; perceptual matches compare frame hashes computed in memory.</p>",
        "<h2>How to verify this bundle</h2>",
        "<ol><li>With Python 3.11 or later and the stand-alone verifier shipped with p2pwatch (the <code>evidence"
        "</code> package, standard library only):<br>"
        f"<code>python3 -m evidence verify {bundle_name} --expect-fingerprint {_e(fp)}</code><br>"
        "It prints each check, the Ed25519 signature included, and exits 0 only when all hold. It needs no package "
        "to be installed: from a copy of the <code>evidence</code> folder alone, "
        f"<code>python3 -I -S evidence verify {bundle_name}</code> works on a bare Python.</li>",
        f"<li>With standard tools: <code>unzip {bundle_name}</code>, then check the signature with OpenSSL 3:<br>"
        "<code>openssl pkeyutl -verify -pubin -inkey public_key.pem -rawin -in manifest.json -sigfile "
        "manifest.sig</code> (must print <em>Signature Verified Successfully</em>),<br>compare "
        "<code>sha256sum</code> of every file with <code>manifest.json</code>, and check "
        "<code>head -c PREFIX_BYTES " + bundle_name + " | sha256sum</code> against its <code>archive</code> entry. "
        "Each transcript's file name is its SHA-256, which the chained observation rows record.</li>",
        "<li>Compare the key fingerprint above with the one the centre published.</li></ol>",
    ]
    parts.append("<h2>Torrents</h2>")
    parts.append(_table(["infohash", "name", "version", "files"], [
        [t.get("infohash"), t.get("name"), t.get("version"), len(t.get("files") or [])]
        for t in doc.get("torrents", [])]))
    parts.append("<h2>Matches with registered content</h2>")
    parts.append(_table(["id", "content", "torrent", "file", "method", "proof", "bytes fetched"], [
        [m.get("id"), m.get("content_id"), m.get("infohash"), m.get("file_path", m.get("file_index")), m.get("method"),
         _proof_text(m), m.get("bytes_fetched")] for m in doc.get("matches", [])]))
    peer_headers = ["level", "ip", "port", "torrent", "first seen", "last seen", "client", "country", "ASN",
                    "sources", "observations"]

    def peer_row(p: dict[str, Any]) -> list[Any]:
        return [f"{p.get('level')} {p.get('level_name', '')}", p.get("ip"), p.get("port"), p.get("infohash"),
                p.get("first_seen"), p.get("last_seen"), p.get("client"), p.get("country"), p.get("asn"),
                ", ".join(p.get("sources") or []), p.get("observations")]

    parts.append("<h2>Peers that distributed the content (levels 3-4)</h2>")
    parts.append(_table(peer_headers, [peer_row(p) for p in dist], "dist") if dist else "<p>None.</p>")
    parts.append("<h2>Leads (levels 0-2, not evidence of distribution)</h2>")
    shown = [peer_row(p) for p in leads[:MAX_LEAD_ROWS]]
    parts.append(_table(peer_headers, shown, "lead") if leads else "<p>None.</p>")
    if len(leads) > MAX_LEAD_ROWS:
        parts.append(f"<p>{len(leads) - MAX_LEAD_ROWS} more leads are listed in bundle.json.</p>")
    legend = (doc.get("timeline") or {}).get("series") or []
    parts.append("<h2>Swarm timeline</h2><p><img src=\"timeline.png\" alt=\"peer counts over time\" "
                 "style=\"max-width:100%\"></p>")
    parts.append(_table(["line", "colour", "torrent", "source", "samples"], [
        [s.get("number"), s.get("colour"), s.get("infohash"), s.get("source"), s.get("samples")] for s in legend]))
    parts.append("<h2>Observation chain</h2>")
    parts.append(_table(["field", "value"], [[k, chain.get(k)] for k in (
        "algorithm", "first_seq", "first_prev_hash", "last_seq", "last_row_hash", "rows", "redacted", "head_seq",
        "head_hash")]))
    allow = bool(case.get("allow_content"))
    parts.append(f"<p>{doc.get('transcripts')} probe transcripts; {len(doc.get('pieces') or [])} verified pieces, "
                 + ("with their bytes (the case allows it)." if allow else "as hashes only (no content bytes).")
                 + "</p></body></html>\n")
    return "\n".join(parts)
