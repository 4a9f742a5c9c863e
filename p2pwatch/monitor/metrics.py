"""Counters of the monitor, and an optional Prometheus text endpoint on 127.0.0.1 (never another address)."""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Callable, Iterable

import trio

from p2pwatch.errors import BindError

METRICS_HOST = "127.0.0.1"
#: What the listening socket is for, in a BindError (the CLI keys its advice on it).
SOCKET_PURPOSE = "the metrics endpoint"

triage_log = logging.getLogger("p2pwatch.triage")

#: The decisions of issue 13's triage, each counted as ``p2pwatch_triage_<decision>_total``.
TRIAGE_DECISIONS = ("skipped", "queued", "dropped", "rejected", "confirmed", "budget")

HELP = {
    "p2pwatch_dht_queries_received_total": "KRPC queries received by our DHT node",
    "p2pwatch_dht_queries_sent_total": "KRPC queries our DHT node sent",
    "p2pwatch_infohashes_discovered_total": "infohashes the crawler saw for the first time",
    "p2pwatch_metadata_fetched_total": "torrents whose metadata was fetched and verified",
    "p2pwatch_metadata_leads_total": "infohashes that entered the metadata pipeline",
    "p2pwatch_metadata_ok_total": "infohashes whose metadata the pipeline obtained",
    "p2pwatch_metadata_failed_total": "infohashes whose peers all failed to deliver metadata",
    "p2pwatch_metadata_timed_out_total": "infohashes whose every attempt (or the whole deadline) timed out",
    "p2pwatch_metadata_no_peers_total": "infohashes for which no peer was found",
    "p2pwatch_metadata_errors_total": "torrents whose check failed with an unexpected error (logged, skipped)",
    "p2pwatch_metadata_pipeline_errors_total": "leads whose metadata stage failed with an unexpected error (logged, "
                                               "counted as failed)",
    "p2pwatch_matches_total": "matches confirmed",
    "p2pwatch_observations_total": "observations recorded, by level",
    "p2pwatch_examinations_total": "watched torrents examined",
    "p2pwatch_triage_skipped_total": "torrents triage gave no content byte (metainfo alone)",
    "p2pwatch_triage_queued_total": "torrents triage queued for the content stages",
    "p2pwatch_triage_dropped_total": "queued torrents dropped from a full queue (lowest score first)",
    "p2pwatch_triage_rejected_total": "torrents ruled out by the one-keyframe screen or the sampled confirmation",
    "p2pwatch_triage_confirmed_total": "torrents with a confirmed match",
    "p2pwatch_triage_budget_total": "torrents whose content stages stopped at the content budget",
    "p2pwatch_content_pieces_total": "pieces the content stages asked of swarms",
    "p2pwatch_content_bytes_total": "bytes the content stages asked of swarms (charged to the budget)",
    "p2pwatch_content_errors_total": "queued torrents whose content stages failed with an unexpected error "
                                     "(logged, skipped)",
    "p2pwatch_examination_errors_total": "examinations that failed with an unexpected error (logged, retried)",
    "p2pwatch_registry_reload_errors_total": "registry reloads that failed (logged, retried whole at the next "
                                             "refresh)",
    "p2pwatch_dht_family_queries_sent_total": "KRPC queries our DHT node of this address family sent (BEP 32)",
    "p2pwatch_dht_family_queries_received_total": "KRPC queries our DHT node of this address family received",
    "p2pwatch_dht_family_responses_total": "replies to our queries, by address family",
    "p2pwatch_dht_family_timeouts_total": "our queries that got no reply in time, by address family",
    "p2pwatch_dht_family_discovered_total": "infohashes the crawler of this address family saw first",
}


def series(name: str, **labels: str) -> str:
    """The key of one labelled series in :attr:`Metrics.counters` (``name{label="value",...}``)."""
    return name + "{" + ",".join(f'{key}="{value}"' for key, value in sorted(labels.items())) + "}"


class Metrics:
    def __init__(self) -> None:
        self.counters: Counter[str] = Counter()
        self.by_level: Counter[int] = Counter()
        self.gauges: dict[str, Callable[[], float]] = {}

    def decision(self, decision: str, infohash: str, reason: str) -> None:
        """Count one triage decision and log it with its reason."""
        self.counters[f"p2pwatch_triage_{decision}_total"] += 1
        triage_log.info("triage %s %s: %s", decision, infohash, reason)

    def render(self) -> str:
        lines = []
        described: set[str] = set()
        for name, value in sorted(self.counters.items()):
            base = name.partition("{")[0]  # a labelled series: one HELP and TYPE for its metric
            if base not in described:
                described.add(base)
                if base in HELP:
                    lines.append(f"# HELP {base} {HELP[base]}")
                lines.append(f"# TYPE {base} counter")
            lines.append(f"{name} {value}")
        lines.append("# HELP p2pwatch_observations_total " + HELP["p2pwatch_observations_total"])
        lines.append("# TYPE p2pwatch_observations_total counter")
        for level in range(5):
            lines.append(f'p2pwatch_observations_total{{level="{level}"}} {self.by_level[level]}')
        for name, read in sorted(self.gauges.items()):
            lines.append(f"# TYPE {name} gauge")
            lines.append(f"{name} {read()}")
        return "\n".join(lines) + "\n"


class PerMinute:
    """Per-minute rates of counters over the last ``window`` seconds, as gauges named ``<name>_per_minute``
    (``_total`` dropped). Call :meth:`sample` regularly (the daemon does every 5 s)."""

    def __init__(self, names: Iterable[str], window: float = 60.0) -> None:
        self.names = tuple(names)
        self.window = window
        self._samples: deque[tuple[float, dict[str, int]]] = deque()

    def sample(self, metrics: Metrics, now: float) -> None:
        self._samples.append((now, {n: metrics.counters[n] for n in self.names}))
        while len(self._samples) > 2 and self._samples[1][0] <= now - self.window:
            self._samples.popleft()

    def rate(self, name: str) -> float:
        if len(self._samples) < 2:
            return 0.0
        (t0, first), (t1, last) = self._samples[0], self._samples[-1]
        return (last[name] - first[name]) * 60.0 / (t1 - t0) if t1 > t0 else 0.0

    def install(self, metrics: Metrics) -> None:
        for name in self.names:
            metrics.gauges[name.removesuffix("_total") + "_per_minute"] = lambda n=name: self.rate(n)  # type: ignore[misc]


async def serve_metrics(metrics: Metrics, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
                        ) -> None:
    """Serve ``GET /metrics`` on 127.0.0.1:port (0 picks one); reports the port through ``task_status``."""
    try:
        listeners = await trio.open_tcp_listeners(port, host=METRICS_HOST)
    except OSError as exc:
        raise BindError("TCP", METRICS_HOST, port, exc, purpose=SOCKET_PURPOSE) from exc
    task_status.started(listeners[0].socket.getsockname()[1])

    async def handle(stream: trio.SocketStream) -> None:
        try:
            with trio.move_on_after(5):
                await stream.receive_some(4096)
                body = metrics.render().encode()
                await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
                                      + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            await trio.aclose_forcefully(stream)

    await trio.serve_listeners(handle, listeners)
