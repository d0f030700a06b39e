"""NOTIFY's replies as real secondaries give them: NSD and Knot answer a NOTIFY for a zone they
do not serve (the catalog zone, to secondaries of the members only) with an unsigned NXDOMAIN or
NOTAUTH. That is an answer, said once as such and not retried; it used to fail the signature
check and go out five times at once as "no answer". A refused datagram (a secondary restarting)
waits before the next try instead of using the tries up within milliseconds."""

from __future__ import annotations

import asyncio
import base64
import logging
import socket
import time
from collections.abc import Callable

import dns.message
import dns.name
import dns.rcode
import dns.tsig
import pytest

from dnsdisc.dnsserver.settings import TransferSettings, TsigKey
from dnsdisc.netaddr import HostPort
from dnsdisc.server import notify
from dnsdisc.server.notify import Notifier

SECRET = b"0123456789abcdef0123456789abcdef"
KEY = dns.tsig.Key("xfr-key.", base64.b64encode(SECRET).decode(), "hmac-sha256")


class Secondary(asyncio.DatagramProtocol):
    """Answers each NOTIFY as ``answer`` makes the reply from the query (None: silence)."""

    def __init__(self, answer: Callable[[dns.message.Message], dns.message.Message | None]):
        self.answer = answer
        self.got = 0
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.got += 1
        query = dns.message.from_wire(data, keyring={dns.name.from_text("xfr-key."): KEY})
        reply = self.answer(query)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply.to_wire(), addr)


async def run_notify(
    answer: Callable[[dns.message.Message], dns.message.Message | None],
) -> tuple[Notifier, Secondary, float]:
    loop = asyncio.get_running_loop()
    secondary = Secondary(answer)
    transport, _ = await loop.create_datagram_endpoint(
        lambda: secondary, local_addr=("127.0.0.1", 0)
    )
    port = transport.get_extra_info("sockname")[1]
    settings = TransferSettings(
        tsig_keys=(TsigKey("xfr-key", "hmac-sha256", SECRET),),
        notify=(HostPort("127.0.0.1", port),),
    )
    notifier = Notifier(settings, lambda: ["catalog.invalid."])
    start = time.monotonic()
    try:
        await notifier._notify("catalog.invalid.", HostPort("127.0.0.1", port))
    finally:
        transport.close()
    return notifier, secondary, time.monotonic() - start


def unsigned(rcode: dns.rcode.Rcode) -> Callable[[dns.message.Message], dns.message.Message]:
    def answer(query: dns.message.Message) -> dns.message.Message:
        reply = dns.message.make_response(query)
        reply.tsig = None  # unsigned, as NSD and Knot answer for a zone they do not serve
        reply.set_rcode(rcode)
        return reply

    return answer


def test_an_unsigned_refusal_is_an_answer_said_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "dnsdisc.server.notify")
    notifier, secondary, took = asyncio.run(run_notify(unsigned(dns.rcode.NOTAUTH)))
    assert secondary.got == 1 and notifier.failed == 1 and notifier.acknowledged == 0
    assert took < 0.5
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "NOTAUTH" in warning.getMessage() and "no answer" not in warning.getMessage()


def test_a_signed_acknowledgement_counts(caplog: pytest.LogCaptureFixture) -> None:
    notifier, secondary, _ = asyncio.run(run_notify(dns.message.make_response))
    assert secondary.got == 1 and notifier.acknowledged == 1 and notifier.failed == 0


def test_an_acknowledgement_with_a_bad_signature_is_not_one() -> None:
    other = dns.tsig.Key("xfr-key.", base64.b64encode(b"y" * 32).decode(), "hmac-sha256")

    def forged(query: dns.message.Message) -> dns.message.Message:
        reply = dns.message.make_response(query)
        reply.use_tsig(other)
        return reply

    notifier, secondary, _ = asyncio.run(run_notify(forged))
    assert secondary.got == 1 and notifier.acknowledged == 0 and notifier.failed == 1


def test_a_refused_datagram_waits_before_the_next_try(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(notify, "FIRST_WAIT", 0.05)
    monkeypatch.setattr(notify, "TRIES", 3)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens there now: each try is refused at once (ICMP port unreachable).
    settings = TransferSettings(notify=(HostPort("127.0.0.1", port),))
    notifier = Notifier(settings, lambda: ["svc.internal."])
    start = time.monotonic()
    asyncio.run(notifier._notify("svc.internal.", HostPort("127.0.0.1", port)))
    assert notifier.sent == 3 and notifier.failed == 1
    assert time.monotonic() - start >= 0.05 + 0.1 + 0.2 - 0.02  # 1, 2, 4 times FIRST_WAIT
