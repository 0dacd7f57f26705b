"""Config loading, CLI argument errors and log redaction."""

from __future__ import annotations

import logging

import pytest
from click.testing import CliRunner

from node.cli import main
from node.config import load_config
from node.errors import ConfigError
from node.logs import KeyValueFormatter, RedactingFilter


def test_config_layers_file_env_flags(tmp_path):
    f = tmp_path / "n.toml"
    f.write_text('rpc_url = "http://127.0.0.1:1111"\n[provider]\nprice_per_gpu_second = 5\n')
    cfg = load_config(f, env={"GPUNET_RPC_URL": "http://127.0.0.1:2222", "GPUNET_PROVIDER__REGION": "eu"},
                      overrides={"api_port": 9000})
    assert cfg.rpc_url == "http://127.0.0.1:2222"
    assert cfg.provider.price_per_gpu_second == 5 and cfg.provider.region == "eu"
    assert cfg.api_port == 9000


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bogus = 1\n", "unknown config key"),
        ('api_host = "0.0.0.0"\n', "loopback"),
        ("[provider]\nprice_per_gpu_second = 0\n", "price_per_gpu_second"),
        ("[provider]\nmin_duration = 100\nmax_duration = 10\n", "min_duration"),
        ('api_port = "x"\n', "api_port"),
        ('rpc_url = "ftp://x"\n', "rpc_url"),
        ("not toml [", "not valid TOML"),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path, text, message):
    f = tmp_path / "n.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(f, env={})


def test_cli_bad_arguments_exit_2_with_a_message():
    r = CliRunner().invoke(main, ["run", "--api-port", "99999"])
    assert r.exit_code == 2 and "api-port" in r.output
    r = CliRunner().invoke(main, ["lease", "open", "--offer-id", "0x01", "--gpus", "0", "--deposit", "1"])
    assert r.exit_code == 2


def test_cli_missing_config_file_is_one_line_error(tmp_path):
    r = CliRunner().invoke(main, ["run", "--config", str(tmp_path / "missing.toml")])
    assert r.exit_code == 1 and "not found" in r.output


def test_cli_dead_node_api_is_a_clear_error():
    r = CliRunner().invoke(main, ["offers", "--api", "http://127.0.0.1:9"])
    assert r.exit_code == 1 and "unreachable" in r.output


def test_logs_redact_keys_and_signatures():
    record = logging.LogRecord("x", logging.INFO, "", 0, "signing with 0x" + "ab" * 32, None, None)
    record.private_key = "0x" + "cd" * 32
    record.api_token = "tok-value"
    record.lease_id = 7
    record.offer_id = "0x" + "ef" * 32  # a public id: kept
    record.error = "boom 0x" + "12" * 32  # unknown long hex inside a value: masked
    RedactingFilter().filter(record)
    text = KeyValueFormatter().format(record)
    assert "ab" * 32 not in text and "cd" * 32 not in text and "tok-value" not in text and "12" * 32 not in text
    assert "lease_id=7" in text and "ef" * 32 in text
