"""The DNSSEC keys' timeline (server/dnssec.py): what each key does at each moment of a ZSK
rollover, what is kept and read back (the first release's form too), what cannot be read, and
the Keyring publishing each step once, on time, from a clock the test moves."""

from __future__ import annotations

import asyncio
import base64
import json
import stat
from collections.abc import Sequence
from pathlib import Path

import pytest

from dnsdisc.dnsserver.dnssec import ACTIVE, PUBLISHED, RETIRED, ZoneKey, key_tag, new_key
from dnsdisc.errors import ConfigError, ConflictError, StoreUnavailableError
from dnsdisc.server import dnssec, keystore
from dnsdisc.server.dnssec import Keyring, Timing
from dnsdisc.server.keystore import FileKeys, KeptKey

_PRIVATE = base64.b64encode(new_key(13, False, 0).private).decode()
T = Timing(dnskey_ttl=60, propagation_delay=30, zone_max_ttl=300)  # waits of 90 s and 330 s


def first_keys(now: float) -> list[KeptKey]:
    made = [new_key(13, True, now), new_key(13, False, now)]
    return [KeptKey(k.private, 13, k.ksk, now, now, now) for k in made]


def states(kept: list[KeptKey], now: float) -> list[tuple[bool, str]]:
    return [(k.ksk, k.state) for k in dnssec.view(kept, now)]


def test_a_zsk_rollover_publishes_then_switches_then_removes_at_the_planned_times() -> None:
    kept = first_keys(1000.0)
    assert dnssec.next_step(kept, 1000.0) is None
    rolled = dnssec.roll_zsk(kept, 2000.0, T)
    assert len(rolled) == 3
    assert states(rolled, 2000.0) == [(True, ACTIVE), (False, ACTIVE), (False, PUBLISHED)]
    assert dnssec.next_step(rolled, 2000.0) == 2090.0
    assert states(rolled, 2089.9) == [(True, ACTIVE), (False, ACTIVE), (False, PUBLISHED)]
    assert states(rolled, 2090.0) == [(True, ACTIVE), (False, RETIRED), (False, ACTIVE)]
    assert dnssec.next_step(rolled, 2090.0) == 2420.0
    assert states(rolled, 2420.0) == [(True, ACTIVE), (False, ACTIVE)]
    assert dnssec.next_step(rolled, 2420.0) is None
    # The view names the new ZSK as the active one at the end, the KSK unchanged.
    assert dnssec.view(rolled, 2420.0)[1].private == rolled[2].private
    assert dnssec.view(rolled, 2420.0)[0].private == kept[0].private
    # When each key entered its state (what ZoneKey.changed says).
    assert [k.changed for k in dnssec.view(rolled, 2100.0)] == [1000.0, 2090.0, 2090.0]


def test_a_second_rollover_waits_for_the_first_and_drops_deleted_keys() -> None:
    rolled = dnssec.roll_zsk(first_keys(0.0), 100.0, T)
    with pytest.raises(ConflictError, match="under way"):
        dnssec.roll_zsk(rolled, 150.0, T)
    with pytest.raises(ConflictError):
        dnssec.roll_zsk(rolled, 400.0, T)  # the old ZSK is retired, not yet deleted
    again = dnssec.roll_zsk(rolled, 1000.0, T)
    assert len(again) == 3  # the deleted one is not kept
    assert rolled[1] not in again and again[0] == rolled[0]


def test_what_is_kept_reads_back_and_the_first_release_form_is_read() -> None:
    rolled = dnssec.roll_zsk(first_keys(10.0), 20.0, T)
    assert keystore.decode(json.loads(json.dumps(keystore.encode(rolled))), "x") == rolled
    old_form = {
        "keys": [
            {"private": e["private"], "algorithm": 13, "ksk": e["ksk"], "state": "active",
             "created": 5.0, "changed": 5.0}
            for e in keystore.encode(first_keys(5.0))["keys"]
        ]
    }  # fmt: skip
    read = keystore.decode(old_form, "x")
    assert states(read, 6.0) == [(True, ACTIVE), (False, ACTIVE)]
    assert dnssec.next_step(read, 6.0) is None


@pytest.mark.parametrize(
    "document",
    [
        {},
        {"keys": [{"private": "not base64!", "algorithm": 13, "ksk": True, "created": 0,
                   "publish": 0, "activate": 0}]},
        {"keys": [{"private": "AAAA", "algorithm": 13, "ksk": True, "created": 0,
                   "publish": 0, "activate": 0}]},  # base64, but not a key
        {"keys": [{"algorithm": 13}]},
        [],
        {"keys": [{"private": _PRIVATE, "algorithm": 13, "ksk": "false", "created": 0,
                   "publish": 0, "activate": 0}]},  # a string: bool("false") is True
    ],
)  # fmt: skip
def test_a_document_that_is_not_keys_is_a_config_error_naming_where(document: object) -> None:
    with pytest.raises(ConfigError, match="where: dnssec: not a DNSSEC key document"):
        keystore.decode(document, "where")


def test_the_key_file_is_private_and_a_broken_one_stops_the_start(tmp_path: Path) -> None:
    store = FileKeys(tmp_path)
    kept, _ = asyncio.run(dnssec.load_or_make(store, "ED25519"))
    assert [k.algorithm for k in kept] == [15, 15]
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.path.parent.stat().st_mode) == 0o700
    again, _ = asyncio.run(dnssec.load_or_make(store, "ED25519"))
    assert again == kept  # made once, then read
    store.path.write_text("{not json")
    with pytest.raises(ConfigError, match=r"keys\.json: dnssec: not a DNSSEC key file"):
        asyncio.run(dnssec.load_or_make(store, "ED25519"))
    # Keys that exist but none active (all deleted): refused, nothing made in their place.
    gone = [KeptKey(k.private, k.algorithm, k.ksk, 0, 0, 0, 1, 2) for k in kept]
    store.save_now(gone)
    with pytest.raises(ConfigError, match="no active KSK and ZSK"):
        asyncio.run(dnssec.load_or_make(store, "ED25519"))


def test_the_keyring_publishes_each_step_once_and_on_time(tmp_path: Path) -> None:
    published: list[tuple[ZoneKey, ...]] = []
    now = [1000.0]

    async def run() -> None:
        ring = Keyring(FileKeys(tmp_path), "ECDSAP256SHA256", T, published.append, lambda: now[0])
        await ring.load()
        first, steps = ring.current, ring.steps
        ring.start()
        assert published == []  # the DNS processes started with ``current``
        state = await ring.rollover()
        assert state["rollover"]["under_way"] is True
        assert [k["state"] for k in state["keys"]] == ["active", "active", "published"]
        assert len(published) == 1 and ring.steps > steps  # the serial moves
        steps = ring.steps
        assert [k.state for k in published[-1]] == [ACTIVE, ACTIVE, PUBLISHED]
        assert ring._timer is not None
        now[0] += 90  # the timer fires: the switch
        ring._timer._run()
        assert [k.state for k in published[-1]] == [ACTIVE, RETIRED, ACTIVE]
        ring._apply()  # nothing changed: nothing published again
        assert len(published) == 2 and ring.steps > steps
        now[0] += 330
        ring._timer._run()
        assert [k.state for k in published[-1]] == [ACTIVE, ACTIVE]
        assert published[-1][1].private != first[1].private
        assert ring._timer is None or ring.status()["rollover"]["under_way"] is False
        await ring.close()
        # What a restart reads: the keys and the timeline as written.
        ring2 = Keyring(FileKeys(tmp_path), "ECDSAP256SHA256", T, published.append, lambda: now[0])
        await ring2.load()
        assert [key_tag(k) for k in ring2.current] == [key_tag(k) for k in published[-1]]
        await ring2.close()

    asyncio.run(run())


# -- review of #24's keys in etcd and rollover -----------------------------------------------


def _key_entry(algorithm: int, private: bytes | None = None) -> dict[str, object]:
    der = private if private is not None else new_key(13, True, 0.0).private
    return {"private": base64.b64encode(der).decode(), "algorithm": algorithm, "ksk": True,
            "created": 0, "publish": 0, "activate": 0}  # fmt: skip


@pytest.mark.parametrize(
    "document",
    [
        {"keys": ["x"]},  # entries that are not objects
        {"keys": {"a": 1}},  # an object where the list goes: its keys are iterated
        {"keys": [_key_entry(99)]},  # an algorithm dnspython does not know
        {"keys": [_key_entry(15)]},  # an ECDSA key said to be Ed25519
    ],
)
def test_a_corrupted_document_of_any_shape_is_a_config_error(document: object) -> None:
    # Before: AttributeError and dns.exception.UnsupportedAlgorithm went through, a traceback at
    # start instead of the config error, and the end of an etcd node's polling (below).
    with pytest.raises(ConfigError, match="where: dnssec: not a DNSSEC key document"):
        keystore.decode(document, "where")


class _SharedKeys:
    """A KeyStore as etcd is one: shared, versioned, written by compare; ``documents`` is what
    each load reads (decoded as EtcdKeys decodes), the last one again once they run out;
    ``hold`` makes the next load wait (its read done) until released."""

    kind, shared, where = "etcd", True, "etcd test"

    def __init__(self, kept: list[KeptKey]) -> None:
        self.doc: object = keystore.encode(kept)
        self.version = 1
        self.hold: asyncio.Event | None = None
        self.holding = asyncio.Event()
        self.fail_loads = 0  # loads that raise StoreUnavailableError
        self.closed = False

    async def load(self) -> tuple[list[KeptKey], int]:
        if self.fail_loads:
            self.fail_loads -= 1
            raise StoreUnavailableError("etcd is unavailable (test)")
        doc, version = self.doc, self.version  # read now ...
        if self.hold is not None:
            hold, self.hold = self.hold, None
            self.holding.set()
            await hold.wait()  # ... answered later
        return keystore.decode(doc, self.where), version

    async def save(self, kept: Sequence[KeptKey], version: int) -> bool:
        if version != self.version:
            return False
        self.doc, self.version = keystore.encode(kept), self.version + 1
        return True

    async def close(self) -> None:
        self.closed = True


def test_a_node_polling_etcd_goes_on_past_a_corrupted_document(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(dnssec, "POLL_EVERY", 0.01)
    published: list[tuple[ZoneKey, ...]] = []
    now = [1000.0]

    async def run() -> None:
        store = _SharedKeys(first_keys(1000.0))
        ring = Keyring(store, "ECDSAP256SHA256", T, published.append, lambda: now[0])
        await ring.load()
        ring.start()
        store.doc, store.version = {"keys": ["garbage"]}, 2  # someone wrote nonsense
        await asyncio.sleep(0.05)
        # Then another node starts a rollover over good keys: this node must learn of it.
        store.doc = keystore.encode(dnssec.roll_zsk(first_keys(1000.0), 1000.0, T))
        store.version = 3
        for _ in range(100):
            if published:
                break
            await asyncio.sleep(0.01)
        assert [k.state for k in ring.current] == [ACTIVE, ACTIVE, PUBLISHED]
        await ring.close()

    asyncio.run(run())


def test_a_poll_read_before_our_own_rollover_does_not_undo_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The poll reads the document, etcd answers late; meanwhile this node's rollover is written
    # and read back. The poll's older read must not replace it (before: any other version did,
    # and the new ZSK left the DNSKEY RRset until the next poll, each a step of the serial).
    monkeypatch.setattr(dnssec, "POLL_EVERY", 0.01)
    published: list[tuple[ZoneKey, ...]] = []
    now = [1000.0]

    async def run() -> None:
        store = _SharedKeys(first_keys(1000.0))
        ring = Keyring(store, "ECDSAP256SHA256", T, published.append, lambda: now[0])
        await ring.load()
        release = store.hold = asyncio.Event()
        ring.start()
        await store.holding.wait()  # the poll read version 1 and waits for its answer
        await ring.rollover()
        assert [k.state for k in ring.current] == [ACTIVE, ACTIVE, PUBLISHED]
        release.set()
        await asyncio.sleep(0.05)  # the late answer arrives, and a few polls more
        assert [k.state for k in ring.current] == [ACTIVE, ACTIVE, PUBLISHED]
        assert len(published) == 1, [[k.state for k in p] for p in published]
        await ring.close()

    asyncio.run(run())


def test_the_serial_steps_of_the_keys_never_go_back_and_are_the_same_on_every_node(
    tmp_path: Path,
) -> None:
    # Server.changes (the SOA serial) adds Keyring.steps to the registry's change index. It
    # was a count of this process's steps: 0 again after a restart (with etcd, whose index is
    # the store's revision, the serial went back and the next changes did not reach the
    # secondaries) and different on a node started after a step.
    now = [1000.0]
    published: list[tuple[ZoneKey, ...]] = []

    def ring() -> Keyring:
        return Keyring(FileKeys(tmp_path), "ECDSAP256SHA256", T, published.append, lambda: now[0])

    async def run() -> None:
        first = ring()
        await first.load()
        first.start()
        seen = [first.steps]
        for _ in range(2):  # two whole rollovers: the second drops the key the first retired
            await first.rollover()
            seen.append(first.steps)
            assert first._timer is not None
            now[0] += 90
            first._timer._run()
            seen.append(first.steps)
            mid = ring()  # a node started now
            await mid.load()
            assert mid.steps == first.steps
            await mid.close()
            now[0] += 330
            first._timer._run()
            seen.append(first.steps)
            now[0] += 1000
        assert seen == sorted(set(seen)), seen  # each step moved it on
        await first.close()
        again = ring()  # restarted
        await again.load()
        assert again.steps == seen[-1], (again.steps, seen)
        await again.close()

    asyncio.run(run())


def test_the_rollover_api_answers_an_etcd_outage_503_and_broken_keys_500() -> None:
    now = [1000.0]
    store = _SharedKeys(first_keys(1000.0))
    original = store.load

    async def failing_after_start() -> tuple[list[KeptKey], int]:
        if failing:
            raise StoreUnavailableError("etcd is unavailable (test)")
        return await original()

    failing = False
    store.load = failing_after_start  # type: ignore[method-assign]

    # The Keyring reads at start; the request's read meets etcd out of reach: 503, JSON.
    from aiohttp.test_utils import TestClient, TestServer

    from dnsdisc.api.http import Api, ServerState
    from dnsdisc.registry.registry import Registry
    from dnsdisc.store.base import MemoryStore

    async def run() -> list[tuple[int, dict[str, object]]]:
        nonlocal failing
        ring = Keyring(store, "ECDSAP256SHA256", T, lambda keys: None, lambda: now[0])
        await ring.load()
        api = Api(Registry(MemoryStore()), ServerState(True, True), dnssec=ring)
        out = []
        async with TestClient(TestServer(api.app())) as client:
            failing = True
            resp = await client.post("/v1/dnssec/rollover", json={})
            out.append((resp.status, await resp.json()))
            failing = False
            store.doc, store.version = {"keys": [{"algorithm": 13}]}, 5  # broken in etcd
            resp = await client.post("/v1/dnssec/rollover", json={})
            out.append((resp.status, await resp.json()))
        return out

    (down, down_body), (broken, broken_body) = asyncio.run(run())
    assert down == 503 and "unavailable" in str(down_body["error"]), down_body
    # A key document that cannot be read is the server's fault, not the request's (was 400).
    assert broken == 500 and "not a DNSSEC key document" in str(broken_body["error"])


def test_a_rollover_written_is_202_even_when_reading_it_back_fails() -> None:
    # The compare-and-put succeeded, the read back did not: the rollover is under way on every
    # node, so the answer says so (before: a 503, and a retry met a 409), and this node
    # publishes the new ZSK at once (before: at its next poll).
    now = [1000.0]
    published: list[tuple[ZoneKey, ...]] = []

    async def run() -> tuple[dict[str, object], int]:
        store = _SharedKeys(first_keys(1000.0))
        ring = Keyring(store, "ECDSAP256SHA256", T, published.append, lambda: now[0])
        await ring.load()
        saved = store.save

        async def save_then_fail(kept: Sequence[KeptKey], version: int) -> bool:
            ok = await saved(kept, version)
            store.fail_loads = 1
            return ok

        store.save = save_then_fail  # type: ignore[method-assign]
        state = await ring.rollover()
        version = store.version
        await ring.close()
        return state, version

    state, version = asyncio.run(run())
    assert version == 2  # written once
    assert [k["state"] for k in state["keys"]] == ["active", "active", "published"]  # type: ignore[index]
    assert [k.state for k in published[-1]] == [ACTIVE, ACTIVE, PUBLISHED]


def test_a_start_that_fails_after_the_keys_were_read_closes_their_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With etcd the key store holds its own gateway session: a start that failed later (the
    # registry's store could not be read) left it open ("Unclosed client session").
    from dnsdisc.config.load import Config
    from dnsdisc.errors import StoreError
    from dnsdisc.registry.registry import Registry
    from dnsdisc.server import app

    store = _SharedKeys(first_keys(1000.0))
    monkeypatch.setattr(app.keystore, "key_store", lambda config: store)

    async def unreachable(self: Registry) -> None:
        raise StoreUnavailableError("etcd is unavailable (test)")

    monkeypatch.setattr(Registry, "load", unreachable)
    config = Config(dnssec_enabled=True, workers=0, data_dir=tmp_path)
    with pytest.raises(StoreError):
        asyncio.run(app.start(config))
    assert store.closed


def test_stopping_ends_the_keys_timeline_before_the_dns_processes_and_notify() -> None:
    # A step due while the server stops (its timer, or the etcd poll) published keys to a
    # stopped pool and started a NOTIFY round after the notifier was closed.
    from types import SimpleNamespace

    from dnsdisc.server import app

    order: list[str] = []

    def part(name: str) -> SimpleNamespace:
        async def closing() -> None:
            order.append(name)

        return SimpleNamespace(stop=closing, close=closing)

    server = SimpleNamespace(
        state=SimpleNamespace(listeners_up=True, store_open=True),
        face=None, http_runner=None, health=part("health"), pool=part("pool"),
        notifier=part("notifier"), keyring=part("keyring"), registry=part("registry"),
        audit=None,
    )  # fmt: skip
    asyncio.run(app.stop(server))  # type: ignore[arg-type]
    assert order.index("keyring") < order.index("pool") < order.index("notifier"), order


def test_a_step_whose_handing_out_fails_does_not_stop_the_timeline(tmp_path: Path) -> None:
    now = [1000.0]
    calls: list[int] = []

    def publish(keys: tuple[ZoneKey, ...]) -> None:
        calls.append(len(keys))
        raise RuntimeError("a worker's feed broke")

    async def run() -> None:
        ring = Keyring(FileKeys(tmp_path), "ECDSAP256SHA256", T, publish, lambda: now[0])
        await ring.load()
        ring.start()
        with pytest.raises(RuntimeError):
            await ring.rollover()
        assert calls == [3]
        assert ring._timer is not None  # the switch is still due
        await ring.close()

    asyncio.run(run())


def test_the_serial_moves_once_a_day_with_the_same_keys_handed_out_again(tmp_path: Path) -> None:
    """Secondaries transfer only when the serial moves: once a day they get the signatures of
    that day (ours are made again after 7 of their 14 days)."""
    published: list[tuple[ZoneKey, ...]] = []
    now = [dnssec.RESIGN_EPOCH * 20000 + 100.0]

    async def run() -> None:
        ring = Keyring(FileKeys(tmp_path), "ECDSAP256SHA256", T, published.append, lambda: now[0])
        await ring.load()
        ring.start()
        before = ring.steps
        assert published == []
        assert ring._timer is not None  # the next day is due even with no rollover
        now[0] += dnssec.RESIGN_EPOCH - 100.0
        ring._timer._run()
        assert len(published) == 1 and published[0] == ring.current  # the same keys
        assert ring.steps == before + 1
        ring._apply()  # the same day: nothing again
        assert len(published) == 1 and ring.steps == before + 1
        await ring.close()
        again = Keyring(FileKeys(tmp_path), "ECDSAP256SHA256", T, published.append, lambda: now[0])
        await again.load()
        assert again.steps == ring.steps  # a restart on that day: the same serial part
        await again.close()

    asyncio.run(run())
