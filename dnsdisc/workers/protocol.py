"""What the main process and its DNS workers say to each other over the feed (``feed``), and how
long a worker may take to answer.

Every message is a plain tuple ``(kind, seq, *fields)`` with ``kind`` one of the strings below:
the main process numbers its messages (``seq``), a worker answers each one with the same number.
Tuples rather than a NamedTuple or dataclass per kind: those pickle several times slower, and the
feed carries a message for every change and every acknowledgement.

main -> worker
    INIT      seq, DnsSettings, IndexSettings, zone records, processes sharing the port
    SERVICES  seq, [ServiceFrame, ...]                (settings None: the service is gone)
    DELTA     seq, [(service, [MemberFrame, ...], [instance id, ...]), ...]
                                                      (members changed or added, ids removed)
    FIGURES   seq, service, instance id, load, latency_ms
    INDEX     seq, IndexSettings, zone records        (a reload: build a new index beside the old)
    ZONE      seq, IndexSettings, zone records        (a reload that changed only zone records:
                                                       replace them in the index in place)
    SWAP      seq                                     (answer from the new index from now on)
    SERIAL    seq, change index                       (the registry's, after the changes sent
                                                       before it: the SOA serial follows it)
    LISTEN    seq                                     (bind the DNS port; reply LISTENING)
    STATS     seq, service or None                    (reply STATS)
    STOP      seq                                     (drain and exit; no reply)
    STALE     seq, bool                               (answers may be stale: the shared store
                                                       is out of reach; see server.staleness)
    KEYS      seq, (ZoneKey, ...)                     (sign with these from now on: the first
                                                       keys, or a rollover's step; see
                                                       server.dnssec)
    PING      n                                       (not numbered in the feed: reply PONG
                                                       at once, ahead of any queued work)
worker -> main
    ACK       seq                                     (applied, with everything before it)
    LISTENING seq, "" or why it could not listen
    STATS     seq, DnsCounters, {(service, instance id): answers led}
    PONG      n, the seq applied so far               (alive; the watchdog's evidence)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from dnsdisc.dnsserver.servicenames import settings_key
from dnsdisc.dnsserver.view import InstanceView, MemberView, ServiceView

INIT = "init"
SERVICES = "services"
FIGURES = "figures"
DELTA = "delta"
INDEX = "index"
ZONE = "zone"
SWAP = "swap"
SERIAL = "serial"
LISTEN = "listen"
STATS = "stats"
STOP = "stop"
STALE = "stale"
KEYS = "keys"
ACK = "ack"
LISTENING = "listening"
PING = "ping"
PONG = "pong"

# One message as it is framed and read back.
Message = tuple[Any, ...]
# One instance as health hands it out: (instance, weight, priority, role, load, latency_ms).
MemberFrame = tuple[InstanceView, int, int, int, float | None, float | None]
# One service in a SERVICES message: (name, settings or None, members).
ServiceFrame = tuple[str, ServiceView | None, list[MemberFrame]]

# One service in a DELTA message: (name, members changed or added, ids removed).
DeltaFrame = tuple[str, list[MemberFrame], list[str]]

# How long a worker may take to confirm a change, to stop, or to send its counters (seconds).
CONFIRM_TIMEOUT = 5.0
# The supervisor pings every worker this often (seconds); a ready worker that has said nothing
# (no PONG, no ACK) for LIVENESS_TIMEOUT is hung or stopped, and is killed and replaced.
PING_INTERVAL = 1.0
LIVENESS_TIMEOUT = 2.5
# A worker that answers its pings is alive but may be busy applying a large change: it is killed
# only when it has owed an acknowledgement, without its applied number advancing, this long.
STALL_TIMEOUT = 30.0
# How long a worker may take to start: to build its index from a snapshot and bind the port.
START_TIMEOUT = 30.0


def member_frames(members: Iterable[MemberView]) -> list[MemberFrame]:
    """The members as a SERVICES message carries them (a worker's ``RemoteMember``)."""
    return [(m.instance, m.weight, m.priority, m.role, m.load, m.latency_ms) for m in members]


class SentServices:
    """What the workers were last sent of each service, so that a change is sent as what
    changed (DELTA) rather than as the whole service (SERVICES): a write to one instance of a
    large service then costs the workers, and the pickling, one instance. A service is sent
    whole when it is new to the workers, when its settings change, and when it is gone."""

    def __init__(self) -> None:
        self._sent: dict[str, tuple[tuple[object, ...], dict[str, MemberFrame]]] = {}

    def forget(self) -> None:
        """The workers' index starts empty (a reload): everything goes whole again."""
        self._sent.clear()

    def holds(self, name: str) -> bool:
        return name in self._sent

    def diff(
        self, name: str, settings: ServiceView | None, members: Iterable[MemberView]
    ) -> tuple[ServiceFrame | None, DeltaFrame | None]:
        """Record ``name`` as sent; the frame to send it with (whole, or a delta; neither
        when nothing the workers hold changed)."""
        if settings is None:
            self._sent.pop(name, None)
            return (name, None, []), None
        frames = member_frames(members)
        now = {f[0].id: f for f in frames}
        key = settings_key(settings)
        before = self._sent.get(name)
        self._sent[name] = (key, now)
        if before is None or before[0] != key:
            return (name, settings, frames), None
        old = before[1]
        # Load and latency reach the workers as FIGURES, which do not update this record: a
        # member whose registration, weight, priority and role are as sent has not changed.
        changed = [f for f in frames if (o := old.get(f[0].id)) is None or o[:4] != f[:4]]
        removed = [iid for iid in old if iid not in now]
        if not changed and not removed:
            return None, None
        return None, (name, changed, removed)

    def patch(self, name: str, change: dict[str, MemberView | None]) -> DeltaFrame | None:
        """Record the members of ``name`` in ``change`` as sent (None: removed), a service the
        workers hold (``holds``); the delta to send them with (None: nothing they hold changed).
        The work is that of the members named."""
        sent = self._sent[name][1]
        changed: list[MemberFrame] = []
        removed: list[str] = []
        for iid, m in change.items():
            before = sent.get(iid)
            if m is None:
                if before is not None:
                    del sent[iid]
                    removed.append(iid)
                continue
            f = (m.instance, m.weight, m.priority, m.role, m.load, m.latency_ms)
            sent[iid] = f
            if before is None or before[:4] != f[:4]:
                changed.append(f)
        return (name, changed, removed) if changed or removed else None
