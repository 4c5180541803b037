"""Storage contract: every ObjectStore backend must pass these (local files today)."""

import hashlib
from pathlib import Path

import pytest

from imaging_hub.errors import InvalidUid
from imaging_hub.storage import LocalStore, ObjectStore, object_key


@pytest.fixture(params=["local"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    return LocalStore(tmp_path / "store")


def _file(tmp_path: Path, content: bytes) -> tuple[Path, str]:
    path = tmp_path / "src.bin"
    path.write_bytes(content)
    return path, hashlib.sha256(content).hexdigest()


def test_put_then_read_back(store: ObjectStore, tmp_path: Path) -> None:
    src, sha = _file(tmp_path, b"DICM" * 1000)
    key = object_key("1.2.3", "1.2.3.4", "1.2.3.4.5", sha)
    stored = store.put_file(key, src, expected_sha256=sha)
    assert stored.created and stored.size == 4000 and stored.sha256 == sha
    with store.open(key) as fh:
        assert fh.read() == b"DICM" * 1000
    assert store.exists(key)
    assert list(store.iter_keys()) == [key]


def test_same_bytes_again_is_a_noop(store: ObjectStore, tmp_path: Path) -> None:
    src, sha = _file(tmp_path, b"abc")
    key = object_key("1.2", "1.3", "1.4", sha)
    store.put_file(key, src, expected_sha256=sha)
    again = store.put_file(key, src, expected_sha256=sha)
    assert not again.created


def test_existing_object_is_never_overwritten(store: ObjectStore, tmp_path: Path) -> None:
    src, sha = _file(tmp_path, b"original")
    key = object_key("1.2", "1.3", "1.4", sha)
    store.put_file(key, src, expected_sha256=sha)
    other, other_sha = _file(tmp_path, b"tampered")
    store.put_file(key, other, expected_sha256=sha)  # a caller lying about the hash
    with pytest.raises(FileExistsError):  # a key whose object differs from the claim
        store.put_file(key, other, expected_sha256=other_sha)
    with store.open(key) as fh:
        assert fh.read() == b"original"


def test_hash_mismatch_leaves_nothing(store: ObjectStore, tmp_path: Path) -> None:
    src, _ = _file(tmp_path, b"content")
    wrong = "0" * 64
    key = object_key("1.2", "1.3", "1.4", wrong)
    with pytest.raises(OSError, match="changed"):
        store.put_file(key, src, expected_sha256=wrong)
    assert not store.exists(key)
    assert list(store.iter_keys()) == []


def test_no_temp_files_are_left_behind(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    src, sha = _file(tmp_path, b"x" * 10)
    key = object_key("1.2", "1.3", "1.4", sha)
    store.put_file(key, src, expected_sha256=sha)
    leftovers = [p for p in (tmp_path / "store").rglob("*") if p.name.startswith(".incoming")]
    assert leftovers == []


@pytest.mark.parametrize("bad", ["../../etc", "1.2/../..", "", "1.2.x"])
def test_keys_are_derived_from_valid_uids_only(bad: str) -> None:
    with pytest.raises(InvalidUid):
        object_key(bad, "1.2", "1.3", "0" * 64)


def test_store_refuses_a_key_outside_its_root(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    with pytest.raises(ValueError, match="escapes"):
        store.exists("../outside.dcm")


def test_put_fsyncs_the_target_dir_and_every_ancestor_up_to_the_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A directory another writer created but did not fsync yet is made durable by our put."""
    import imaging_hub.storage.local as local

    store = LocalStore(tmp_path / "store")
    src, sha = _file(tmp_path, b"durable")
    key = object_key("1.2", "1.3", "1.4", sha)
    target = store.local_path(key)
    target.parent.mkdir(parents=True)  # as if another thread had just made it, without fsync
    synced: list[Path] = []
    monkeypatch.setattr(local, "fsync_dir", lambda path: synced.append(Path(path)))
    store.put_file(key, src, expected_sha256=sha)
    chain = [target.parent, *target.parent.parents]
    expected = chain[: chain.index(store.root) + 1]
    assert len(expected) >= 3  # series, study, root at least
    assert set(expected) <= set(synced)


def test_an_owned_file_is_taken_over_and_survives_its_spool_name(
    store: ObjectStore, tmp_path: Path
) -> None:
    """link=True (a receiver's spool file): stored without a copy, readable after the unlink."""
    src, sha = _file(tmp_path, b"spooled" * 1000)
    key = object_key("1.2", "1.3", "1.4", sha)
    stored = store.put_file(key, src, expected_sha256=sha, link=True)
    assert stored.created and stored.size == 7000 and stored.sha256 == sha
    if isinstance(store, LocalStore):  # one filesystem: the same inode, no bytes copied
        assert store.local_path(key).stat().st_ino == src.stat().st_ino
    src.unlink()  # what pynetdicom does with its spool file after the handler returned
    with store.open(key) as fh:
        assert fh.read() == b"spooled" * 1000
    again, _ = _file(tmp_path, b"spooled" * 1000)
    assert not store.put_file(key, again, expected_sha256=sha, link=True).created
    assert list(store.iter_keys()) == [key]


def test_an_owned_file_on_another_filesystem_is_copied(tmp_path: Path) -> None:
    """Where no hard link can be made (e.g. another filesystem), link=True copies."""
    store = LocalStore(tmp_path / "store")
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs a second filesystem at /dev/shm")
    src = shm / f"hub-test-{tmp_path.name}.bin"
    src.write_bytes(b"elsewhere")
    try:
        sha = hashlib.sha256(b"elsewhere").hexdigest()
        key = object_key("1.2", "1.3", "1.4", sha)
        assert store.put_file(key, src, expected_sha256=sha, link=True).created
        assert store.local_path(key).stat().st_ino != src.stat().st_ino
        assert store.local_path(key).read_bytes() == b"elsewhere"
    finally:
        src.unlink()
