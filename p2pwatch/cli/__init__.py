"""The ``p2pwatch`` command line (docs/CLI.md): one module per command group, ``root`` holds the group,
``options`` the shared options and error handling. ``main`` is the console-script entry point.

Stage in the flow: the outermost layer. Every command here parses arguments, calls one function of
``investigate``, ``dht``, ``probe``, ``storage``, ``bundle`` or ``monitor``, and prints its result; no logic of
its own beyond presentation.
"""

from __future__ import annotations

from p2pwatch.cli import cases, db, demo, dht, evidence, fingerprint, lookup, monitor, probe, probe_peer, reports
from p2pwatch.cli.root import main

# ``probe peer`` adds itself to the ``probe`` group by its decorator; importing the module is enough.
_ = probe_peer

for _command in (dht.dht, probe.probe, fingerprint.fingerprint, db.db, evidence.verify, evidence.keys,
                 cases.case, cases.register, cases.watch_command, cases.matches, lookup.lookup_command,
                 monitor.monitor, reports.peers, reports.timeline, reports.export, demo.demo):
    main.add_command(_command)

__all__ = ["main"]
