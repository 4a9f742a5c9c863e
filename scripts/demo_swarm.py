#!/usr/bin/env python3
"""Start the demo swarm on loopback and keep it running until Ctrl-C (a playground for the commands).

Prints the bootstrap addresses and infohashes; then, in another terminal, e.g.:

    p2pwatch --home /tmp/pw db upgrade
    p2pwatch --home /tmp/pw lookup INFOHASH --bootstrap 127.0.44.7:PORT --allow-local --bind 127.0.44.100
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from p2pwatch.testswarm.demoswarm import DemoContent, start_demo_swarm, stop_demo_swarm


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="p2pwatch-swarm-") as tmp:
        content = DemoContent.generate(Path(tmp) / "content")
        demo = start_demo_swarm(content)
        try:
            print("bootstrap:", " ".join(f"--bootstrap {b}" for b in demo.bootstrap), "--allow-local")
            print("registered video (register it with `p2pwatch register`):", content.registered)
            for t in demo.torrents:
                seeders = ", ".join(f"{s.ip}:{s.port}" for s in t.seeders)
                print(f"{t.label:10} {t.infohash}  {t.metainfo.name}  seeded by {seeders}")
            print("Ctrl-C stops the swarm")
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        finally:
            stop_demo_swarm(demo)


if __name__ == "__main__":
    main()
