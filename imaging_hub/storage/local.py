"""Local file store: atomic durable writes (temp file, fsync, rename, fsync directory)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from imaging_hub.storage.base import StoredObject

__all__ = ["LocalStore", "fsync_dir", "fsync_file", "hash_file", "write_durably"]

CHUNK = 1024 * 1024


def fsync_dir(path: Path) -> None:
    """Flush a directory entry so that a rename or create in it survives a crash."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def hash_file(path: Path) -> tuple[str, int]:
    """SHA-256 hex digest and size of a file, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _fsync_up_to(directory: Path, root: Path) -> None:
    """Fsync directory and each ancestor up to and including root.

    A directory another thread just created may not be durable in its parent yet; fsyncing the
    whole chain (a few directories) after every write makes the new file durable regardless.
    """
    current = directory
    while current != root and current.is_relative_to(root):
        fsync_dir(current)
        current = current.parent
    fsync_dir(root)


def fsync_file(path: Path) -> int:
    """Flush a file's data to disk; returns its size."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


#: link() errors that mean "no hard link here" (another filesystem, or none supported): copy.
_NO_LINK = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP}


def write_durably(target: Path, source: BinaryIO, *, root: Path) -> tuple[str, int]:
    """Write a stream to target atomically and durably; return its SHA-256 and size."""
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".incoming-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := source.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        _unlink_if_exists(tmp_name)
        raise
    _fsync_up_to(target.parent, root)
    return digest.hexdigest(), size


def _unlink_if_exists(name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name)


class LocalStore:
    """Objects as files under one root directory; keys are relative paths made by object_key."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        #: Directories whose chain up to the root this process made durable, by inode.
        self._durable_dirs: dict[Path, int] = {}

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root) or path == self.root:
            raise ValueError("storage key escapes the store")
        return path

    def put_file(
        self, key: str, source: Path, *, expected_sha256: str, link: bool = False
    ) -> StoredObject:
        """Store source durably under key; a no-op when key already holds the same bytes.

        With link, source is a file the hub owns, never written again, whose SHA-256 the
        caller just computed (a receiver's spool file): it is fsync'd and hard-linked under
        key instead of copied when both are on one filesystem.
        """
        target = self._path(key)
        if target.exists():
            return self._existing(key, target, expected_sha256)
        if link:
            stored = self._link(key, target, source, expected_sha256)
            if stored is not None:
                return stored
        with source.open("rb") as fh:
            sha, size = write_durably(target, fh, root=self.root)
        if sha != expected_sha256:
            # The source changed under us; never keep a file whose name lies about its content.
            target.unlink()
            fsync_dir(target.parent)
            raise OSError(f"content of {source} changed while it was stored")
        return StoredObject(key=key, size=size, sha256=sha, created=True)

    def _existing(self, key: str, target: Path, expected_sha256: str) -> StoredObject:
        sha, size = hash_file(target)
        if sha == expected_sha256:
            return StoredObject(key=key, size=size, sha256=sha, created=False)
        raise FileExistsError(f"stored object {key} exists with other content")

    def _link(
        self, key: str, target: Path, source: Path, expected_sha256: str
    ) -> StoredObject | None:
        """Hard-link a hashed, owned file durably under key; None when a copy is needed."""
        size = fsync_file(source)  # the bytes are on disk before any name points at them
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, target)
        except FileExistsError:  # the same content arrived on another association meanwhile
            return self._existing(key, target, expected_sha256)
        except OSError as exc:
            if exc.errno in _NO_LINK:
                return None
            raise
        self._sync_new_entry(target.parent)
        return StoredObject(key=key, size=size, sha256=expected_sha256, created=True)

    def _sync_new_entry(self, directory: Path) -> None:
        """Make a new entry of directory durable: the directory, and its chain the first time.

        Once this process has fsync'd a directory and its ancestors, their own entries are
        durable; later entries need only the directory itself (checked by inode, so a
        directory removed and made again is synced in full again).
        """
        inode = os.stat(directory).st_ino
        if self._durable_dirs.get(directory) == inode:
            fsync_dir(directory)
            return
        _fsync_up_to(directory, self.root)
        if len(self._durable_dirs) > 100_000:
            self._durable_dirs.clear()
        self._durable_dirs[directory] = inode

    def open(self, key: str) -> BinaryIO:
        """Open a stored object for reading."""
        return self._path(key).open("rb")

    def exists(self, key: str) -> bool:
        """Tell whether key holds an object."""
        return self._path(key).is_file()

    def local_path(self, key: str) -> Path:
        """The file that holds key."""
        return self._path(key)

    def iter_keys(self) -> Iterator[str]:
        """Every stored object's key (temp files excluded)."""
        for path in self.root.rglob("*.dcm"):
            if not path.name.startswith("."):
                yield path.relative_to(self.root).as_posix()

    def free_bytes(self) -> int:
        """Free space on the store's filesystem."""
        return shutil.disk_usage(self.root).free
