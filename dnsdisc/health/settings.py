"""What the health monitor is told by the config (``health:``); built by the config loader."""

from __future__ import annotations

from dataclasses import dataclass, field

from dnsdisc.netaddr import DEFAULT_CHECK_NETWORKS, NetRules


def _default_networks() -> NetRules:
    return NetRules.parse(DEFAULT_CHECK_NETWORKS, "", "health.check_networks")


@dataclass(frozen=True, slots=True)
class Protection:
    """Self-preservation (Eureka's idea): when more than ``expire_fraction`` of the leased
    instances (at least ``min_leased`` of them) miss their lease within ``window`` seconds, the
    fault is taken to be on this side (its network, a stalled host): leases stop expiring until
    heartbeats come back."""

    expire_fraction: float = 0.5
    window: float = 30.0
    min_leased: int = 5


@dataclass(frozen=True, slots=True)
class HealthSettings:
    warning_weight: float = 0.25  # weight factor for instances in warning
    flap_window: float = 60.0  # seconds in which status changes are counted
    flap_threshold: int = 4  # that many changes in the window make an instance flapping
    flap_stable: float = 30.0  # a flapping instance is released after this long without change
    flap_hold: str = "out"  # a flapping instance is held out of the answers, or "in" them
    tick: float = 0.1  # how often leases, deregistration and timed changes are looked at
    # Where checks registered over the API may connect (config and zone-file checks are trusted).
    check_networks: NetRules = field(default_factory=_default_networks)
    min_check_interval: float = 1.0  # and their shortest interval
    # Budgets shared by all checks, so that no registrant's checks can crowd out the others':
    # checks started per second (all of them), checks in flight at once, and in flight per service.
    checks_per_second: float = 200.0
    max_concurrent_checks: int = 256
    max_concurrent_checks_per_service: int = 16
    protection: Protection | None = None  # off by default
