"""Password hashing with Argon2id (through pwdlib); hashes carry their own parameters."""

from __future__ import annotations

from functools import cache

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

__all__ = ["check_password_rules", "hash_password", "verify_password", "waste_verify"]


@cache
def _hasher() -> PasswordHash:
    return PasswordHash((Argon2Hasher(),))


@cache
def _dummy_hash() -> str:
    return _hasher().hash("no user has this password")


def check_password_rules(password: str, *, min_length: int) -> None:
    """Raise ValueError unless the password is long enough and has no surrounding blanks."""
    if len(password) < min_length:
        raise ValueError(f"the password must have at least {min_length} characters")
    if password != password.strip():
        raise ValueError("the password must not start or end with white space")


def hash_password(password: str) -> str:
    """An Argon2id hash of password, in PHC string format."""
    return _hasher().hash(password)


def verify_password(password: str, password_hash: str) -> tuple[bool, str | None]:
    """Whether password matches; also a new hash when the stored one has outdated parameters."""
    return _hasher().verify_and_update(password, password_hash)


def waste_verify(password: str) -> None:
    """Spend the time of one verification, so an unknown user answers as slowly as a known one."""
    _hasher().verify(password, _dummy_hash())
