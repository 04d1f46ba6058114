"""The payload encryption keys as the settings give them (`BILLING_ENCRYPTION_KEYS`): ids and key material,
kept apart from the codec (billing/encryption.py) so that reading the settings needs neither Temporal nor a
cipher library."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

KEY_BYTES = 32  # AES-256
KEY_ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")


@dataclass(frozen=True)
class EncryptionKey:
    key_id: str
    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not KEY_ID_PATTERN.fullmatch(self.key_id):
            raise ValueError(f"key id {self.key_id!r} must be 1-64 letters, digits, '.', '_' or '-'")
        if len(self.secret) != KEY_BYTES:
            raise ValueError(f"key {self.key_id!r} is {len(self.secret)} bytes; AES-256 needs {KEY_BYTES}")


class EncryptionKeys:
    """The configured keys: the first encrypts, every one decrypts. Its repr shows the ids only."""

    def __init__(self, keys: Sequence[EncryptionKey]) -> None:
        if not keys:
            raise ValueError("at least one key is needed")
        ids = [key.key_id for key in keys]
        duplicates = sorted({key_id for key_id in ids if ids.count(key_id) > 1})
        if duplicates:
            raise ValueError(f"key id {duplicates[0]!r} appears more than once")
        self._keys = {key.key_id: key for key in keys}
        self.encrypting = keys[0]

    @property
    def ids(self) -> list[str]:
        return list(self._keys)

    def get(self, key_id: str) -> EncryptionKey | None:
        return self._keys.get(key_id)

    def __repr__(self) -> str:
        return f"EncryptionKeys(ids={self.ids!r})"
