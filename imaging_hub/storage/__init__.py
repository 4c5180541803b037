"""Storage of immutable originals behind a small Protocol."""

from imaging_hub.storage.base import ObjectStore, StoredObject, object_key
from imaging_hub.storage.local import LocalStore

__all__ = ["LocalStore", "ObjectStore", "StoredObject", "object_key"]
