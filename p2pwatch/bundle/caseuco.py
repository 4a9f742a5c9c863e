"""case.jsonld: the bundle described in CASE/UCO (Cyber-investigation Analysis Standard Expression, on the
Unified Cyber Ontology) JSON-LD, for police tools that import CASE graphs.

The graph holds the investigation (the case), the tool (p2pwatch, with version and configuration hash),
each torrent as an observable file, each match as an investigative action with its method and proof
summary, each peer of level 1 or more as an IP address observable with one investigative action spanning
its first and last observation (level 0 listings are counted per torrent, not listed: they are claims), and a
provenance record naming the bundle's signed manifest. Identifiers are deterministic (derived from the
bundle's case name and creation time), so the same bundle gives the same graph.

Departure: proof details stay in bundle.json (the graph points at it); CASE has no class for hash proofs.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from typing import Any

CONTEXT = {
    "kb": "urn:p2pwatch:",
    "case-investigation": "https://ontology.caseontology.org/case/investigation/",
    "uco-action": "https://ontology.unifiedcyberontology.org/uco/action/",
    "uco-core": "https://ontology.unifiedcyberontology.org/uco/core/",
    "uco-observable": "https://ontology.unifiedcyberontology.org/uco/observable/",
    "uco-tool": "https://ontology.unifiedcyberontology.org/uco/tool/",
    "xsd": "http://www.w3.org/2001/XMLSchema#",
}


def _time(value: Any) -> dict[str, str]:
    return {"@type": "xsd:dateTime", "@value": str(value)}


def _ref(ident: str) -> dict[str, str]:
    return {"@id": ident}


def render_case(doc: dict[str, Any], chain: dict[str, Any]) -> str:
    case = doc.get("case") or {}
    base = hashlib.sha256(f"{case.get('name')}|{doc.get('created_at')}".encode()).hexdigest()[:16]

    def ident(kind: str, *parts: Any) -> str:
        suffix = hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:16] if parts else ""
        return f"kb:{base}-{kind}" + (f"-{suffix}" if suffix else "")

    tool_id = ident("tool")
    graph: list[dict[str, Any]] = [{
        "@id": tool_id, "@type": "uco-tool:Tool", "uco-core:name": "p2pwatch",
        "uco-tool:version": str(doc.get("tool_version")), "uco-tool:toolType": "BitTorrent network monitor",
        "uco-core:description": f"configuration SHA-256 {doc.get('config_sha256')}",
    }]
    torrent_ids = {}
    for t in doc.get("torrents") or []:
        tid = ident("torrent", t.get("infohash"))
        hashes = ", ".join(f"{v} {t[f'infohash_{v}']}" for v in ("v1", "v2") if t.get(f"infohash_{v}"))
        torrent_ids[t.get("infohash")] = tid
        graph.append({
            "@id": tid, "@type": "uco-observable:File",
            "uco-core:name": str(t.get("name")),
            "uco-core:description": f"BitTorrent torrent ({t.get('version')}), infohash {hashes}; metainfo in "
                                    f"the bundle as {t.get('file')}",
            "uco-core:hasFacet": [{"@id": ident("torrent-facet", t.get("infohash")),
                                   "@type": "uco-observable:FileFacet", "uco-observable:fileName": str(t.get("file"))}],
        })
    actions = []
    for m in doc.get("matches") or []:
        aid = ident("match", m.get("id"))
        actions.append(aid)
        graph.append({
            "@id": aid, "@type": "case-investigation:InvestigativeAction",
            "uco-core:name": f"hash match {m.get('method')}",
            "uco-core:description": f"content {m.get('content_id')} matched file "
                                    f"{m.get('file_path', m.get('file_index'))} by {m.get('method')}; proof in "
                                    f"bundle.json matches[id={m.get('id')}]",
            "uco-action:instrument": [_ref(tool_id)],
            "uco-action:object": [_ref(torrent_ids[m["infohash"]])] if m.get("infohash") in torrent_ids else [],
        })
    listed: dict[str, int] = {}
    addresses: set[str] = set()
    for p in doc.get("peers") or []:
        if p.get("level", 0) < 1:
            listed[p.get("infohash")] = listed.get(p.get("infohash"), 0) + 1
            continue
        addr_id = ident("address", p.get("ip"))
        if addr_id not in addresses:
            addresses.add(addr_id)
            kind = "IPv6Address" if ipaddress.ip_address(str(p.get("ip"))).version == 6 else "IPv4Address"
            graph.append({
                "@id": addr_id, "@type": f"uco-observable:{kind}",
                "uco-core:hasFacet": [{"@id": ident("address-facet", p.get("ip")),
                                       "@type": f"uco-observable:{kind}Facet",
                                       "uco-observable:addressValue": str(p.get("ip"))}],
            })
        aid = ident("peer", p.get("infohash"), p.get("ip"), p.get("port"))
        actions.append(aid)
        graph.append({
            "@id": aid, "@type": "case-investigation:InvestigativeAction",
            "uco-core:name": f"peer observed at level {p.get('level')} ({p.get('level_name')})",
            "uco-core:description": f"{p.get('ip')} port {p.get('port')}: level {p.get('level')} "
                                    + ("(distribution: a piece verified from this peer alone)" if p.get("distribution")
                                       else "(lead, not distribution)")
                                    + f"; {p.get('observations')} chained observations; client {p.get('client')}",
            "uco-action:startTime": _time(p.get("first_seen")), "uco-action:endTime": _time(p.get("last_seen")),
            "uco-action:instrument": [_ref(tool_id)],
            "uco-action:object": [_ref(torrent_ids[p["infohash"]])] if p.get("infohash") in torrent_ids else [],
            "uco-action:result": [_ref(addr_id)],
        })
    for infohash, count in sorted(listed.items()):
        aid = ident("listings", infohash)
        actions.append(aid)
        graph.append({
            "@id": aid, "@type": "case-investigation:InvestigativeAction",
            "uco-core:name": "peer listings (level 0)",
            "uco-core:description": f"{count} addresses were listed by the DHT, trackers or PEX for {infohash}; "
                                    "listings are claims, not evidence of distribution (see bundle.json peers)",
            "uco-action:instrument": [_ref(tool_id)],
            "uco-action:object": [_ref(torrent_ids[infohash])] if infohash in torrent_ids else [],
        })
    provenance = ident("provenance")
    graph.append({
        "@id": provenance, "@type": "case-investigation:ProvenanceRecord",
        "case-investigation:exhibitNumber": f"{case.get('name')} {doc.get('created_at')}",
        "uco-core:description": "evidence bundle signed (Ed25519 over manifest.json) by the key with fingerprint "
                                f"{doc.get('signing_key_fingerprint')}; observation chain seq {chain.get('first_seq')}"
                                f"..{chain.get('last_seq')}, last row hash {chain.get('last_row_hash')}",
        "uco-core:object": [_ref(i) for i in torrent_ids.values()] + [_ref(a) for a in actions],
    })
    graph.append({
        "@id": ident("investigation"), "@type": "case-investigation:Investigation",
        "uco-core:name": str(case.get("name")),
        "case-investigation:focus": ["distribution of registered non-consensual intimate content on BitTorrent"],
        "uco-core:object": [_ref(provenance), _ref(tool_id)] + [_ref(a) for a in actions],
    })
    nodes = ",\n  ".join(json.dumps(node, ensure_ascii=False) for node in graph)
    return f'{{\n "@context": {json.dumps(CONTEXT, indent=1)},\n "@graph": [\n  {nodes}\n ]\n}}\n'
