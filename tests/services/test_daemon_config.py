"""Daemon settings: defaults < TOML file < flags, one-line errors naming the
file and the key, ``--print-config`` with secrets masked, the sample file."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from dofpy_services.authenticator.service import AuthenticatorConfig
from dofpy_services.cli import main
from dofpy_services.daemon.config import (
    INT,
    ConfigError,
    DaemonConfig,
    config_to_toml,
    load_config,
    option,
)
from dofpy_services.update.service import UpdateConfig

DOCS = Path(__file__).resolve().parents[2] / "docs"


@dataclass(frozen=True, slots=True)
class ExampleConfig(DaemonConfig):
    workers: int = option(INT, "worker tasks", default=4)


def write(tmp_path: Path, text: str, name: str = "example.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_then_file_then_flags(tmp_path: Path) -> None:
    assert load_config(ExampleConfig).workers == 4
    path = write(tmp_path, 'workers = 7\nmetrics_listen = "127.0.0.1:9100"\nlog_format = "json"\n')
    from_file = load_config(ExampleConfig, path)
    assert from_file.workers == 7 and from_file.metrics_listen == ("127.0.0.1", 9100)
    assert from_file.log_format == "json" and from_file.listen == ("0.0.0.0", 3567)
    flagged = load_config(
        ExampleConfig, path, {"workers": "9", "log_format": None, "listen": "[::1]:5"}
    )
    assert flagged.workers == 9 and flagged.log_format == "json"
    assert flagged.listen == ("::1", 5)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('listen = "x"', "example.toml: key 'listen': expected HOST:PORT, got 'x'"),
        ("workers = 1.5", "example.toml: key 'workers': expected an integer, got 1.5"),
        ("workers = true", "example.toml: key 'workers': expected an integer, got True"),
        ('log_format = "xml"', "key 'log_format': expected text or json, got 'xml'"),
        ("drain_timeout = -1", "key 'drain_timeout': expected a number of seconds >= 0"),
        ("max_requests_per_peer = 0", "key 'max_requests_per_peer': expected an integer >= 1"),
        ("max_request_bytes = 1000", "key 'max_request_bytes': expected an integer >= 65507"),
        ("duplicate_bytes = 1.5", "key 'duplicate_bytes': expected an integer >= 65507"),
        (
            "lisen = 3",
            "example.toml: unknown key 'lisen' (known keys: allow_plaintext, credentials, db,",
        ),
        ("workers = ", "example.toml: not valid TOML"),
    ],
)
def test_a_wrong_key_type_or_value_is_one_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(ExampleConfig, write(tmp_path, text + "\n"))
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_the_request_limits_read_from_flags(tmp_path: Path) -> None:
    loaded = load_config(ExampleConfig, None, {"max_requests_per_peer": "8"})
    assert (loaded.max_requests_per_peer, loaded.max_requests_in_progress) == (8, 4096)
    with pytest.raises(ConfigError, match=r"^--duplicate-bytes: expected an integer >= 65507"):
        load_config(ExampleConfig, None, {"duplicate_bytes": "100"})


def test_a_wrong_flag_names_the_flag(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^--metrics-listen: expected HOST:PORT"):
        load_config(ExampleConfig, None, {"metrics_listen": "9100"})


def test_a_required_key_given_nowhere(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"key 'db': expected a value.*--db"):
        load_config(AuthenticatorConfig, write(tmp_path, 'listen = "127.0.0.1:0"\n'))


def test_print_config_round_trips_and_masks(tmp_path: Path) -> None:
    config = load_config(
        AuthenticatorConfig,
        write(tmp_path, 'db = "postgresql://dofpy:hunter2@db.example/auth"\nsealed_only = true\n'),
        {"metrics_listen": "127.0.0.1:9100", "credentials": "as.cred"},
    )
    text = config_to_toml(config)
    assert "hunter2" not in text and 'db = "postgresql://dofpy:***@db.example/auth"' in text
    again = load_config(AuthenticatorConfig, write(tmp_path, text, "again.toml"))
    assert again.sealed_only and again.metrics_listen == ("127.0.0.1", 9100)
    assert again.credentials == "as.cred" and again.keylog is None


def test_cli_print_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(
        tmp_path, 'db = "postgresql://u:s3cret@h/d"\nlisten = "127.0.0.1:1"\nsealed_only = false\n'
    )
    status = main(["authenticator", "serve", "--config", str(path), "--print-config"])
    out, err = capsys.readouterr()
    assert status == 0 and err == ""
    parsed = tomllib.loads(out)
    assert parsed["db"] == "postgresql://u:***@h/d" and parsed["listen"] == "127.0.0.1:1"
    assert "s3cret" not in out


def test_cli_bad_config_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, 'db = "as.db"\nlisten = "x"\n', "auth.toml")
    status = main(["authenticator", "serve", "--config", str(path)])
    out, err = capsys.readouterr()
    assert status == 2 and out == ""
    assert err == "dofpy: error: auth.toml: key 'listen': expected HOST:PORT, got 'x'\n"


def test_cli_bool_flag_alone_means_true(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(
        [
            *("authenticator", "serve", "--db", "x.db", "--sealed-only"),
            *("--credentials", "as.cred", "--print-config"),
        ]
    )
    assert status == 0 and "sealed_only = true" in capsys.readouterr().out


def test_sample_authenticator_toml_is_a_valid_config() -> None:
    config = load_config(AuthenticatorConfig, DOCS / "examples" / "authenticator.toml")
    assert config.credentials is not None and config.metrics_listen is not None
    assert config.log_format == "json"


def test_a_retired_key_is_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An Update service file from before ``bytes_share`` went (any
    ``--print-config`` output had it) still loads; another unknown key does not."""
    path = write(tmp_path, 'db = "c.db"\nbytes_share = 0.5\n', "update.toml")
    with caplog.at_level("WARNING"):
        config = load_config(UpdateConfig, path)
    assert config.db == "c.db" and not hasattr(config, "bytes_share")
    (warned,) = [r.getMessage() for r in caplog.records]
    assert warned.startswith("update.toml: key 'bytes_share' is ignored: ")
    assert "bytes_share" not in config_to_toml(config)
    with pytest.raises(ConfigError, match="unknown key 'bytes_share'"):
        load_config(ExampleConfig, write(tmp_path, "bytes_share = 0.5\n"))
