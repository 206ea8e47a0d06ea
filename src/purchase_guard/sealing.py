"""Envelope encryption with one data key per household (GDPR Art. 9: voiceprints are biometric data).

    master key(s)  --wrap-->  data key of household H  --AES-256-GCM-->  H's sealed values
    (settings or a file,      (random 256 bits; stored      (voiceprints, names, decision,
     never in the database)    wrapped in `data_keys`)        challenge, audit and notification bodies)

Destroying H's data key (`KeyRing.destroy`) makes every value sealed for H unreadable wherever
a copy survives in the live database: the audit chain keeps H's sealed entries so it stays
verifiable, and they can no longer be opened. A database *backup* also holds the wrapped data
key; it stays readable for as long as the master key that wrapped it exists, which is why
master keys rotate (`rewrap_all`) and retired ones are deleted (docs/privacy.md).

Formats (both versioned by a 4-byte magic so they can change without guessing):
    sealed value  = b"PGS1" | nonce(12) | AES-GCM(data key, plaintext, aad=H-bound aad)
    wrapped key   = b"PGW1" | len(key id) (1 byte) | master key id (ASCII) | nonce(12)
                    | AES-GCM(master key, data key, aad=H-bound)
The master key id in the wrapped blob is what makes rotation possible: old blobs name the key
that opens them while new ones are wrapped under the active key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from purchase_guard.errors import GuardError
from purchase_guard.logs import get_logger
from purchase_guard.secret_files import write_once

log = get_logger("purchase_guard.sealing")

KEY_BYTES = 32
NONCE_BYTES = 12
SEALED_MAGIC = b"PGS1"
WRAPPED_MAGIC = b"PGW1"
# A data key unwrapped in one process stays usable there for this long after another process
# destroyed it (PostgreSQL replicas); erasure also deletes the rows, so this only bounds how
# long a replica could still open a surviving sealed copy.
DEFAULT_CACHE_SECONDS = 60.0

# A fixed key for tests only: anything sealed with it is readable by anyone who reads this file.
TEST_MASTER_KEY = bytes(range(32))


class KeyUnavailable(GuardError):
    """The household's data key does not exist (never created, or destroyed by erasure)."""


class SealError(GuardError):
    """A sealed value or wrapped key is malformed, was tampered with, or belongs elsewhere."""


class Sealer(Protocol):
    """Seals values for one household; what `store` implementations are given."""

    def seal(self, household_id: str, plaintext: bytes, aad: bytes) -> bytes:
        """Encrypts and authenticates `plaintext` bound to the household and `aad`;
        creates the household's data key on first use."""
        ...

    def open(self, household_id: str, sealed: bytes, aad: bytes) -> bytes:
        """Inverse of `seal`; raises KeyUnavailable once the key is destroyed, SealError if the
        value was altered or sealed for another household or aad."""
        ...

    def destroy(self, household_id: str) -> None:
        """Deletes the household's data key for good. Idempotent."""
        ...

    def derive(self, household_id: str, purpose: str) -> bytes:
        """A 32-byte key for `purpose`, derived (HKDF-SHA256) from the household's data key: it
        exists only where the master key does, and dies with the household's data key. Creates
        the data key on first use."""
        ...


class WrappedKeyStore(Protocol):
    """Where wrapped data keys live (table `data_keys`); never sees a key in clear."""

    def get_wrapped_key(self, household_id: str) -> bytes | None: ...

    def add_wrapped_key(self, household_id: str, wrapped: bytes, master_key_id: str) -> bytes:
        """Stores `wrapped` unless the household has a key already; returns the stored one, so
        two processes creating a key at once both end up using the same."""
        ...

    def replace_wrapped_key(self, household_id: str, old: bytes, new: bytes, master_key_id: str) -> bool:
        """Compare-and-set for rotation: replaces only if the stored blob is still `old`."""
        ...

    def list_wrapped_keys(self) -> list[tuple[str, bytes]]: ...

    def delete_wrapped_key(self, household_id: str) -> None: ...


def key_id_of(key: bytes) -> str:
    """A short public fingerprint of a master key: names it in wrapped blobs, reveals nothing of it."""
    return hashlib.sha256(b"purchase-guard/master-key-id/v1\x00" + key).hexdigest()[:16]


def _bound(label: bytes, household_id: str, aad: bytes = b"") -> bytes:
    # Length-prefixed so that (household "a", aad "bc") and ("ab", "c") never collide.
    hid = household_id.encode("utf-8")
    return label + len(hid).to_bytes(4, "big") + hid + aad


@dataclass(frozen=True, slots=True)
class MasterKeys:
    """The master keys by id; `active` wraps new data keys, the others only unwrap old ones."""

    keys: Mapping[str, bytes] = field(repr=False)
    active: str

    def __post_init__(self) -> None:
        if self.active not in self.keys:
            raise ValueError("the active master key id has no key")
        if any(len(k) != KEY_BYTES for k in self.keys.values()):
            raise ValueError("master keys must be 32 bytes")

    @classmethod
    def of(cls, *keys: bytes) -> MasterKeys:
        """The first key is active; later ones are kept to unwrap data keys wrapped before a rotation."""
        if not keys:
            raise ValueError("at least one master key is needed")
        return cls({key_id_of(k): k for k in keys}, key_id_of(keys[0]))


def parse_master_keys(text: str, source: str) -> MasterKeys:
    """Keys as base64 (32 bytes each), one per line or comma-separated, active first; '#' comments.
    `source` names where the text came from in error messages (never the text itself)."""
    keys: list[bytes] = []
    lines = [raw.split("#", 1)[0] for raw in text.splitlines()]
    for piece in ",".join(lines).split(","):
        line = piece.strip()
        if not line:
            continue
        try:
            key = base64.b64decode(line, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"{source}: a master key is not valid base64") from exc
        if len(key) != KEY_BYTES:
            raise ValueError(f"{source}: a master key must decode to 32 bytes, got {len(key)}")
        keys.append(key)
    if not keys:
        raise ValueError(f"{source}: no master key found")
    return MasterKeys.of(*keys)


def new_master_key_line() -> str:
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")


def resolve_master_keys(value: str, path: Path) -> MasterKeys:
    """The master keys from the settings value, else from the key file, else a new key written to
    that file with mode 0600 (the same rule as the operator token). Raises ValueError for a
    malformed value or file: a server must not start with keys it cannot read."""
    if value:
        return parse_master_keys(value, "PURCHASE_GUARD_MASTER_KEY")
    if path.is_file():
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            # Readable by others: say so loudly, but starting is still better than losing access.
            log.warning("master_key_file_permissive", path=str(path), mode=oct(mode))
        return parse_master_keys(path.read_text(encoding="ascii"), str(path))
    header = "# purchase-guard master key(s): base64, active first. Back up apart from the database.\n"
    # A replica starting at the same moment may create the file first; then its key is the key.
    text, created = write_once(path, header + new_master_key_line() + "\n")
    if created:
        log.info("master_key_created", path=str(path))
    return parse_master_keys(text, str(path))


class MemoryKeyStore:
    """Wrapped keys in a dict: for tests and the in-memory FakeStore."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: dict[str, bytes] = {}

    def get_wrapped_key(self, household_id: str) -> bytes | None:
        with self._lock:
            return self._keys.get(household_id)

    def add_wrapped_key(self, household_id: str, wrapped: bytes, master_key_id: str) -> bytes:
        with self._lock:
            return self._keys.setdefault(household_id, wrapped)

    def replace_wrapped_key(self, household_id: str, old: bytes, new: bytes, master_key_id: str) -> bool:
        with self._lock:
            if self._keys.get(household_id) != old:
                return False
            self._keys[household_id] = new
            return True

    def list_wrapped_keys(self) -> list[tuple[str, bytes]]:
        with self._lock:
            return sorted(self._keys.items())

    def delete_wrapped_key(self, household_id: str) -> None:
        with self._lock:
            self._keys.pop(household_id, None)


_EPHEMERAL_LOCK = threading.Lock()
_EPHEMERAL_MASTER: list[MasterKeys] = []


def ephemeral_master_keys() -> MasterKeys:
    """One random master key per process, for stores opened without keys (tests, benchmarks).

    Other processes and later runs cannot unwrap what it wrapped, so data is lost rather than
    exposed; production always passes the configured master keys.
    """
    with _EPHEMERAL_LOCK:
        if not _EPHEMERAL_MASTER:
            _EPHEMERAL_MASTER.append(MasterKeys.of(secrets.token_bytes(32)))
        return _EPHEMERAL_MASTER[0]


class KeyRing:
    """The `Sealer`: data keys per household, wrapped by the master keys, cached briefly in memory."""

    def __init__(
        self,
        master: MasterKeys,
        storage: WrappedKeyStore,
        *,
        cache_seconds: float = DEFAULT_CACHE_SECONDS,
    ) -> None:
        self._master = master
        self._storage = storage
        self._cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[AESGCM, float]] = {}

    @classmethod
    def in_memory(cls, master_key: bytes = TEST_MASTER_KEY) -> KeyRing:
        """A real key ring whose wrapped keys live in memory: tests and the in-memory store."""
        return cls(MasterKeys.of(master_key), MemoryKeyStore())

    @property
    def storage(self) -> WrappedKeyStore:
        return self._storage

    def holds_key(self, household_id: str) -> bool:
        """Whether the household's data key is in the cache now: sealing for it then makes no key."""
        with self._lock:
            cached = self._cache.get(household_id)
        return cached is not None and time.monotonic() - cached[1] < self._cache_seconds

    # --- wrapping -----------------------------------------------------------------------

    def wrap(self, household_id: str, data_key: bytes) -> bytes:
        key_id = self._master.active.encode("ascii")
        nonce = secrets.token_bytes(NONCE_BYTES)
        body = AESGCM(self._master.keys[self._master.active]).encrypt(
            nonce, data_key, _bound(b"purchase-guard/data-key/v1\x00", household_id)
        )
        return WRAPPED_MAGIC + bytes([len(key_id)]) + key_id + nonce + body

    def unwrap(self, household_id: str, wrapped: bytes) -> bytes:
        if not wrapped.startswith(WRAPPED_MAGIC) or len(wrapped) < len(WRAPPED_MAGIC) + 1:
            raise SealError("a wrapped data key has an unknown format")
        at = len(WRAPPED_MAGIC)
        id_len = wrapped[at]
        key_id = wrapped[at + 1 : at + 1 + id_len].decode("ascii", errors="replace")
        rest = wrapped[at + 1 + id_len :]
        master = self._master.keys.get(key_id)
        if master is None:
            raise KeyUnavailable(f"the master key {key_id!r} that wrapped this data key is not configured")
        try:
            data_key = AESGCM(master).decrypt(
                rest[:NONCE_BYTES],
                rest[NONCE_BYTES:],
                _bound(b"purchase-guard/data-key/v1\x00", household_id),
            )
        except InvalidTag as exc:
            raise SealError("a wrapped data key failed authentication") from exc
        if len(data_key) != KEY_BYTES:
            raise SealError("a wrapped data key has the wrong length")
        return data_key

    @staticmethod
    def wrapped_key_id(wrapped: bytes) -> str:
        at = len(WRAPPED_MAGIC)
        return wrapped[at + 1 : at + 1 + wrapped[at]].decode("ascii", errors="replace")

    # --- data keys ----------------------------------------------------------------------

    def _data_key(self, household_id: str, *, create: bool) -> bytes:
        wrapped = self._storage.get_wrapped_key(household_id)
        if wrapped is None:
            if not create:
                raise KeyUnavailable("the household's data key does not exist (erased?)")
            fresh = self.wrap(household_id, secrets.token_bytes(KEY_BYTES))
            wrapped = self._storage.add_wrapped_key(household_id, fresh, self._master.active)
        return self.unwrap(household_id, wrapped)

    def _aead(self, household_id: str, *, create: bool) -> AESGCM:
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(household_id)
            if cached is not None and now - cached[1] < self._cache_seconds:
                return cached[0]
        aead = AESGCM(self._data_key(household_id, create=create))
        with self._lock:
            self._cache[household_id] = (aead, now)
        return aead

    def derive(self, household_id: str, purpose: str) -> bytes:
        info = (
            b"purchase-guard/derived/v1\x00"
            + purpose.encode("utf-8")
            + b"\x00"
            + household_id.encode("utf-8")
        )
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(
            self._data_key(household_id, create=True)
        )

    def seal(self, household_id: str, plaintext: bytes, aad: bytes) -> bytes:
        nonce = secrets.token_bytes(NONCE_BYTES)
        body = self._aead(household_id, create=True).encrypt(
            nonce, plaintext, _bound(b"purchase-guard/value/v1\x00", household_id, aad)
        )
        return SEALED_MAGIC + nonce + body

    def open(self, household_id: str, sealed: bytes, aad: bytes) -> bytes:
        if not sealed.startswith(SEALED_MAGIC) or len(sealed) < len(SEALED_MAGIC) + NONCE_BYTES + 16:
            raise SealError("a stored value is not in the sealed format")
        at = len(SEALED_MAGIC)
        try:
            return self._aead(household_id, create=False).decrypt(
                sealed[at : at + NONCE_BYTES],
                sealed[at + NONCE_BYTES :],
                _bound(b"purchase-guard/value/v1\x00", household_id, aad),
            )
        except InvalidTag as exc:
            raise SealError("a sealed value failed authentication (altered or moved)") from exc

    def destroy(self, household_id: str) -> None:
        with self._lock:
            self._cache.pop(household_id, None)
        self._storage.delete_wrapped_key(household_id)
        with self._lock:
            # A concurrent `_aead` may have cached the key between the two steps above.
            self._cache.pop(household_id, None)

    def forget_cached(self) -> None:
        """Drops every cached data key (after a rotation, or to force a re-read)."""
        with self._lock:
            self._cache.clear()

    def rewrap_all(self) -> int:
        """Re-wraps every data key not wrapped under the active master key; returns how many.
        Step 2 of a master key rotation (docs/privacy.md): afterwards the old key can be retired."""
        done = 0
        for household_id, wrapped in self._storage.list_wrapped_keys():
            if self.wrapped_key_id(wrapped) == self._master.active:
                continue
            fresh = self.wrap(household_id, self.unwrap(household_id, wrapped))
            if self._storage.replace_wrapped_key(household_id, wrapped, fresh, self._master.active):
                done += 1
        return done


def _conforms(ring: KeyRing, storage: MemoryKeyStore) -> tuple[Sealer, WrappedKeyStore]:
    """Never called: makes mypy prove KeyRing is a Sealer and MemoryKeyStore a WrappedKeyStore."""
    return ring, storage
