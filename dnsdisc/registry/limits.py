"""Caps on what the registry holds: services, instances per service and in all, distinct tags
per service, the bytes of an instance's or a service's metadata, and named queries.

Pure checks of one write against what memory holds, made before the write goes to the store, so
a refused write changes nothing. Each refusal is a LimitError whose field is the config key of the
cap (``limits.services``...), so a client can tell which cap it met. Zone-file services count
toward the totals but are never refused (a reload must not half-apply a zone file); a shared
store's changes from other nodes are applied as they come (the node that took them checked).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from dnsdisc.errors import LimitError
from dnsdisc.registry.model import Instance


@dataclass(frozen=True, slots=True)
class Limits:
    """The caps; the defaults leave room for the documented scale (100k instances, 10k services,
    a 10k-instance service) while keeping one registrant from exhausting memory."""

    services: int = 50_000
    instances_per_service: int = 20_000
    instances: int = 200_000
    tags_per_service: int = 256
    # Bytes of the ``key=value`` pairs of one instance's or one service's meta, together.
    meta_bytes: int = 4096


# Named queries defined over the API (the config's are not counted): a fixed cap, not a setting.
MAX_QUERIES = 10_000


def check_new_query(queries: int) -> None:
    """Before a write defines a new query while ``queries`` are defined over the API."""
    if queries >= MAX_QUERIES:
        raise LimitError(
            f"{queries} named queries are defined; at most {MAX_QUERIES} may be", "queries"
        )


def meta_bytes(meta: Iterable[tuple[str, str]]) -> int:
    return sum(len(k.encode()) + 1 + len(v.encode()) for k, v in meta)


def check_meta(limits: Limits, meta: Iterable[tuple[str, str]], what: str) -> None:
    size = meta_bytes(meta)
    if size > limits.meta_bytes:
        raise LimitError(
            f"{what} meta holds {size} bytes; limits.meta_bytes allows {limits.meta_bytes}",
            "limits.meta_bytes",
        )


def check_new_service(limits: Limits, services: int) -> None:
    """Before a write creates a service while ``services`` exist."""
    if services >= limits.services:
        raise LimitError(
            f"{services} services are registered; limits.services allows {limits.services}",
            "limits.services",
        )


def tag_counts(instances: Iterable[Instance]) -> Counter[str]:
    """How many of ``instances`` carry each tag (what ``check_instance`` is given)."""
    counts: Counter[str] = Counter()
    for inst in instances:
        counts.update(inst.tags)
    return counts


def check_instance(
    limits: Limits,
    inst: Instance,
    tags: Mapping[str, int],
    held_count: int,
    old: Instance | None,
    total: Callable[[], int],
) -> None:
    """Before ``inst`` replaces ``old`` (None: it is new) in a service holding ``held_count``
    instances that carry ``tags`` (tag -> how many carry it, ``old`` included); ``total()``
    counts the instances registered in all (asked only for a new instance). The cost is that
    of the instance's tags, not of the service."""
    check_meta(limits, inst.meta, f"instance {inst.id!r}")
    if old is None:
        if held_count >= limits.instances_per_service:
            raise LimitError(
                f"service {inst.service!r} holds {held_count} instances; "
                f"limits.instances_per_service allows {limits.instances_per_service}",
                "limits.instances_per_service",
            )
        count = total()
        if count >= limits.instances:
            raise LimitError(
                f"{count} instances are registered; limits.instances allows {limits.instances}",
                "limits.instances",
            )
    mine = set(inst.tags)
    added = sum(1 for t in mine if not tags.get(t))
    if added:
        # Tags only ``old`` carried go with it.
        gone = sum(1 for t in set(old.tags if old else ()) - mine if tags.get(t) == 1)
        distinct = sum(1 for n in tags.values() if n) - gone + added
        if distinct > limits.tags_per_service:
            raise LimitError(
                f"service {inst.service!r} would carry {distinct} distinct tags; "
                f"limits.tags_per_service allows {limits.tags_per_service}",
                "limits.tags_per_service",
            )
