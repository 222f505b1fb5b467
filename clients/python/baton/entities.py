"""Entity stores for the participant: an entity's state, version and outbox, with compare-and-set commits."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import tempfile
import threading
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Protocol


class VersionConflict(Exception):
    """The entity's version is not the one the commit expected: reload and try again."""


@dataclass
class Entity:
    """An entity: its key, version (0: never committed), state and outbox entries.

    Each outbox entry is a dict: the signal it records (id, conversation,
    causation, destination, type, digest), the emitted signals (each with
    id, destination, type, payload as latin-1 text), the reply (latin-1
    text), its content type and created_at (seconds since the epoch).
    """

    key: str
    version: int = 0
    state: dict = field(default_factory=dict)
    outbox: List[dict] = field(default_factory=list)

    def entry(self, token_id: str) -> Optional[dict]:
        for e in self.outbox:
            if e["id"] == token_id:
                return e
        return None


class EntityStore(Protocol):
    def load(self, key: str) -> Entity: ...

    def commit(self, entity: Entity, expected_version: int) -> None:
        """Writes entity as version expected_version + 1, if its version is still expected_version."""

    def with_outbox(self) -> Iterator[Entity]:
        """The entities whose outbox holds entries (for the sweeper)."""


class MemoryEntityStore:
    """Entities in memory: for tests. Nothing survives the process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entities: Dict[str, Entity] = {}

    def load(self, key: str) -> Entity:
        with self._lock:
            e = self._entities.get(key)
            return copy.deepcopy(e) if e else Entity(key=key)

    def commit(self, entity: Entity, expected_version: int) -> None:
        with self._lock:
            current = self._entities.get(entity.key)
            if (current.version if current else 0) != expected_version:
                raise VersionConflict(entity.key)
            stored = copy.deepcopy(entity)
            stored.version = expected_version + 1
            self._entities[entity.key] = stored

    def with_outbox(self) -> Iterator[Entity]:
        with self._lock:
            found = [copy.deepcopy(e) for e in self._entities.values() if e.outbox]
        return iter(found)


class FileEntityStore:
    """Entities as JSON files in one directory, one file per entity.

    A commit writes a new file and renames it over the old one after an
    fsync, then fsyncs the directory: a commit that returned survives a
    crash, and a crash never leaves half a file. One process per directory:
    the compare-and-set is guarded by a lock in this process only.
    """

    def __init__(self, directory: str) -> None:
        self._dir = directory
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self._lock = threading.Lock()

    def _path(self, key: str) -> str:
        return os.path.join(self._dir, hashlib.sha256(key.encode()).hexdigest() + ".json")

    def _read(self, path: str) -> Optional[Entity]:
        try:
            with open(path, "rb") as f:
                doc = json.load(f)
        except FileNotFoundError:
            return None
        return Entity(key=doc["key"], version=doc["version"], state=doc["state"], outbox=doc["outbox"])

    def load(self, key: str) -> Entity:
        with self._lock:
            return self._read(self._path(key)) or Entity(key=key)

    def commit(self, entity: Entity, expected_version: int) -> None:
        path = self._path(entity.key)
        with self._lock:
            current = self._read(path)
            if (current.version if current else 0) != expected_version:
                raise VersionConflict(entity.key)
            doc = {"key": entity.key, "version": expected_version + 1, "state": entity.state, "outbox": entity.outbox}
            fd, tmp = tempfile.mkstemp(dir=self._dir, suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(json.dumps(doc).encode())
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            except BaseException:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise
            dirfd = os.open(self._dir, os.O_RDONLY)
            try:
                os.fsync(dirfd)
            finally:
                os.close(dirfd)

    def with_outbox(self) -> Iterator[Entity]:
        with self._lock:
            names = [n for n in os.listdir(self._dir) if n.endswith(".json")]
            found = []
            for name in names:
                e = self._read(os.path.join(self._dir, name))
                if e and e.outbox:
                    found.append(e)
        return iter(found)
