"""What the DNS face knows of services: neutral, read-only shapes that the registry's values
(and a worker's copies of them) satisfy structurally. The answer code is written against these
alone, so it never imports the registry, the config or a store (CoreDNS's ``msg.Service``).

Glossary: a *member* is one instance as the answers show it (``MemberView``); the main process's
health monitor makes them (``health.monitor.Member``), a worker rebuilds them from the feed
(``workers.replica.RemoteMember``, sent as a ``workers.protocol.MemberFrame`` tuple). An *answer
sink* is what the registry's changes are rebuilt into (``AnswerSink``): the answer index in this
process, or the worker pool that sends them to every worker's index.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class InstanceView(Protocol):
    """A registered instance: what its records are built from."""

    @property
    def service(self) -> str: ...

    @property
    def id(self) -> str: ...

    @property
    def address(self) -> str: ...

    @property
    def port(self) -> int: ...

    @property
    def protocol(self) -> str: ...

    @property
    def tags(self) -> tuple[str, ...]: ...

    @property
    def meta(self) -> tuple[tuple[str, str], ...]: ...

    @property
    def is_ipv6(self) -> bool: ...

    @property
    def zone(self) -> str | None: ...


class HttpsView(Protocol):
    """A service's HTTPS SvcParams (RFC 9460) beside those each instance brings."""

    @property
    def alpn(self) -> tuple[str, ...]: ...

    @property
    def no_default_alpn(self) -> bool: ...

    @property
    def port(self) -> int | None:
        """None: each instance's own port."""
        ...

    @property
    def ech(self) -> bytes | None: ...


class ServiceView(Protocol):
    """A service's settings as its answers use them."""

    @property
    def name(self) -> str: ...

    @property
    def policy(self) -> str: ...

    @property
    def max_answers(self) -> int | None: ...

    @property
    def ttl(self) -> int: ...

    @property
    def meta(self) -> tuple[tuple[str, str], ...]: ...

    @property
    def locality(self) -> str: ...

    @property
    def locality_min_healthy(self) -> int: ...

    @property
    def sticky_prefix(self) -> int: ...

    @property
    def sticky_prefix_v6(self) -> int: ...

    @property
    def sequence(self) -> str: ...

    @property
    def srv_weights(self) -> str: ...

    @property
    def https(self) -> HttpsView | None:
        """The HTTPS records' SvcParams; None: the service has no HTTPS records."""
        ...

    @property
    def dnssd(self) -> bool:
        """Whether its instances are browsable with DNS-SD (RFC 6763)."""
        ...


class MemberView(Protocol):
    """One instance as the answers should show it: its registration, the weight and priority
    health leaves it (warning, slow start, fail-open), its role, and its latest reported load
    and latency. The index keeps these objects, so a heartbeat's new load reaches the policies
    without a rebuild."""

    @property
    def instance(self) -> InstanceView: ...

    @property
    def weight(self) -> int: ...

    @property
    def priority(self) -> int: ...

    @property
    def role(self) -> int: ...

    @property
    def load(self) -> float | None: ...

    @property
    def latency_ms(self) -> float | None: ...

    def handed_out(self) -> None:
        """Called when a balanced address answer lists this instance first."""
        ...


class AnswerSink(Protocol):
    """Where a service's answers are rebuilt when it changes: ``dnsserver.index.AnswerIndex``,
    or ``workers.pool.WorkerPool`` with DNS answered by worker processes."""

    def rebuild(
        self, service: str, settings: ServiceView | None, members: Sequence[MemberView]
    ) -> None:
        """Replace every name of ``service``; ``settings`` None means the service is gone."""
        ...

    def patch(self, service: str, changed: Sequence[MemberView], removed: Sequence[str]) -> bool:
        """Replace or add the ``changed`` members of ``service`` and drop the ``removed`` ids,
        leaving the others as they are. False, with nothing done, when the sink does not hold
        ``service``: then it must be sent whole (``rebuild``)."""
        ...

    def set_changes(self, changes: int) -> None:
        """The registry's change index after the changes given so far (the SOA serial)."""
        ...
