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


def test_control_characters_in_messages_are_escaped_in_both_formats() -> None:
    import io
    import json
    import logging

    from dnsdisc import logs

    assert logs.escape("a\r\nb\x1b[31m\x00\x7f\x85\u2028é") == (
        "a\\r\\nb\\x1b[31m\\x00\\x7f\\x85\\u2028é"
    )
    hostile = "web\r\n2026-01-01 00:00:00 INFO forged: \x1b[2J"
    for fmt in ("text", "json"):
        logs.setup("info", fmt)
        stream = io.StringIO()
        logging.getLogger().handlers[0].setStream(stream)  # type: ignore[attr-defined]
        logging.getLogger("dnsdisc.test").info("instance %s is %s", hostile, "critical")
        out = stream.getvalue()
        assert out.count("\n") == 1 and "\x1b" not in out and "\r" not in out, out
        message = json.loads(out)["message"] if fmt == "json" else out
        assert "web\\r\\n2026" in message
    logs.setup("warning", "text")


def test_tracebacks_keep_their_lines() -> None:
    import io
    import logging

    from dnsdisc import logs

    logs.setup("info", "text")
    stream = io.StringIO()
    logging.getLogger().handlers[0].setStream(stream)  # type: ignore[attr-defined]
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("dnsdisc.test").exception("failed\n")
    out = stream.getvalue()
    assert "failed\\n" in out and "Traceback" in out.splitlines()[1]
    logs.setup("warning", "text")
