"""Passwords, tokens and the signing secret: no database involved."""

from __future__ import annotations

import datetime as dt
import os
import stat
import subprocess
import sys
from pathlib import Path

import jwt
import pytest

from imaging_hub.auth import Role, TokenIssuer, TokenType, UserInfo, load_or_create_secret
from imaging_hub.auth.passwords import check_password_rules, hash_password, verify_password
from imaging_hub.auth.users import parse_role, parse_specialty
from imaging_hub.config import Settings, load_settings
from imaging_hub.db.models import Specialty, utcnow
from imaging_hub.errors import AuthenticationFailed, ConfigError

SECRET = "k3J9-vQ2xZp7_Lm4Rt8Wn1Yb6Hc5Gd0Fs"


def a_user(role: Role = Role.CLINICIAN) -> UserInfo:
    """A user snapshot, as the accounts module returns them."""
    now = utcnow()
    return UserInfo("dr.grey", role, None, False, now, now, None, None, now)


def test_passwords_are_hashed_with_argon2id_and_verified() -> None:
    hashed = hash_password("correct-horse-battery")
    assert hashed.startswith("$argon2id$")
    assert "correct-horse-battery" not in hashed
    assert hash_password("correct-horse-battery") != hashed  # salted
    assert verify_password("correct-horse-battery", hashed) == (True, None)
    assert verify_password("correct-horse-batterY", hashed)[0] is False


def test_password_rules() -> None:
    check_password_rules("a" * 12, min_length=12)
    with pytest.raises(ValueError, match="at least 12 characters"):
        check_password_rules("a" * 11, min_length=12)
    with pytest.raises(ValueError, match="white space"):
        check_password_rules(" a-long-password", min_length=12)


def test_roles_and_specialties_parse_from_strings() -> None:
    assert parse_role("Admin") is Role.ADMIN
    with pytest.raises(ValueError, match="clinician, radiology, admin"):
        parse_role("surgeon")
    assert parse_specialty("pain medicine") is Specialty.PAIN_MEDICINE
    assert parse_specialty("orthopedic_surgery") is Specialty.ORTHOPEDIC_SURGERY
    assert parse_specialty(None) is None
    with pytest.raises(ValueError, match="unknown specialty 'dentistry'"):
        parse_specialty("dentistry")


def test_access_token_claims_round_trip() -> None:
    issuer = TokenIssuer(SECRET)
    pair = issuer.issue(a_user(Role.RADIOLOGY))
    assert pair.expires_in == 15 * 60
    assert pair.token_type == "bearer"
    claims = issuer.decode(pair.access_token, expected=TokenType.ACCESS)
    assert (claims.subject, claims.role, claims.type) == ("dr.grey", Role.RADIOLOGY, "access")
    assert claims.expires_at - claims.issued_at == dt.timedelta(minutes=15)
    raw = jwt.decode(pair.refresh_token, SECRET, algorithms=["HS256"], issuer="imaging-hub")
    assert raw["type"] == "refresh"
    assert raw["exp"] - raw["iat"] == 12 * 3600
    assert raw["jti"] != jwt.decode(pair.access_token, options={"verify_signature": False})["jti"]


def test_expired_tokens_are_refused() -> None:
    issuer = TokenIssuer(SECRET)
    old = issuer.encode(
        "dr.grey", Role.CLINICIAN, TokenType.ACCESS, now=utcnow() - dt.timedelta(minutes=16)
    )
    with pytest.raises(AuthenticationFailed, match="the token has expired"):
        issuer.decode(old, expected=TokenType.ACCESS)
    fresh = issuer.encode(
        "dr.grey", Role.CLINICIAN, TokenType.ACCESS, now=utcnow() - dt.timedelta(minutes=14)
    )
    assert issuer.decode(fresh, expected=TokenType.ACCESS).subject == "dr.grey"


def test_tampered_or_foreign_tokens_are_refused() -> None:
    issuer = TokenIssuer(SECRET)
    token = issuer.issue(a_user()).access_token
    header, _payload, signature = token.split(".")
    claims = jwt.decode(token, options={"verify_signature": False})
    forged_payload = jwt.encode({**claims, "role": "admin"}, "x" * 32).split(".")[1]
    forgeries = [
        f"{header}.{forged_payload}.{signature}",  # role changed, old signature
        jwt.encode({**claims, "role": "admin"}, "another-secret-of-32-characters!!"),
        jwt.encode(claims, None, algorithm="none"),
        token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB"),
        "not-a-token",
    ]
    for forged in forgeries:
        with pytest.raises(AuthenticationFailed, match="the token is not valid"):
            issuer.decode(forged, expected=TokenType.ACCESS)


def test_token_types_cannot_be_swapped() -> None:
    issuer = TokenIssuer(SECRET)
    pair = issuer.issue(a_user())
    with pytest.raises(
        AuthenticationFailed, match="wrong token type: refresh given, access needed"
    ):
        issuer.decode(pair.refresh_token, expected=TokenType.ACCESS)
    with pytest.raises(
        AuthenticationFailed, match="wrong token type: access given, refresh needed"
    ):
        issuer.decode(pair.access_token, expected=TokenType.REFRESH)
    assert issuer.decode(pair.refresh_token, expected=TokenType.REFRESH).type is TokenType.REFRESH


def test_generated_secret_is_created_once_with_mode_0600_and_reused(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    first = TokenIssuer.from_settings(settings)
    path = settings.jwt_secret_file
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    secret = path.read_text().strip()
    assert len(secret) >= 64
    mtime = path.stat().st_mtime_ns
    second = TokenIssuer.from_settings(Settings(data_dir=tmp_path / "data"))
    assert path.stat().st_mtime_ns == mtime
    assert load_or_create_secret(path) == secret
    token = first.issue(a_user()).access_token
    assert second.decode(token, expected=TokenType.ACCESS).subject == "dr.grey"
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []
    other = TokenIssuer.from_settings(Settings(data_dir=tmp_path / "other"))
    with pytest.raises(AuthenticationFailed):
        other.decode(token, expected=TokenType.ACCESS)


def test_another_process_reads_the_same_generated_secret(tmp_path: Path) -> None:
    path = tmp_path / "jwt-secret"
    code = (
        "import pathlib, sys; from imaging_hub.auth import load_or_create_secret; "
        "print(load_or_create_secret(pathlib.Path(sys.argv[1])))"
    )
    child = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True
    )
    from_child = child.stdout.strip().splitlines()[-1]
    assert len(from_child) >= 64
    assert load_or_create_secret(path) == from_child


def test_a_truncated_secret_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "jwt-secret"
    path.write_text("short\n")
    os.chmod(path, 0o600)
    with pytest.raises(ConfigError, match="delete it"):
        load_or_create_secret(path)


def test_configured_secret_is_used_and_no_file_is_written(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, auth_jwt_secret=SECRET)
    token = TokenIssuer.from_settings(settings).issue(a_user()).access_token
    assert jwt.decode(token, SECRET, algorithms=["HS256"], issuer="imaging-hub")["sub"] == "dr.grey"
    assert not settings.jwt_secret_file.exists()
    assert SECRET not in repr(settings)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("changethis", "fewer than 32 characters"),
        ("too-short-0123456789", "fewer than 32 characters"),
        ("change-me-change-me-change-me-change-me", "placeholder"),
        ("my-super-secret-jwt-key-for-production", "placeholder"),
        ("a" * 40, "placeholder"),
    ],
)
def test_placeholder_secrets_are_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str, reason: str
) -> None:
    monkeypatch.setenv("HUB_AUTH_JWT_SECRET", value)
    with pytest.raises(ConfigError) as error:
        load_settings()
    assert "HUB_AUTH_JWT_SECRET" in str(error.value)
    assert reason in str(error.value)
    assert value not in str(error.value)


def test_auth_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUB_AUTH_JWT_SECRET", SECRET)
    monkeypatch.setenv("HUB_AUTH_ACCESS_TOKEN_MINUTES", "5")
    monkeypatch.setenv("HUB_AUTH_MAX_FAILED_LOGINS", "3")
    settings = load_settings()
    assert settings.auth_jwt_secret is not None
    assert settings.auth_jwt_secret.get_secret_value() == SECRET
    assert TokenIssuer.from_settings(settings).issue(a_user()).expires_in == 300
    assert settings.auth_max_failed_logins == 3
