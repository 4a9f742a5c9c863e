"""Benchmark the pure-Python Ed25519 verifier (evidence/ed25519.py, RFC 8032) against ``cryptography``.

Goal (issue 10): verifying one signature in pure Python takes "a few milliseconds", so that a bare Python
checks a bundle's signature without a noticeable wait. Each run signs a random manifest-sized message with a
fresh key (``cryptography``) and times one verification by each implementation (CPU time of this process,
and wall-clock). A bundle needs exactly one verification.

Usage: python scripts/bench_ed25519.py [--signatures 200] [--message-bytes 8192]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

GOAL_MS = 10.0  # "a few milliseconds" for one verification, on one core of a shared machine


def _time(func: Callable[[], bool]) -> tuple[float, float, bool]:
    wall, cpu = time.perf_counter(), time.process_time()
    ok = func()
    return (time.perf_counter() - wall) * 1000, (time.process_time() - cpu) * 1000, ok


def main() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from evidence import ed25519
    from evidence.signature import verify_with_cryptography

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--signatures", type=int, default=200)
    parser.add_argument("--message-bytes", type=int, default=8192, help="a bundle's manifest.json is ~2-50 KB")
    args = parser.parse_args()
    timings: dict[str, list[float]] = {"pure wall": [], "pure cpu": [], "cryptography wall": []}
    for _ in range(args.signatures):
        key = Ed25519PrivateKey.generate()
        raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        message = os.urandom(args.message_bytes)
        signature = key.sign(message)
        wall, cpu, ok = _time(lambda: ed25519.verify(raw, signature, message))  # noqa: B023 - called at once
        if not ok:
            raise SystemExit("the pure-Python verifier rejected a valid signature")
        timings["pure wall"].append(wall)
        timings["pure cpu"].append(cpu)
        wall, _, ok = _time(lambda: verify_with_cryptography(raw, signature, message))  # noqa: B023
        if not ok:
            raise SystemExit("cryptography rejected a valid signature")
        timings["cryptography wall"].append(wall)
    print(f"{'one verification':<20} {'n':>5} {'min ms':>8} {'median ms':>10} {'p95 ms':>8} {'max ms':>8}")
    summary = {}
    for name, values in timings.items():
        values.sort()
        p95 = values[min(len(values) - 1, int(len(values) * 0.95))]
        median = statistics.median(values)
        summary[name] = {"min_ms": round(values[0], 3), "median_ms": round(median, 3), "p95_ms": round(p95, 3),
                         "max_ms": round(values[-1], 3)}
        print(f"{name:<20} {len(values):>5} {values[0]:>8.2f} {median:>10.2f} {p95:>8.2f} {values[-1]:>8.2f}")
    pure = summary["pure cpu"]["median_ms"]
    print(f"goal: one pure-Python verification <= {GOAL_MS:.0f} ms (median CPU time): "
          f"{'met' if pure <= GOAL_MS else 'NOT met'}")
    print(f"message {args.message_bytes} bytes; machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    print(json.dumps({"bench": "ed25519", "signatures": args.signatures, "message_bytes": args.message_bytes,
                      "goal_ms": GOAL_MS, "goal_met": pure <= GOAL_MS, **{k.replace(" ", "_"): v
                                                                          for k, v in summary.items()}}))


if __name__ == "__main__":
    main()
