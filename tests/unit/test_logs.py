"""logs: JSON logs are one object per line."""

from __future__ import annotations


def test_json_logs_are_one_object_per_line() -> None:
    import io
    import json
    import logging

    from dnsdisc import logs

    logs.setup("info", "json")
    stream = io.StringIO()
    logging.getLogger().handlers[0].setStream(stream)  # type: ignore[attr-defined]
    logging.getLogger("dnsdisc.test").info("registered %s", "web/web-1")
    event = json.loads(stream.getvalue().strip())
    assert event["level"] == "info" and event["message"] == "registered web/web-1"
    assert event["logger"] == "dnsdisc.test" and event["time"].endswith("+00:00")
    logs.setup("warning", "text")
