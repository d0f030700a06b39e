"""Errors map to an HTTP status and a DNS rcode by class hierarchy, in one place."""

from __future__ import annotations

import dns.rcode
import pytest

from dnsdisc.errors import (
    AuthError,
    ConfigError,
    ConflictError,
    CrossSiteError,
    DnsdiscError,
    MalformedQueryError,
    MisdirectedError,
    NotFoundError,
    StoreError,
    StoreUnavailableError,
    ThrottledError,
    UnauthenticatedError,
    ValidationError,
    http_status_of,
    rcode_of,
)
from dnsdisc.store.etcd.gateway import EtcdRequestError


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (ValidationError("port", "bad"), 400),
        (NotFoundError("no such service"), 404),
        (ConflictError("static"), 409),
        (AuthError("no right", "service"), 403),
        (UnauthenticatedError("who are you", "Authorization"), 401),
        (ThrottledError("slow down", "Authorization"), 429),
        (CrossSiteError("not JSON", "Content-Type"), 415),
        (MisdirectedError("rebound", "Host"), 421),
        (StoreError("disk full"), 503),
        (StoreUnavailableError("etcd unreachable"), 503),
        # A subclass declared elsewhere maps by its ancestry (it was a 400 by exact type).
        (EtcdRequestError("etcdserver: permission denied"), 503),
        (ConfigError("f.yaml", "domain", "bad"), 400),
        (DnsdiscError("unclassified"), 500),
        (RuntimeError("not ours"), 500),
    ],
)
def test_http_status_follows_the_class_hierarchy(exc: BaseException, status: int) -> None:
    assert http_status_of(exc) == status


def test_rcode_follows_the_class_hierarchy() -> None:
    from dnsdisc.dnsserver.wire import FormatError

    assert rcode_of(FormatError("trailing garbage")) == dns.rcode.FORMERR
    assert rcode_of(MalformedQueryError("x")) == dns.rcode.FORMERR
    assert rcode_of(StoreError("x")) == dns.rcode.SERVFAIL
    assert rcode_of(KeyError("x")) == dns.rcode.SERVFAIL


def test_a_batch_error_has_its_causes_status_and_position() -> None:
    from dnsdisc.errors import NotFoundError, ValidationError, http_status_of
    from dnsdisc.registry.batch import BatchError

    wrapped = BatchError(3, NotFoundError("no instance 'x'", "id"))
    assert http_status_of(wrapped) == 404 and wrapped.op == 3 and wrapped.field == "id"
    assert http_status_of(BatchError(0, ValidationError("port", "bad"))) == 400
