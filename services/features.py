"""The feature store's data: key names, encoding, and seeding.

Features are pre-computed per entity and stored as a JSON array of floats under one key each.
Seeding is deterministic (entity i always gets the same vector), so re-seeding is idempotent.
"""

from __future__ import annotations

import json
import random
import re
import urllib.parse

from services import errors

KEY_PREFIX = "scoring-lab:features:"
# How many entities the store holds; written last by the seeder so a reader can tell a
# completely seeded store from a partial one.
COUNT_KEY = "scoring-lab:entities"
# What persist() marks before its SAVE (services/cli.py seed --if-needed --persist reads it): not
# under KEY_PREFIX, so it is never taken for an entity.
SAVED_AT_KEY = "scoring-lab:features-saved-at"
FEATURE_DIM = 16
_ENTITY_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def key(entity: str) -> str:
    return KEY_PREFIX + entity


def one_entity(given: list[str], default: str) -> str:
    """The ``?entity=`` of a request: the default when absent, 422 when repeated (the
    interface names one entity; frameworks disagree on which repeat wins)."""
    if not given:
        return default
    if len(given) > 1:
        raise errors.repeated_entity(len(given))
    return given[0]


def check_entity(entity: str) -> str:
    if not _ENTITY_RE.fullmatch(entity):
        raise errors.invalid_entity(entity)
    return entity


def vector(entity: str) -> list[float]:
    rng = random.Random(f"scoring-lab/{entity}")
    return [round(rng.uniform(-1.0, 1.0), 6) for _ in range(FEATURE_DIM)]


def encode(values: list[float]) -> bytes:
    return json.dumps(values, separators=(",", ":")).encode()


def decode(entity: str, raw: bytes | None) -> list[float]:
    """The stored vector, or 404 when the entity has none."""
    if raw is None:
        raise errors.entity_not_found(entity)
    return json.loads(raw)


def seed(client, entities: int, batch: int = 1000) -> int:
    """Store the vectors of entities 0..entities-1 with a sync redis client; return how many
    keys were new. Safe to run again: values are deterministic."""
    created = 0
    for start in range(0, entities, batch):
        names = [key(str(i)) for i in range(start, min(entities, start + batch))]
        existed = client.exists(*names)
        pipe = client.pipeline(transaction=False)
        for name in names:
            pipe.set(name, encode(vector(name.removeprefix(KEY_PREFIX))))
        pipe.execute()
        created += len(names) - existed
    client.set(COUNT_KEY, max(entities, int(client.get(COUNT_KEY) or 0)))
    return created


def stored_entities(client) -> int:
    """How many entities a completely seeded store holds (0 for an empty or partial one)."""
    return int(client.get(COUNT_KEY) or 0)


def unsaved_changes(client) -> int:
    """Writes since the last snapshot (RDB): 0 means a restarted Redis comes back with them."""
    return int(client.info("persistence").get("rdb_changes_since_last_save", 0))


def persist(client) -> None:
    """Write the snapshot now (SAVE, synchronous: seeding has just finished and the data set is
    small), so a restarted Redis reloads the features instead of answering 404 for each. First
    the marker ``persisted`` reads: Redis's clock now and how many entities are stored."""
    client.set(SAVED_AT_KEY, f"{client.time()[0]} {stored_entities(client)}")
    client.save()


def persisted(client, entities: int) -> bool:
    """``entities`` or more are in Redis's snapshot: persist() marked that many and Redis saved
    at or after the mark (a Redis that loaded its snapshot counts its start as its last save).
    Not "no write since the last save": the job queues share this Redis and write all the
    time."""
    marker = client.get(SAVED_AT_KEY)
    if marker is None:
        return False
    marked_at, marked_entities = (int(part) for part in marker.split())
    last_save = int(client.info("persistence").get("rdb_last_save_time", 0))
    return marked_entities >= entities and last_save >= marked_at


def redact(url: str) -> str:
    """A Redis URL fit for logs and messages: any password replaced by ``***``."""
    try:
        parts = urllib.parse.urlsplit(url)
        if parts.password is None:
            return url
    except ValueError:
        return "<unparsable URL>"
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
