"""report.html: the bundle explained for police, in one self-contained page (no scripts, no external links).

It says what each evidence level means (DESIGN.md principle 4: only levels 3 and 4 show distribution),
how to verify the bundle with the stand-alone verifier or with OpenSSL and sha256sum, the signing key's
fingerprint, the torrents and match proofs, the distributing peers and the leads, the chain anchors and the
swarm timeline. Every value comes from bundle.json / chain.json, which the verifier checks.
"""

from __future__ import annotations

from html import escape
from typing import Any

from p2pwatch.locale import N_, local_time, reset_language, set_language
from p2pwatch.locale import tr as _

LEVELS = [
    (0, N_("listed"), N_("The address appeared in a DHT reply, a tracker peer list or PEX. Anyone can forge this; it "
     "is a claim, recorded with who made it."), N_("lead")),
    (1, N_("connected"), N_("A BitTorrent handshake completed and the peer echoed the torrent's infohash."),
     N_("lead")),
    (2, N_("advertised"), N_("The peer's bitfield / HAVE messages claimed pieces of the matched content."),
     N_("lead")),
    (3, N_("served"), N_("At least one piece was downloaded from this single peer and verified against the piece "
     "hash in the torrent's metainfo."), N_("distribution")),
    (4, N_("served-whole"), N_("The whole matched file was downloaded from this single peer and verified."),
     N_("distribution")),
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


def _h(tag: str, text: str) -> str:
    return f"<{tag}>{_e(text)}</{tag}>"


def _table(headers: list[str], rows: list[list[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><tr>{head}</tr>{body}</table>'


def _proof_text(match: dict[str, Any]) -> str:
    proof = match.get("proof") or {}
    method = match.get("method")
    if method == "exact-metadata":
        if proof.get("kind") == "v2-pieces-root":
            return _("v2 pieces root %(root)s equals the registered root (no content fetched)",
                     root=proof.get("pieces_root"))
        return _("%(n)s v1 piece hashes from piece %(first)s equal the registered table (no content fetched)",
                 n=len(proof.get("piece_hashes") or []), first=proof.get("first_piece"))
    if method == "exact-piece":
        return _("piece %(i)s verified against the metainfo; %(n)s 16 KiB blocks equal the registered leaf hashes",
                 i=proof.get("piece_index"), n=len(proof.get("blocks") or []))
    if method == "perceptual":
        return _("%(m)s of %(n)s frames within %(algorithm)s distance %(d)s (needs %(min)s)",
                 m=proof.get("matched_frames"), n=len(proof.get("frames") or []),
                 algorithm=proof.get("algorithm", "perceptual"), d=proof.get("threshold"),
                 min=proof.get("min_frames", 1))
    return str(method)


def render_report(doc: dict[str, Any], chain: dict[str, Any], *, language: str = "en",
                  time_zone: str = "UTC") -> str:
    """The page in ``language`` (ko or en), times shown in ``time_zone`` beside the UTC values they come from."""
    token = set_language(language)
    try:
        return _render(doc, chain, language, time_zone)
    finally:
        reset_language(token)


def _render(doc: dict[str, Any], chain: dict[str, Any], language: str, time_zone: str) -> str:
    def when(value: Any) -> str:
        return local_time(value, time_zone) if value else ""

    case = doc.get("case") or {}
    fp = str(doc.get("signing_key_fingerprint"))
    grouped = " ".join(fp[i : i + 4] for i in range(0, len(fp), 4))
    peers = doc.get("peers") or []
    dist = [p for p in peers if p.get("level", 0) >= 3]
    leads = [p for p in peers if p.get("level", 0) < 3]
    bundle_name = f"{_e(case.get('name') or 'bundle')}.zip"
    parts = [
        f"<!DOCTYPE html><html lang=\"{_e(language)}\"><head><meta charset=\"utf-8\">",
        _h("title", _("Evidence bundle: %(case)s", case=case.get("name"))) + f"<style>{_STYLE}</style></head><body>",
        _h("h1", _("Evidence bundle: case %(case)s", case=case.get("name"))),
        '<div class="box">',
        "<p>" + _("Created %(at)s (%(local)s) by p2pwatch %(version)s. Configuration SHA-256 %(config)s.",
                  at=_e(doc.get("created_at")), local=_e(when(doc.get("created_at"))),
                  version=_e(doc.get("tool_version")), config=f"<code>{_e(doc.get('config_sha256'))}</code>") + "</p>",
        "<p>" + _("Signed by the centre's Ed25519 key with fingerprint (SHA-256 of the raw public key):") +
        f"<br><code>{_e(fp)}</code><br>" + _("(in groups: %(groups)s).", groups=f"<code>{_e(grouped)}</code>") +
        "<br>" + _("Compare it with the fingerprint the centre published or gave you by another channel; a bundle "
                   "signed by another key is not from the centre.") + "</p>",
        "<p>" + _("%(dist)s peers reached level 3-4 (distribution); %(leads)s peers are leads only (levels 0-2). "
                  "%(rows)s observations, chained and signed.", dist=len(dist), leads=len(leads),
                  rows=_e(doc.get("observations", {}).get("rows"))) + "</p></div>",
        _h("h2", _("What the evidence levels mean")),
        "<p><strong>" + _e(_("Only levels 3 and 4 are evidence that a peer distributed the content.")) +
        "</strong> " + _e(_("Levels 0-2 are leads: a DHT or tracker listing can be forged by anyone, and a handshake "
                            "or a bitfield shows no data.")) + "</p>",
        _table([_("level"), _("name"), _("what was observed"), _("counts as")],
               [[n, _(name), _(text), _(kind)] for n, name, text, kind in LEVELS]),
        "<p>" + _e(_("No person viewed the content. Matches are proven by hashes: the registered fingerprints (hashes "
                     "of the victim's file, never the file) are compared with the hashes in the torrent's metainfo "
                     "or of one verified piece; perceptual matches compare frame hashes computed in memory.")) + "</p>",
        _h("h2", _("How to verify this bundle")),
        "<ol><li>" + _("With Python 3.11 or later and the stand-alone verifier shipped with p2pwatch (the %(package)s "
                       "package, standard library only):", package="<code>evidence</code>") + "<br>"
        f"<code>python3 -m evidence verify {bundle_name} --expect-fingerprint {_e(fp)}</code><br>" +
        _("It prints each check, the Ed25519 signature included, and exits 0 only when all hold. It needs no "
          "package to be installed: from a copy of the %(folder)s folder alone, %(command)s works on a bare Python.",
          folder="<code>evidence</code>", command=f"<code>python3 -I -S evidence verify {bundle_name}</code>") +
        "</li>",
        "<li>" + _("With standard tools: %(unzip)s, then check the signature with OpenSSL 3:",
                   unzip=f"<code>unzip {bundle_name}</code>") + "<br>"
        "<code>openssl pkeyutl -verify -pubin -inkey public_key.pem -rawin -in manifest.json -sigfile "
        "manifest.sig</code> " + _("(must print %(ok)s),", ok="<em>Signature Verified Successfully</em>") + "<br>" +
        _("compare %(sha)s of every file with %(manifest)s, and check %(head)s against its %(archive)s entry. Each "
          "transcript's file name is its SHA-256, which the chained observation rows record.",
          sha="<code>sha256sum</code>", manifest="<code>manifest.json</code>",
          head=f"<code>head -c PREFIX_BYTES {bundle_name} | sha256sum</code>", archive="<code>archive</code>") +
        "</li>",
        "<li>" + _e(_("Compare the key fingerprint above with the one the centre published.")) + "</li></ol>",
    ]
    parts.append(_h("h2", _("Torrents")))
    parts.append(_h("p", _("A torrent found on the network comes as its info dict alone (BEP 9): its SHA-1 and "
                           "SHA-256 are the infohashes; the v2 piece layers, outside the info dict, are in the bundle "
                           "only where listed.")))
    parts.append(_table([_("infohash"), _("name"), _("version"), _("files"), _("metainfo"),
                         _("piece layers missing")], [
        [t.get("infohash"), t.get("name"), t.get("version"), len(t.get("files") or []), t.get("metainfo"),
         ", ".join((t.get("piece_layers") or {}).get("missing") or []) or _("none")]
        for t in doc.get("torrents", [])]))
    parts.append(_h("h2", _("Matches with registered content")))
    parts.append(_table(["id", _("content"), _("torrent"), _("file"), _("method"), _("proof"), _("bytes fetched")], [
        [m.get("id"), m.get("content_id"), m.get("infohash"), m.get("file_path", m.get("file_index")), m.get("method"),
         _proof_text(m), m.get("bytes_fetched")] for m in doc.get("matches", [])]))
    peer_headers = [_("level"), "IP", _("port"), _("torrent"), _("first seen"), _("last seen"), _("client"),
                    _("country"), "ASN", _("sources"), _("observations")]

    def peer_row(p: dict[str, Any]) -> list[Any]:
        level_name = _(str(p["level_name"])) if p.get("level_name") else ""
        return [f"{p.get('level')} {level_name}", p.get("ip"),
                p.get("port"), p.get("infohash"), when(p.get("first_seen")), when(p.get("last_seen")), p.get("client"),
                p.get("country"), p.get("asn"),
                ", ".join(p.get("sources") or []), p.get("observations")]

    none = _h("p", _("None."))
    parts.append(_h("h2", _("Peers that distributed the content (levels 3-4)")))
    parts.append(_table(peer_headers, [peer_row(p) for p in dist], "dist") if dist else none)
    parts.append(_h("h2", _("Leads (levels 0-2, not evidence of distribution)")))
    shown = [peer_row(p) for p in leads[:MAX_LEAD_ROWS]]
    parts.append(_table(peer_headers, shown, "lead") if leads else none)
    if len(leads) > MAX_LEAD_ROWS:
        parts.append(_h("p", _("%(n)s more leads are listed in bundle.json.", n=len(leads) - MAX_LEAD_ROWS)))
    parts.append(_h("p", _("Times are shown in %(zone)s.", zone=time_zone)))
    legend = (doc.get("timeline") or {}).get("series") or []
    alt = _e(_("peer counts over time"))
    parts.append(_h("h2", _("Swarm timeline")) + f'<p><img src="timeline.png" alt="{alt}" style="max-width:100%"></p>')
    parts.append(_table([_("line"), _("colour"), _("torrent"), _("source"), _("samples")], [
        [s.get("number"), s.get("colour"), s.get("infohash"), s.get("source"), s.get("samples")] for s in legend]))
    parts.append(_h("h2", _("Observation chain")))
    parts.append(_table([_("field"), _("value")], [[k, chain.get(k)] for k in (
        "algorithm", "first_seq", "first_prev_hash", "last_seq", "last_row_hash", "rows", "redacted", "head_seq",
        "head_hash")]))
    allow = bool(case.get("allow_content"))
    pieces = len(doc.get("pieces") or [])
    parts.append("<p>" + _e(_("%(t)s probe transcripts; %(p)s verified pieces, with their bytes (the case allows it).",
                              t=doc.get("transcripts"), p=pieces) if allow else
                            _("%(t)s probe transcripts; %(p)s verified pieces, as hashes only (no content bytes).",
                              t=doc.get("transcripts"), p=pieces)) + "</p></body></html>\n")
    return "\n".join(parts)
