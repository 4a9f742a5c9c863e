"""The monitor daemon: crawl, fetch metadata, match, watch, record (issue 6, DESIGN.md data flow)."""
