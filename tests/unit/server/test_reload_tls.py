"""What a reload does with ``http.tls``: the files are read again, but TLS and mutual TLS are
turned on or off only by a restart, and a file that cannot be loaded refuses the reload."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from dnsdisc.config.load import Config
from dnsdisc.errors import ConfigError
from dnsdisc.server.reload import _tls_context
from dnsdisc.tls import TlsFiles
from tests.support.certs import Ca


def test_reload_reads_the_files_again_but_does_not_turn_tls_on_or_off(tmp_path: Path) -> None:
    ca = Ca.make(tmp_path)
    pair = ca.issue(tmp_path, "server", "server")
    plain, tls = Config(), Config(http_tls=TlsFiles(pair.cert, pair.key))
    mutual = Config(http_tls=TlsFiles(pair.cert, pair.key, ca.cert))

    assert _tls_context(plain, tls) == (plain, None)  # on: after a restart
    assert _tls_context(tls, plain) == (tls, None)  # off: after a restart
    kept, ctx = _tls_context(mutual, tls)  # the CA stays until a restart
    assert kept.http_tls == mutual.http_tls and ctx is not None
    assert len(ctx.get_ca_certs()) == 1
    again, ctx = _tls_context(tls, tls)
    assert again == tls and ctx is not None and ctx.get_ca_certs() == []

    broken = replace(tls, http_tls=TlsFiles(pair.cert, tmp_path / "missing.key"))
    with pytest.raises(ConfigError) as err:
        _tls_context(tls, broken)
    assert err.value.key == "http.tls.cert_file"
