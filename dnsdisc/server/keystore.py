"""Where the DNSSEC keys are kept (``server/dnssec.py`` decides what they do): one document of
every key, its PKCS#8 private half, algorithm, role and RFC 7583 timeline.

- ``FileKeys``: ``<data_dir>/dnssec/keys.json`` (directory 0700, file 0600, written whole and
  renamed into place);
- ``EtcdKeys``: ``<prefix>/dnssec/keys`` with ``storage: etcd``, so that every node signs with
  the same keys; written only by a compare on the revision read (the first node to store keys
  wins, a rollover started on two nodes at once is written once).

A document that cannot be read is a ConfigError naming where it is: signing with other keys
than the published ones makes every answer bogus, so nothing is made in their place.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import dns.exception

from dnsdisc.dnsserver.dnssec import ACTIVE, ZoneKey, key_tag
from dnsdisc.errors import ConfigError

if TYPE_CHECKING:
    from dnsdisc.config.load import Config
    from dnsdisc.store.settings import EtcdSettings

FILE = Path("dnssec") / "keys.json"
ETCD_KEY = "dnssec/keys"  # under the etcd prefix


@dataclass(frozen=True, slots=True)
class KeptKey:
    """One key as it is kept: its private half and the times (seconds since the epoch) of its
    events; None: the event is not planned."""

    private: bytes  # PKCS#8 DER
    algorithm: int
    ksk: bool
    created: float
    publish: float
    activate: float | None
    inactive: float | None = None
    delete: float | None = None
    # The events of the keys a rollover dropped before this one was made (dnssec.step_count):
    # carried on so that the count the SOA serial follows never goes back.
    carried: int = 0


def encode(kept: Sequence[KeptKey]) -> dict[str, Any]:
    return {
        "keys": [
            {
                "private": base64.b64encode(k.private).decode(),
                "algorithm": k.algorithm,
                "ksk": k.ksk,
                "created": k.created,
                "publish": k.publish,
                "activate": k.activate,
                "inactive": k.inactive,
                "delete": k.delete,
                "carried": k.carried,
            }
            for k in kept
        ]
    }


def decode(data: Any, where: str) -> list[KeptKey]:
    """The keys of a kept document; a ConfigError naming ``where`` for anything else: signing
    with other keys than the published ones makes every answer bogus, so nothing is made in the
    place of keys that cannot be read."""
    try:
        out = []
        for e in data["keys"]:
            created = float(e.get("created", 0))
            if "publish" in e:
                publish, activate = float(e["publish"]), _time(e.get("activate"))
            else:  # the first release's form: a state, every key active since it was made
                publish, activate = created, created if e["state"] == ACTIVE else None
            out.append(
                KeptKey(
                    base64.b64decode(e["private"], validate=True),
                    int(e["algorithm"]),
                    _flag(e["ksk"]),
                    created,
                    publish,
                    activate,
                    _time(e.get("inactive")),
                    _time(e.get("delete")),
                    int(e.get("carried", 0)),
                )
            )
        for k in out:
            key_tag(ZoneKey(k.private, k.algorithm, k.ksk))  # the private half must load
        return out
    except (ValueError, KeyError, TypeError, AttributeError, dns.exception.DNSException) as exc:
        # AttributeError: an entry that is not an object; DNSException: an algorithm dnspython
        # does not know, or not the private key's.
        raise ConfigError(where, "dnssec", f"not a DNSSEC key document ({exc})") from None


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):  # bool("false") would be True: a KSK taken for a ZSK
        raise ValueError(f"ksk: expected true or false, got {value!r}")
    return value


def _time(value: Any) -> float | None:
    return None if value is None else float(value)


class KeyStore(Protocol):
    """Where the key document is kept. ``load`` gives it with a version; ``save`` writes it
    only if it is still at that version (False: changed meanwhile, by another node)."""

    where: str
    kind: str  # "data_dir" or "etcd" (GET /v1/dnssec's kept_in)
    shared: bool  # other nodes write it too: read it again now and then

    async def load(self) -> tuple[list[KeptKey], int]: ...

    async def save(self, kept: Sequence[KeptKey], version: int) -> bool: ...

    async def close(self) -> None: ...


class FileKeys:
    """The document in the data directory; one process writes it, so versions are not kept."""

    kind, shared = "data_dir", False

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / FILE
        self.where = str(self.path)

    async def load(self) -> tuple[list[KeptKey], int]:
        return self.load_now(), 0

    def load_now(self) -> list[KeptKey]:
        try:
            raw = self.path.read_text()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise ConfigError(self.where, "dnssec", f"cannot read the DNSSEC keys: {exc}") from None
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise ConfigError(self.where, "dnssec", f"not a DNSSEC key file ({exc})") from None
        return decode(data, self.where)

    async def save(self, kept: Sequence[KeptKey], version: int) -> bool:
        self.save_now(kept)
        return True

    def save_now(self, kept: Sequence[KeptKey]) -> None:
        path = self.path
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(encode(kept), f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    async def close(self) -> None:
        return None


class EtcdKeys:
    """The document at ``<prefix>/dnssec/keys`` in etcd, through its own gateway (the keys are
    read before the registry's store opens, and by ``dnsdisc dnssec ds``). Anyone who can read
    the prefix can read the private keys: etcd's own authentication guards them."""

    kind, shared = "etcd", True

    def __init__(self, settings: EtcdSettings) -> None:
        from dnsdisc.store.etcd.gateway import Gateway
        from dnsdisc.store.etcd.keys import Keys

        self.gateway = Gateway(settings)
        self.key = Keys(settings.prefix).prefix + ETCD_KEY
        self.where = f"etcd {', '.join(settings.endpoints)} {self.key}"

    async def load(self) -> tuple[list[KeptKey], int]:
        from dnsdisc.store.etcd.keys import b64, unb64

        if not self.gateway.is_open:
            self.gateway.open()
        reply = await self.gateway.call("/v3/kv/range", {"key": b64(self.key)})
        kvs = reply.get("kvs") or []
        if not kvs:
            return [], 0
        try:
            data = json.loads(unb64(kvs[0].get("value", "")))
        except ValueError as exc:
            raise ConfigError(self.where, "dnssec", f"not a DNSSEC key document ({exc})") from None
        return decode(data, self.where), int(kvs[0]["mod_revision"])

    async def save(self, kept: Sequence[KeptKey], version: int) -> bool:
        from dnsdisc.store.etcd.keys import b64, put_request

        if not self.gateway.is_open:
            self.gateway.open()
        # Written only if nobody wrote since ``version`` was read (0: only if absent).
        compare = {"key": b64(self.key), "target": "MOD", "result": "EQUAL",
                   "mod_revision": str(version)}  # fmt: skip
        reply = await self.gateway.call(
            "/v3/kv/txn",
            {"compare": [compare], "success": [put_request(self.key, encode(kept))]},
            write=True,
        )
        return bool(reply.get("succeeded"))

    async def close(self) -> None:
        if self.gateway.is_open:
            await self.gateway.close()


def key_store(config: Config) -> KeyStore:
    if config.storage == "etcd":
        return EtcdKeys(config.etcd)
    return FileKeys(config.data_dir)
