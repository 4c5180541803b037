"""Settings: defaults, environment, TOML file, precedence, and errors that name the setting."""

from pathlib import Path

import pytest

from imaging_hub.config import DuplicatePolicy, NodeService, UnknownAetPolicy, load_settings
from imaging_hub.errors import ConfigError


def test_defaults_match_the_interface_contract() -> None:
    s = load_settings()
    assert s.data_dir == Path("./hub-data")
    assert s.dicom_aet == "IMAGING_HUB"
    assert (s.dicom_host, s.dicom_port) == ("0.0.0.0", 11112)
    assert (s.http_host, s.http_port) == ("127.0.0.1", 8000)
    assert s.embedded_broker
    assert s.resolved_database_url.startswith("sqlite:///")
    assert s.resolved_database_url.endswith("hub-data/index.sqlite")
    assert s.dicom_unknown_aets == UnknownAetPolicy.STORE
    assert s.ingest_duplicates == DuplicatePolicy.NEWEST


def test_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUB_DICOM_PORT", "4242")
    monkeypatch.setenv("HUB_BROKER_URL", "redis://127.0.0.1:6379/0")
    s = load_settings()
    assert s.dicom_port == 4242
    assert not s.embedded_broker


def test_toml_sections_map_to_flat_names_and_env_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "hub.toml"
    config.write_text(
        """
data_dir = "/srv/hub"
[dicom]
aet = "FROM_FILE"
port = 104
unknown_aets = "refuse"
[[dicom.nodes]]
aet = "MRI_1"
host = "10.0.0.5"
port = 104
services = ["store", "move-destination"]
[http]
port = 9000
"""
    )
    monkeypatch.setenv("HUB_HTTP_PORT", "9100")
    s = load_settings(config)
    assert s.data_dir == Path("/srv/hub")
    assert s.dicom_aet == "FROM_FILE"
    assert s.dicom_port == 104
    assert s.dicom_unknown_aets == UnknownAetPolicy.REFUSE
    assert s.dicom_nodes[0].aet == "MRI_1"
    assert s.dicom_nodes[0].services == [NodeService.STORE, NodeService.MOVE_DESTINATION]
    assert s.http_port == 9100  # environment wins over the file
    assert s.config == config


def test_hub_config_env_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "hub.toml"
    config.write_text('[dicom]\naet = "VIA_ENV"\n')
    monkeypatch.setenv("HUB_CONFIG", str(config))
    assert load_settings().dicom_aet == "VIA_ENV"


def test_bad_env_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUB_DICOM_PORT", "eleven")
    with pytest.raises(ConfigError, match="HUB_DICOM_PORT"):
        load_settings()


def test_bad_aet_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUB_DICOM_AET", "A_TITLE_FAR_TOO_LONG")
    with pytest.raises(ConfigError, match=r"HUB_DICOM_AET.*16"):
        load_settings()


def test_bad_file_value_names_the_setting(tmp_path: Path) -> None:
    config = tmp_path / "hub.toml"
    config.write_text('[dicom]\nunknown_aets = "maybe"\n')
    with pytest.raises(ConfigError, match="dicom_unknown_aets"):
        load_settings(config)


def test_unknown_setting_in_file_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "hub.toml"
    config.write_text("[dicom]\nporrt = 104\n")
    with pytest.raises(ConfigError, match="dicom_porrt"):
        load_settings(config)


def test_missing_or_broken_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[dicom\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(broken)


def test_error_names_the_environment_when_it_overrides_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "hub.toml"
    config.write_text("[dicom]\nport = 104\n")
    monkeypatch.setenv("HUB_DICOM_PORT", "not-a-port")
    with pytest.raises(ConfigError, match="HUB_DICOM_PORT dicom_port"):
        load_settings(config)
