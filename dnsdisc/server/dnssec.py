"""The zone keys of ``dnssec.enabled``: made at the first start, kept in the data directory, read
at every start after.

``<data_dir>/dnssec/keys.json`` (the directory 0700, the file 0600, written whole and renamed
into place) holds each key's PKCS#8 private half (base64), algorithm, role (KSK or ZSK), state
and times. One KSK and one ZSK of ``dnssec.algorithm`` are made when there is none; keys of
another algorithm than the one configured are kept and used (an algorithm rollover is not
offered: say so, keep signing). ``dnsdisc dnssec ds`` reads the same file.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from dnsdisc.dnsserver.dnssec import ACTIVE, ALGORITHMS, ZoneKey, fingerprint, key_tag, new_key
from dnsdisc.errors import ConfigError

log = logging.getLogger(__name__)

FILE = Path("dnssec") / "keys.json"


def key_file(data_dir: Path) -> Path:
    return data_dir / FILE


def load_keys(data_dir: Path) -> list[ZoneKey]:
    """The keys kept in ``data_dir`` (none: an empty list). A file that cannot be read is a
    ConfigError naming it: signing with other keys than the published ones makes every answer
    bogus, so nothing is made in its place."""
    path = key_file(data_dir)
    try:
        raw = path.read_text()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ConfigError(str(path), "dnssec", f"cannot read the DNSSEC keys: {exc}") from None
    try:
        data = json.loads(raw)
        return [_key(entry) for entry in data["keys"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(str(path), "dnssec", f"not a DNSSEC key file ({exc})") from None


def _key(entry: dict[str, Any]) -> ZoneKey:
    return ZoneKey(
        base64.b64decode(entry["private"]),
        int(entry["algorithm"]),
        bool(entry["ksk"]),
        str(entry["state"]),
        float(entry.get("created", 0)),
        float(entry.get("changed", 0)),
    )


def save_keys(data_dir: Path, keys: list[ZoneKey]) -> None:
    path = key_file(data_dir)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    body = {
        "keys": [
            {
                "private": base64.b64encode(k.private).decode(),
                "algorithm": k.algorithm,
                "ksk": k.ksk,
                "state": k.state,
                "created": k.created,
                "changed": k.changed,
            }
            for k in keys
        ]
    }
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(body, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def keys_for(data_dir: Path, algorithm: str) -> list[ZoneKey]:
    """The keys to sign with: those kept, or a new KSK and ZSK made and kept now."""
    keys = load_keys(data_dir)
    wanted = ALGORITHMS[algorithm]
    if not keys:
        now = time.time()
        keys = [new_key(wanted, True, now), new_key(wanted, False, now)]
        save_keys(data_dir, keys)
        log.info(
            "dnssec: made a KSK (tag %d) and a ZSK (tag %d), %s, kept in %s; publish the DS "
            "records `dnsdisc dnssec ds` prints at the parent zone",
            key_tag(keys[0]), key_tag(keys[1]), algorithm, key_file(data_dir),
        )  # fmt: skip
    elif not any(k.algorithm == wanted for k in keys):
        log.warning(
            "dnssec: the kept keys are not %s (dnssec.algorithm); they keep signing: an "
            "algorithm rollover is not offered",
            algorithm,
        )
    if not any(k.state == ACTIVE and k.ksk for k in keys) or not any(
        k.state == ACTIVE and not k.ksk for k in keys
    ):
        raise ConfigError(
            str(key_file(data_dir)), "dnssec", "the key file has no active KSK and ZSK"
        )
    for k in keys:
        log.debug("dnssec key %s tag %d %s %s", fingerprint(k), key_tag(k),
                  "KSK" if k.ksk else "ZSK", k.state)  # fmt: skip
    return keys
