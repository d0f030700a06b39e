"""Service settings ``https`` and ``dnssd``: validated once, each error naming its field, over
the API (400), in the config file (exit 2 naming file and key), and kept through the store."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from dnsdisc import cli
from dnsdisc.api.http import Api, ServerState
from dnsdisc.config.load import from_mapping
from dnsdisc.errors import ConfigError, ValidationError
from dnsdisc.registry.model import HttpsSettings, ServiceSettings
from dnsdisc.registry.registry import Registry

ECH = "AARhYmNk"  # an ECHConfigList: a length of 4, then 4 bytes

BAD = [
    ({"https": "h2"}, "https"),
    ({"https": {"alpn": "h2"}}, "https.alpn"),
    ({"https": {"alpn": ["h2", ""]}}, "https.alpn"),
    ({"https": {"alpn": ["h2,h3"]}}, "https.alpn"),
    ({"https": {"alpn": ["h 2"]}}, "https.alpn"),
    ({"https": {"alpn": [2]}}, "https.alpn"),
    ({"https": {"alpn": ["h2", "h2"]}}, "https.alpn"),
    ({"https": {"alpn": ["x" * 256]}}, "https.alpn"),
    ({"https": {"alpn": [f"p{n}" for n in range(17)]}}, "https.alpn"),
    ({"https": {"no_default_alpn": True}}, "https.no_default_alpn"),
    ({"https": {"alpn": ["h2"], "no_default_alpn": "yes"}}, "https.no_default_alpn"),
    ({"https": {"port": 0}}, "https.port"),
    ({"https": {"port": "443"}}, "https.port"),
    ({"https": {"ech": "not base64!"}}, "https.ech"),
    ({"https": {"ech": "AAVhYmNk"}}, "https.ech"),  # the length says 5, 4 follow
    ({"https": {"ipv4hint": "10.0.0.1"}}, "https.ipv4hint"),
    ({"dnssd": "yes"}, "dnssd"),
]


@pytest.mark.parametrize(("body", "field"), BAD)
def test_bad_values_name_their_field(body: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        ServiceSettings.from_json("web", body)
    assert info.value.field == field


def test_good_values_round_trip_through_json() -> None:
    body = {
        "https": {"alpn": ["h2", "h3"], "no_default_alpn": True, "port": 443, "ech": ECH},
        "dnssd": True,
    }
    settings = ServiceSettings.from_json("web", body)
    assert settings.https == HttpsSettings(("h2", "h3"), True, 443, b"\x00\x04abcd")
    assert settings.dnssd
    out = settings.to_json()
    assert out["https"] == {**body["https"]} and out["dnssd"] is True  # type: ignore[dict-item]
    assert ServiceSettings.from_json("web", {k: out[k] for k in ("https", "dnssd")}) == settings
    # https: {} is HTTP/1.1 (RFC 9460's default ALPN) on each instance's port.
    assert ServiceSettings.from_json("web", {"https": {}}).https == HttpsSettings()
    # Missing keys keep the defaults (the config's), null removes the records.
    assert ServiceSettings.from_json("web", {}, settings).https == settings.https
    assert ServiceSettings.from_json("web", {"https": None}, settings).https is None
    off = ServiceSettings.from_json("web", {})
    assert off.https is None and off.dnssd is False


@pytest.mark.parametrize(("body", "field"), BAD)
def test_config_errors_name_the_file_and_the_key(body: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        from_mapping({"services": {"web": body}}, "conf.yaml")
    assert str(info.value).startswith(f"conf.yaml: services.web.{field}:"), str(info.value)
    with pytest.raises(ConfigError) as info:
        from_mapping({"defaults": body}, "conf.yaml")
    assert str(info.value).startswith(f"conf.yaml: defaults.{field}:"), str(info.value)


def test_a_bad_https_key_in_the_config_file_exits_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("services:\n  web:\n    https:\n      alpn: [h2, 'h2,h3']\n")
    assert cli.main(["serve", "--config", str(config), "--data-dir", str(tmp_path / "d")]) == 2
    assert f"{config}: services.web.https.alpn:" in capsys.readouterr().err


def test_config_defaults_turn_dnssd_on_for_every_service() -> None:
    cfg = from_mapping(
        {"defaults": {"dnssd": True}, "services": {"web": {"https": {"alpn": ["h3"]}}}}, "c.yaml"
    )
    assert cfg.defaults.dnssd and cfg.services["web"].dnssd
    assert cfg.services["web"].https == HttpsSettings(("h3",))


def test_the_api_answers_400_naming_the_field_and_stores_good_settings() -> None:
    async def main() -> None:
        registry = Registry()
        api = Api(registry, ServerState(store_open=True, listeners_up=True))
        async with TestClient(TestServer(api.app())) as client:
            resp = await client.put("/v1/services/web", json={"https": {"alpn": ["h2", "h2"]}})
            assert resp.status == 400
            body = await resp.json()
            assert body["field"] == "https.alpn" and "twice" in body["error"]
            resp = await client.put("/v1/services/web", json={"https": {"alpns": ["h2"]}})
            assert resp.status == 400 and (await resp.json())["field"] == "https.alpns"
            resp = await client.put(
                "/v1/services/web", json={"https": {"alpn": ["h2"], "ech": ECH}, "dnssd": True}
            )
            assert resp.status == 201
            shown = await (await client.get("/v1/services/web")).json()
            assert shown["https"] == {
                "alpn": ["h2"],
                "no_default_alpn": False,
                "port": None,
                "ech": ECH,
            }
            assert shown["dnssd"] is True

    asyncio.run(main())
