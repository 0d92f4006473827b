"""Personal data at rest: sealed columns, blind indexes, keys and their rotation, and privacy
requests (export everything held about a person; forget them).

    crypto      keys (environment or generated key file), AES-GCM sealing, blind indexes
    types       EncryptedText / EncryptedJSON columns, blind indexes kept on ORM writes
    guard       staging's hook: blind indexes on new rows, forgotten people withheld
    requests    export and forget
    rotation    re-sealing with the newest key, and what each key still seals

Modules that need the tables (guard, requests, rotation) are imported by name: hub.tables imports
this package for its column types.
"""

from hub.privacy.crypto import (
    ENCRYPTION_KEYS_ENV,
    Keyring,
    PrivacyError,
    blind_index,
    decrypt,
    encrypt,
    keyring,
    new_key,
)

__all__ = [
    "ENCRYPTION_KEYS_ENV",
    "Keyring",
    "PrivacyError",
    "blind_index",
    "decrypt",
    "encrypt",
    "keyring",
    "new_key",
]
