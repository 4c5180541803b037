"""Settings: one typed object read from ``HUB_*`` environment variables and an optional TOML file.

The environment wins over the file. TOML sections map onto flat names: ``[dicom] aet = "X"``
is the same setting as ``HUB_DICOM_AET=X``; ``[[dicom.nodes]]`` entries become ``dicom_nodes``.
Only this module reads the environment.
"""

from __future__ import annotations

import os
import tomllib
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from imaging_hub.errors import ConfigError

__all__ = [
    "DicomNode",
    "DuplicatePolicy",
    "NodeService",
    "Settings",
    "UnknownAetPolicy",
    "load_settings",
]


class UnknownAetPolicy(StrEnum):
    """What a calling AE title that is not a known node may do."""

    STORE = "store"
    REFUSE = "refuse"
    ALL = "all"


class DuplicatePolicy(StrEnum):
    """What happens when an instance arrives again with different bytes under the same UID."""

    #: Store it as a new version; the index shows the newest, older files and rows are kept.
    NEWEST = "newest"
    #: Refuse it (a failure status) and keep it in quarantine.
    REJECT = "reject"
    #: Answer success but keep only the first version; the new bytes go to quarantine.
    KEEP_FIRST = "keep-first"


class NodeService(StrEnum):
    """What a known DICOM node may do."""

    STORE = "store"
    QUERY = "query"
    RETRIEVE = "retrieve"
    MOVE_DESTINATION = "move-destination"


#: The shortest JWT signing secret accepted from the settings (HS256 wants at least 256 bits).
MIN_SECRET_LENGTH = 32
#: Fragments that mark a secret copied from an example rather than generated.
_PLACEHOLDERS = ("changeme", "changethis", "secret", "password", "example", "placeholder", "xxxx")


def _check_jwt_secret(value: SecretStr | None) -> SecretStr | None:
    """Refuse a configured signing secret that is short or an obvious placeholder."""
    if value is None or not value.get_secret_value():
        return None
    secret = value.get_secret_value()
    hint = "set HUB_AUTH_JWT_SECRET to a random string (or unset it to use a generated one)"
    if len(secret) < MIN_SECRET_LENGTH:
        raise ValueError(f"the secret has fewer than {MIN_SECRET_LENGTH} characters: {hint}")
    squashed = secret.lower().replace("_", "").replace("-", "")
    if any(p in squashed for p in _PLACEHOLDERS) or len(set(secret)) < 10:
        raise ValueError(f"the secret looks like a placeholder: {hint}")
    return value


def _check_aet(value: str) -> str:
    """Validate an AE title (PS3.5 6.2: 1-16 characters, no backslash or control characters)."""
    stripped = value.strip()
    if not 1 <= len(stripped) <= 16:
        raise ValueError("an AE title has 1 to 16 characters")
    if "\\" in stripped or any(ord(c) < 32 or ord(c) > 126 for c in stripped):
        raise ValueError("an AE title has no backslash and no control or non-ASCII characters")
    return stripped


class DicomNode(BaseModel):
    """A known DICOM peer: who it is, where it listens, and what it may do."""

    aet: str
    host: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    services: list[NodeService] = Field(
        default_factory=lambda: [NodeService.STORE, NodeService.QUERY, NodeService.RETRIEVE]
    )

    _validate_aet = field_validator("aet")(classmethod(lambda cls, v: _check_aet(v)))


class Settings(BaseSettings):
    """Every setting of the hub, with its default."""

    model_config = SettingsConfigDict(env_prefix="HUB_", extra="forbid", validate_default=True)

    config: Path | None = None
    data_dir: Path = Path("./hub-data")
    database_url: str | None = None
    broker_url: str | None = None

    dicom_aet: str = "IMAGING_HUB"
    dicom_host: str = "0.0.0.0"
    dicom_port: int = Field(default=11112, ge=0, le=65535)
    dicom_unknown_aets: UnknownAetPolicy = UnknownAetPolicy.STORE
    dicom_nodes: list[DicomNode] = Field(default_factory=list)
    dicom_max_pdu: int = Field(default=0, ge=0)
    dicom_idle_timeout: float = Field(default=60.0, gt=0)
    dicom_max_associations: int = Field(default=32, ge=1)
    #: Receiver processes sharing the DICOM port (one listening socket); 0: one per usable CPU, at
    #: most 4 (see ``receiver_processes``).
    dicom_processes: int = Field(default=0, ge=0, le=64)
    #: DICOM TLS (PS3.15 B.1): the receiver's certificate chain and private key (PEM); with
    #: both set the receiver speaks TLS only. With a CA file, peers must show a certificate
    #: that it signed.
    dicom_tls_cert: Path | None = None
    dicom_tls_key: Path | None = None
    dicom_tls_ca: Path | None = None

    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8000, ge=0, le=65535)
    #: DICOMweb: the public base URL of /dicomweb (behind a proxy), for RetrieveURL and
    #: BulkDataURI; unset: taken from each request's Host header.
    dicomweb_base_url: str | None = None

    ingest_duplicates: DuplicatePolicy = DuplicatePolicy.NEWEST
    ingest_max_bytes: int = Field(default=2 * 1024**3, ge=1024)
    storage_min_free_bytes: int = Field(default=256 * 1024**2, ge=0)

    jobs_lease_seconds: float = Field(default=120.0, gt=0)
    jobs_publish_timeout: float = Field(default=300.0, gt=0)
    jobs_max_attempts: int = Field(default=5, ge=1)
    jobs_relay_interval: float = Field(default=0.2, gt=0)
    jobs_max_in_flight: int = Field(default=256, ge=1)
    #: Jobs of a batchable kind (index) one worker slot runs in one transaction, at most.
    jobs_batch_size: int = Field(default=50, ge=1, le=1000)
    #: While receivers on the host are busy, a worker starts such batches this often at most.
    jobs_batch_interval: float = Field(default=0.3, ge=0, le=10)
    worker_concurrency: int = Field(default=2, ge=1)
    #: Longest a worker run with --yield-to-receivers holds jobs back while receivers are busy.
    worker_yield_seconds: float = Field(default=60.0, ge=0)
    previews_size: int = Field(default=1024, ge=256, le=4096)
    #: Longest side of per-instance thumbnails, and the JPEG quality of thumbnails and previews.
    previews_thumbnail_size: int = Field(default=256, ge=32, le=1024)
    previews_quality: int = Field(default=90, ge=1, le=100)

    auth_jwt_secret: SecretStr | None = None
    auth_access_token_minutes: float = Field(default=15.0, gt=0)
    auth_refresh_token_hours: float = Field(default=12.0, gt=0)
    auth_max_failed_logins: int = Field(default=5, ge=1)
    auth_lockout_seconds: float = Field(default=300.0, ge=0)
    auth_min_password_length: int = Field(default=12, ge=8)

    log_level: str = "INFO"

    _validate_aet = field_validator("dicom_aet")(classmethod(lambda cls, v: _check_aet(v)))
    _validate_secret = field_validator("auth_jwt_secret")(
        classmethod(lambda cls, v: _check_jwt_secret(v))
    )

    @model_validator(mode="after")
    def _tls_files_together(self) -> Settings:
        """A TLS certificate needs its key, and a CA for peers needs the receiver's own pair."""
        if (self.dicom_tls_cert is None) != (self.dicom_tls_key is None):
            raise ValueError("dicom_tls_cert and dicom_tls_key must be set together")
        if self.dicom_tls_ca is not None and self.dicom_tls_cert is None:
            raise ValueError("dicom_tls_ca needs dicom_tls_cert and dicom_tls_key")
        return self

    @property
    def receiver_processes(self) -> int:
        """How many receiver processes to run: ``dicom_processes``, or for 0 the automatic count.

        The receive path is CPU-bound Python (header parse, hashing, pynetdicom's reactor) and
        one process uses at most one core, so the automatic count is one per usable CPU. It
        stops at 4: beyond that the index's write transactions and fsyncs, not CPU, limit the
        rate, and each process costs about 140 MB of memory.
        """
        if self.dicom_processes:
            return self.dicom_processes
        usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
        return max(1, min(4, len(usable) if usable else os.cpu_count() or 1))

    @property
    def dicom_tls(self) -> bool:
        """True when the DICOM receiver speaks TLS."""
        return self.dicom_tls_cert is not None

    @field_validator("database_url", "broker_url")
    @classmethod
    def _blank_is_default(cls, value: str | None) -> str | None:
        """Treat an empty URL as 'use the embedded default'."""
        return value or None

    @property
    def resolved_database_url(self) -> str:
        """The index database URL: the configured one, or a SQLite file in the data dir."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'index.sqlite').resolve()}"

    @property
    def embedded_broker(self) -> bool:
        """True when no broker server is configured and the file-based broker is used."""
        return self.broker_url is None

    @property
    def storage_dir(self) -> Path:
        """Where the immutable original files live."""
        return self.data_dir / "storage"

    @property
    def quarantine_dir(self) -> Path:
        """Where rejected input is kept for inspection."""
        return self.data_dir / "quarantine"

    @property
    def jwt_secret_file(self) -> Path:
        """Where the generated token signing secret is kept when none is configured."""
        return self.data_dir / "jwt-secret"

    @property
    def broker_dir(self) -> Path:
        """Where the embedded broker keeps its messages."""
        return self.data_dir / "broker"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Environment first, then init values (the TOML file), nothing else."""
        return (env_settings, init_settings)


def _flatten_toml(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Turn ``{"dicom": {"aet": "X"}}`` into ``{"dicom_aet": "X"}`` (lists are kept whole)."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}".replace("-", "_")
        if isinstance(value, dict):
            flat.update(_flatten_toml(value, prefix=f"{name}_"))
        else:
            flat[name] = value
    return flat


def _describe(error: ValidationError, from_file: set[str]) -> str:
    """Render a validation error so that each line names the setting as the user wrote it."""
    lines = []
    for item in error.errors():
        if not item["loc"]:  # a check across settings names them in its message
            lines.append(item["msg"])
            continue
        field = str(item["loc"][0])
        env_name = f"HUB_{field.upper()}"
        # The environment wins over the file, so a bad value set in both came from the former.
        where = (
            "in the config file" if field in from_file and env_name not in os.environ else env_name
        )
        rest = ".".join(str(p) for p in item["loc"][1:])
        lines.append(f"{where} {field}{'.' + rest if rest else ''}: {item['msg']}")
    return "invalid settings:\n  " + "\n  ".join(lines)


def load_settings(config_path: Path | str | None = None) -> Settings:
    """Build the settings from the environment and the TOML file named here or by HUB_CONFIG."""
    path = config_path or os.environ.get("HUB_CONFIG")
    file_values: dict[str, Any] = {}
    if path:
        path = Path(path)
        try:
            file_values = _flatten_toml(tomllib.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        file_values["config"] = path
    try:
        return Settings(**file_values)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, set(file_values))) from None
