"""What ``workers: auto`` means: a DNS worker process per CPU this process may use, counting a
container's CPU quota (cgroup v2 ``cpu.max``), at most MAX_WORKERS."""

from __future__ import annotations

import os
from pathlib import Path

MAX_WORKERS = 64


def auto_workers() -> int:
    """``workers: auto``: a DNS worker process per CPU this process may use; none (answer in
    the main process) when there is only one. A container's CPU quota (cgroup v2 ``cpu.max``)
    counts, not only the host's CPUs it may be scheduled on."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    try:
        quota = cgroup_cpus(Path("/sys/fs/cgroup/cpu.max").read_text())
    except OSError:
        quota = None
    if quota is not None:
        cpus = min(cpus, quota)
    return min(cpus, MAX_WORKERS) if cpus > 1 else 0


def cgroup_cpus(cpu_max: str) -> int | None:
    """CPUs a cgroup v2 ``cpu.max`` line allows ("200000 100000" -> 2), None without a quota."""
    parts = cpu_max.split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    try:
        quota, period = int(parts[0]), int(parts[1])
    except ValueError:
        return None
    return max(1, -(-quota // period)) if period > 0 else None
