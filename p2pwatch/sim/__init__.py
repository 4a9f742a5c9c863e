"""A time-based simulation of the mainline DHT on one machine (issue 12): no sockets, a simulated clock.

The real code runs in it unchanged: :class:`~p2pwatch.dht.node.DHTNode` (traversal, routing table, rate
limiter), the BEP 51 :class:`~p2pwatch.dht.crawler.Crawler` and the monitor's
:class:`~p2pwatch.monitor.pipeline.MetadataPipeline`. What is simulated is everything on the far side of the
socket: a population of remote nodes (numpy arrays, routing tables built lazily), their replies, round
trip times, churn, stored peers and the BEP 9 peers that do or do not hand out metadata.

The discrete-event clock is trio's :class:`trio.testing.MockClock` with ``autojump_threshold=0``: whenever
every task waits, time jumps to the next deadline, so simulated seconds cost only the CPU the code uses.

Modules: :mod:`.population` (nodes, torrents, churn, ground truth), :mod:`.tables` (lazily built remote
routing tables), :mod:`.network` (the datagram socket our node uses and the remote nodes' answers),
:mod:`.peers` (simulated BEP 9 metadata peers), :mod:`.scenario` (a whole run and its report),
:mod:`.determinism` (trio's scheduler seeded, so a seed gives one report).
"""
