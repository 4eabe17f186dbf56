"""The TLS settings: Gunicorn's names, flags and defaults, and the checks Polycorn adds
(a handshake timeout below --timeout, a key needs its certificate)."""

from __future__ import annotations

import ssl

import pytest
from polycorn.server.config.errors import ConfigError
from polycorn.server.config.loader import load_config
from polycorn.server.tls import TLSConfigError, build_context, tls_enabled


def test_gunicorns_defaults():
    cfg = load_config(["app:app"], {})
    assert (cfg.certfile, cfg.keyfile, cfg.ca_certs, cfg.ciphers) == (None, None, None, None)
    assert cfg.cert_reqs == ssl.CERT_NONE
    assert cfg.suppress_ragged_eofs is True and cfg.do_handshake_on_connect is False
    assert cfg.ssl_handshake_timeout == 5
    assert not tls_enabled(cfg) and build_context(cfg) is None


def test_flags_as_gunicorn_spells_them():
    cfg = load_config(["--certfile", "c.pem", "--keyfile", "k.pem", "--ca-certs", "ca.pem",
                       "--cert-reqs", "2", "--ciphers", "ECDHE+AESGCM",
                       "--do-handshake-on-connect", "--suppress-ragged-eofs",
                       "--ssl-handshake-timeout", "2.5", "app:app"], {})
    assert (cfg.certfile, cfg.keyfile, cfg.ca_certs) == ("c.pem", "k.pem", "ca.pem")
    assert cfg.cert_reqs == ssl.CERT_REQUIRED and cfg.ciphers == "ECDHE+AESGCM"
    assert cfg.do_handshake_on_connect is True and cfg.ssl_handshake_timeout == 2.5
    assert not cfg.warnings


def test_ssl_version_is_accepted_and_ignored_with_a_warning_as_in_gunicorn():
    cfg = load_config(["--ssl-version", "TLSv1_2", "app:app"], {})
    assert len(cfg.warnings) == 1 and "ssl_version" in cfg.warnings[0]
    assert "ssl_context" in cfg.warnings[0]


@pytest.mark.parametrize("args, fragment", [
    (["--cert-reqs", "3"], "is not 0"),
    (["--keyfile", "k.pem"], "keyfile (k.pem) is set but certfile is not"),
    (["--certfile", "c.pem", "--timeout", "4"], "must be below timeout"),
    (["--certfile", "c.pem", "--ssl-handshake-timeout", "30"], "must be below timeout"),
    (["--ssl-handshake-timeout", "0"], "more than 0"),
])
def test_bad_values_are_config_errors(args, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        load_config([*args, "app:app"], {})


def test_timeout_0_means_no_limit_for_the_handshake_check():
    cfg = load_config(["--certfile", "c.pem", "--timeout", "0", "app:app"], {})
    assert cfg.ssl_handshake_timeout == 5


def test_the_ssl_context_hook_is_checked_like_gunicorns(tmp_path):
    conf = tmp_path / "c.py"
    conf.write_text("def ssl_context(config):\n    return None\n")
    with pytest.raises(ConfigError, match="must accept 2 argument"):
        load_config(["-c", str(conf), "app:app"], {})


def test_a_hook_that_returns_no_context_is_named(tmp_path, pki):
    conf = tmp_path / "c.py"
    conf.write_text("def ssl_context(config, factory):\n    return 'not a context'\n")
    cfg = load_config(["-c", str(conf), "--certfile", str(pki.cert), "--keyfile",
                       str(pki.key), "app:app"], {})
    with pytest.raises(TLSConfigError, match="returned str, not an ssl.SSLContext"):
        build_context(cfg)


def test_the_default_context(pki):
    cfg = load_config(["--certfile", str(pki.cert), "--keyfile", str(pki.key),
                       "--ca-certs", str(pki.ca), "--cert-reqs", "1", "app:app"], {})
    context = build_context(cfg)
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_OPTIONAL
