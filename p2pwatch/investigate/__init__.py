"""One examination of a torrent: lookup (DHT + trackers + metadata + matches + probes), metadata fetch,
registry operations (cases, content, watch list), swarm status, peer enrichment (GeoIP) and export.

Place in the flow (docs/ARCHITECTURE.md): the operations the CLI, the monitor and the web app share.
"""
