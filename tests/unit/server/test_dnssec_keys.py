"""The DNSSEC keys' timeline (server/dnssec.py): what each key does at each moment of a ZSK
rollover, what is kept and read back (the first release's form too), what cannot be read, and
the Keyring publishing each step once, on time, from a clock the test moves."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path

import pytest

from dnsdisc.dnsserver.dnssec import ACTIVE, PUBLISHED, RETIRED, ZoneKey, key_tag, new_key
from dnsdisc.errors import ConfigError, ConflictError
from dnsdisc.server import dnssec, keystore
from dnsdisc.server.dnssec import Keyring, Timing
from dnsdisc.server.keystore import FileKeys, KeptKey

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
        first = ring.current
        ring.start()
        assert published == []  # the DNS processes started with ``current``
        state = await ring.rollover()
        assert state["rollover"]["under_way"] is True
        assert [k["state"] for k in state["keys"]] == ["active", "active", "published"]
        assert len(published) == 1 and ring.steps == 1
        assert [k.state for k in published[-1]] == [ACTIVE, ACTIVE, PUBLISHED]
        assert ring._timer is not None
        now[0] += 90  # the timer fires: the switch
        ring._timer._run()
        assert [k.state for k in published[-1]] == [ACTIVE, RETIRED, ACTIVE]
        ring._apply()  # nothing changed: nothing published again
        assert len(published) == 2 and ring.steps == 2
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
