"""What the health monitor is told by the config (``health:``); built by the config loader."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class HealthSettings:
    warning_weight: float = 0.25  # weight factor for instances in warning
    flap_window: float = 60.0  # seconds in which status changes are counted
    flap_threshold: int = 4  # that many changes in the window make an instance flapping
    flap_stable: float = 30.0  # a flapping instance is released after this long without change
    flap_hold: str = "out"  # a flapping instance is held out of the answers, or "in" them
    tick: float = 0.1  # how often leases, deregistration and timed changes are looked at
