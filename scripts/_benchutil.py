"""Helpers shared by the benchmark scripts: how busy the machine is.

Benchmarks here run on small shared machines; they wait for a quiet moment
before measuring and report how busy the machine was while they did.
"""

from __future__ import annotations

import os
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


def system_busy_seconds() -> float:
    """CPU seconds all CPUs spent busy since boot (/proc/stat; 0 if unavailable)."""
    try:
        with open("/proc/stat") as handle:
            v = [int(x) for x in handle.readline().split()[1:9]]
    except (OSError, ValueError):
        return 0.0
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / CLK_TCK  # all but idle, iowait


def wait_quiet(max_seconds: float = 10.0, threshold: float = 0.2) -> float:
    """Wait (at most ``max_seconds``) until the machine is nearly idle: less than
    ``threshold`` of a core busy over half a second (after process start-up,
    writeback, ...). Return the seconds waited."""
    start = time.monotonic()
    while time.monotonic() - start < max_seconds:
        busy0 = system_busy_seconds()
        time.sleep(0.5)
        if (system_busy_seconds() - busy0) / 0.5 < threshold:
            break
    return time.monotonic() - start


def loadavg() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())
