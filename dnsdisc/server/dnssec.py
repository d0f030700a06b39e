"""The zone keys of ``dnssec.enabled``: what each is doing now, and the ZSK rollover that moves
them on.

Keeping (``keystore.py``): in the data directory, or in etcd so that every node signs with the
same keys. A KSK and a ZSK of ``dnssec.algorithm`` are made when there is none; with etcd the
first node to store them wins and the others read its keys.

Timeline: each key carries the times of RFC 7583's events (``publish``: in the DNSKEY RRset;
``activate``: signing; ``inactive``: no longer signing; ``delete``: out of DNSKEY), so what a key
does at any moment is a pure function of the document and the clock (``view``). A rollover
writes the document once, with the times of all its steps ahead; every node (and a node started
mid-way) then takes each step at the same moment without writing or talking to the others.

The ZSK rollover is pre-publish (RFC 6781 4.1.1.1): the new ZSK is published at once and
activated ``dnskey_ttl + propagation_delay`` later (every cached DNSKEY RRset then holds it);
the old one stops signing at that moment and leaves the DNSKEY RRset ``zone_max_ttl +
propagation_delay`` after that (every signature it made has expired from caches). The KSK is
not rolled: that needs the parent's DS changed, which is the operator's step (CDS/CDNSKEY say
what it should be). An algorithm rollover is not offered either: keys of another algorithm
than the one configured keep signing, with a warning.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from dnsdisc.config.load import Config
from dnsdisc.dnsserver.dnssec import (
    ACTIVE,
    ALGORITHMS,
    PUBLISHED,
    RETIRED,
    ZoneKey,
    fingerprint,
    key_tag,
    new_key,
)
from dnsdisc.errors import ConfigError, ConflictError, DnsdiscError, StoreError
from dnsdisc.server.keystore import KeptKey, KeyStore, key_store

log = logging.getLogger(__name__)

# While signing, the SOA serial moves once a day (at the same moment on every node): a
# secondary transfers only when it does, and a signature we keep is made again only after 7 of
# its 14 days, so a quiet zone's secondaries would otherwise serve signatures until they expire.
RESIGN_EPOCH = 86400
# How often a node on etcd reads the keys again to learn a rollover another node started (s);
# the rollover's waits include ``propagation_delay``, which must cover it.
POLL_EVERY = 5.0


@dataclass(frozen=True, slots=True)
class Timing:
    """How long a ZSK rollover waits: for caches to hold the new DNSKEY RRset, then for the old
    key's signatures to expire from them."""

    dnskey_ttl: int
    propagation_delay: int  # s for every node and secondary to show a change
    zone_max_ttl: int  # the largest TTL a signed record has in our zones

    @property
    def publish_wait(self) -> int:
        return self.dnskey_ttl + self.propagation_delay

    @property
    def retire_wait(self) -> int:
        return self.zone_max_ttl + self.propagation_delay


def timing(config: Config) -> Timing:
    return Timing(
        config.dnssec_dnskey_ttl, config.dnssec_propagation_delay, config.dnssec_zone_max_ttl
    )


def state_at(key: KeptKey, now: float) -> str | None:
    """What ``key`` does at ``now``: PUBLISHED, ACTIVE, RETIRED, or None (not yet published, or
    deleted)."""
    if now < key.publish or (key.delete is not None and now >= key.delete):
        return None
    if key.inactive is not None and now >= key.inactive:
        return RETIRED
    if key.activate is not None and now >= key.activate:
        return ACTIVE
    return PUBLISHED


def _entered(key: KeptKey, state: str) -> float:
    if state == RETIRED and key.inactive is not None:
        return key.inactive
    if state == ACTIVE and key.activate is not None:
        return key.activate
    return key.publish


def view(kept: Sequence[KeptKey], now: float) -> tuple[ZoneKey, ...]:
    """The keys the DNS processes sign and publish with at ``now`` (KSKs first)."""
    out = []
    for k in sorted(kept, key=lambda k: (not k.ksk, k.created)):
        state = state_at(k, now)
        if state is not None:
            out.append(ZoneKey(k.private, k.algorithm, k.ksk, state, k.created, _entered(k, state)))
    return tuple(out)


def next_step(kept: Sequence[KeptKey], now: float) -> float | None:
    """When ``view`` next changes (None: not before something is written)."""
    times = [
        t for k in kept for t in (k.publish, k.activate, k.inactive, k.delete) if t and t > now
    ]
    return min(times, default=None)


def step_count(kept: Sequence[KeptKey], now: float) -> int:
    """How many events of the keys' timelines have come by ``now``, those of the keys a
    rollover dropped included (``KeptKey.carried``): it grows at each change of ``view``,
    never goes back, and is the same on every node and after a restart (the SOA serial follows
    it, ``Server.changes``)."""
    return sum(k.carried + _events(k, now) for k in kept)


def _events(key: KeptKey, now: float) -> int:
    times = (key.publish, key.activate, key.inactive, key.delete)
    return sum(1 for t in times if t is not None and t <= now)


def roll_zsk(kept: Sequence[KeptKey], now: float, timing: Timing) -> list[KeptKey]:
    """The keys after starting a pre-publish ZSK rollover at ``now`` (see the module's text);
    keys already deleted are dropped. A ConflictError while one is under way."""
    if next_step(kept, now) is not None:
        raise ConflictError(
            "a key rollover is under way: GET /v1/dnssec shows its next step", "dnssec"
        )
    current = [k for k in kept if state_at(k, now) is not None]
    zsks = [k for k in current if not k.ksk and state_at(k, now) == ACTIVE]
    if not zsks:
        raise ConflictError("there is no active ZSK to roll over", "dnssec")
    switch = now + timing.publish_wait
    fresh = new_key(zsks[0].algorithm, False, now)
    dropped = sum(k.carried + _events(k, now) for k in kept if k not in current)
    new = KeptKey(fresh.private, fresh.algorithm, False, now, now, switch, carried=dropped)
    out = [
        replace(k, inactive=switch, delete=switch + timing.retire_wait) if k in zsks else k
        for k in current
    ]
    return [*out, new]


async def load_or_make(
    store: KeyStore, algorithm: str, clock: Callable[[], float] = time.time
) -> tuple[list[KeptKey], int]:
    """The kept keys, or a KSK and a ZSK of ``algorithm`` made and kept now. A ConfigError when
    they cannot be used (nothing active to sign with)."""
    kept, version = await store.load()
    now = clock()
    if not kept:
        wanted = ALGORITHMS[algorithm]
        made = [new_key(wanted, True, now), new_key(wanted, False, now)]
        fresh = [KeptKey(k.private, k.algorithm, k.ksk, now, now, now) for k in made]
        if await store.save(fresh, 0):
            log.info(
                "dnssec: made a KSK (tag %d) and a ZSK (tag %d), %s, kept in %s; publish the "
                "DS records `dnsdisc dnssec ds` prints at the parent zone",
                key_tag(made[0]), key_tag(made[1]), algorithm, store.where,
            )  # fmt: skip
        kept, version = await store.load()  # another node's, if it stored first
    keys = view(kept, now)
    if not any(k.state == ACTIVE and k.ksk for k in keys) or not any(
        k.state == ACTIVE and not k.ksk for k in keys
    ):
        raise ConfigError(store.where, "dnssec", "the keys kept have no active KSK and ZSK")
    if not any(k.algorithm == ALGORITHMS[algorithm] for k in keys):
        log.warning(
            "dnssec: the kept keys are not %s (dnssec.algorithm); they keep signing: an "
            "algorithm rollover is not offered",
            algorithm,
        )
    return kept, version


def keys_for(config: Config) -> list[ZoneKey]:
    """The keys in use now, made first if there are none (``dnsdisc dnssec ds``)."""
    store = key_store(config)

    async def read() -> list[KeptKey]:
        try:
            return (await load_or_make(store, config.dnssec_algorithm))[0]
        finally:
            await store.close()

    return list(view(asyncio.run(read()), time.time()))


# -- the running keys ------------------------------------------------------------------------


class Keyring:
    """The main process's keys: it hands the DNS processes what the keys do now (``publish``),
    again at each step of the timeline, and starts rollovers. On etcd it reads the document
    every POLL_EVERY seconds to learn of a rollover started on another node."""

    def __init__(
        self,
        store: KeyStore,
        algorithm: str,
        timing: Timing,
        publish: Callable[[tuple[ZoneKey, ...]], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.algorithm = algorithm
        self.timing = timing
        self.publish = publish
        self.clock = clock
        self.kept: list[KeptKey] = []
        self.version = 0
        self.current: tuple[ZoneKey, ...] = ()
        # step_count of the keys published and the days gone by (``epoch``): the SOA serial
        # adds it (Server.changes).
        self.steps = 0
        self.epoch = 0
        self._timer: asyncio.TimerHandle | None = None
        self._poll: asyncio.Task[None] | None = None

    async def load(self) -> None:
        """Read the keys (made first if there are none); ``current`` is what they do now, for
        the DNS processes to start with."""
        self.kept, self.version = await load_or_make(self.store, self.algorithm, self.clock)
        now = self.clock()
        self.current = view(self.kept, now)
        self.epoch = int(now // RESIGN_EPOCH)
        self.steps = step_count(self.kept, now) + self.epoch

    def start(self) -> None:
        """Follow the timeline from now on (and, on etcd, the other nodes' rollovers)."""
        self._apply()
        if self.store.shared:
            self._poll = asyncio.get_running_loop().create_task(self._follow())

    def _apply(self) -> None:
        """Publish what the keys do now if it changed, and wake at the next step."""
        now = self.clock()
        keys = view(self.kept, now)
        epoch = int(now // RESIGN_EPOCH)
        if keys != self.current or epoch != self.epoch:
            # The serial moves with the DNSKEY RRset and each day: to the kept count (or by
            # one, should a document written elsewhere count less). The keys are handed out
            # again on a new day: the DNS processes keep their signatures (the same keys sign)
            # and empty their reply caches; the secondaries are told.
            self.steps = max(self.steps + 1, step_count(self.kept, now) + epoch)
            self.epoch = epoch
            if keys != self.current and self.current:
                log.info("dnssec: keys now %s", _describe(keys))
            self.current = keys
            try:
                self.publish(keys)
            finally:
                self._wake(now)  # the timeline goes on even if handing the keys out failed
        else:
            self._wake(now)

    def _wake(self, now: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        step = next_step(self.kept, now)
        day = (int(now // RESIGN_EPOCH) + 1) * RESIGN_EPOCH
        due = day if step is None else min(step, day)
        loop = asyncio.get_running_loop()
        # A little after: ``view`` then sees the step done (the clocks may differ in µs).
        self._timer = loop.call_later(max(0.0, due - now) + 0.01, self._apply)

    async def _follow(self) -> None:
        every = min(POLL_EVERY, max(0.5, self.timing.propagation_delay / 2))
        while True:
            await asyncio.sleep(every)
            try:
                kept, version = await self.store.load()
            except (StoreError, ConfigError) as exc:
                log.warning("dnssec: cannot read the keys from %s: %s", self.store.where, exc)
                continue
            # Only a newer document: this read may have been made before our own rollover
            # was written and read back, and answered after.
            if kept and version > self.version:
                self.kept, self.version = kept, version
                self._apply()

    async def rollover(self) -> dict[str, Any]:
        """Start a ZSK rollover (a ConflictError while one is under way); the new state."""
        for _ in range(3):  # another node may write between our read and our write
            try:
                kept, version = await self.store.load()
            except ConfigError as exc:  # the server's own keys, not the request, are wrong: 500
                raise DnsdiscError(f"the DNSSEC keys kept cannot be read: {exc}") from None
            rolled = roll_zsk(kept, self.clock(), self.timing)
            if await self.store.save(rolled, version):
                self.kept = rolled
                try:
                    self.kept, self.version = await self.store.load()
                except (StoreError, ConfigError) as exc:
                    # Written all the same: the version read next (a poll) is newer.
                    log.warning(
                        "dnssec: cannot read the keys back from %s: %s", self.store.where, exc
                    )
                log.info("dnssec: ZSK rollover started: %s", _describe(view(rolled, self.clock())))
                self._apply()
                return self.status()
        raise ConflictError("the keys changed while the rollover was being written", "dnssec")

    def status(self) -> dict[str, Any]:
        now = self.clock()
        due = next_step(self.kept, now)
        keys = []
        for k in sorted(self.kept, key=lambda k: (not k.ksk, k.created)):
            state = state_at(k, now)
            zone_key = ZoneKey(k.private, k.algorithm, k.ksk)
            keys.append(
                {
                    "tag": key_tag(zone_key),
                    "id": fingerprint(zone_key),
                    "role": "KSK" if k.ksk else "ZSK",
                    "algorithm": _algorithm_name(k.algorithm),
                    "state": state or ("removed" if now >= k.publish else "planned"),
                    "created": _iso(k.created),
                    "publish": _iso(k.publish),
                    "activate": _iso(k.activate),
                    "inactive": _iso(k.inactive),
                    "delete": _iso(k.delete),
                }
            )
        return {
            "enabled": True,
            "algorithm": self.algorithm,
            "kept_in": self.store.kind,
            "rollover": {
                "under_way": due is not None,
                "next_step": _iso(due),
                "publish_wait": self.timing.publish_wait,
                "retire_wait": self.timing.retire_wait,
            },
            "keys": keys,
        }

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._poll is not None:
            self._poll.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poll
        await self.store.close()


def _algorithm_name(number: int) -> str:
    return next((name for name, n in ALGORITHMS.items() if n == number), str(number))


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


def _describe(keys: Sequence[ZoneKey]) -> str:
    return ", ".join(f"{'KSK' if k.ksk else 'ZSK'} {key_tag(k)} {k.state}" for k in keys)
