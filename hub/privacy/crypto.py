"""Keys, encryption at rest and blind indexes for personal data (ARCHITECTURE.md, principle 7).

Values are sealed with AES-256-GCM: ``v<version>:`` + base64(12-byte nonce + ciphertext + tag). The
version names the key, so keys can be rotated: a keyring holds every version still in use, new
values are sealed with the highest, and ``memberhub keys rotate`` re-seals old ones.

A blind index is a keyed hash (HMAC-SHA256, ``hub.normalise.keyed_hash`` with its own ``kind``) of a
normalised value, cut to 128 bits: equal values give equal indexes, so ``WHERE phone_bidx = ?`` finds a
phone without the database ever holding it, and nobody without the key can test guesses against it.

Where the keys come from:

- ``MEMBERHUB_ENCRYPTION_KEYS``: ``VERSION:BASE64KEY`` pairs, comma-separated (``2:…,1:…``), each key
  32 random bytes (``memberhub keys new`` prints one);
- ``MEMBERHUB_HASH_KEY``: the secret of every keyed hash (resident IDs, blind indexes);
- neither set (a laptop, ``make demo``, the tests): a key file ``keys.json`` under the hub's home
  (``.memberhub/``) is generated on first use, readable by its owner only, with a warning. A
  production hub keeps its keys in a secret store and passes them in the environment.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hub.config import hub_home
from hub.normalise import HASH_KEY_ENV, keyed_hash
from schemas.errors import HubError

ENCRYPTION_KEYS_ENV = "MEMBERHUB_ENCRYPTION_KEYS"
KEY_FILE = "keys.json"
INDEX_HEX_CHARS = 32
"""Blind indexes keep 128 of HMAC-SHA256's 256 bits: no collisions among any real number of members."""
_TOKEN = re.compile(r"v(\d+):")
_NONCE = 12

log = logging.getLogger(__name__)


class PrivacyError(HubError):
    """A key is missing or wrong, a value cannot be decrypted, or a privacy request cannot be done."""


@dataclass
class Keyring:
    """Encryption keys by version (the highest seals new values) and the blind-index secret."""

    keys: dict[int, bytes]
    index_secret: str
    origin: str = "environment"
    _ciphers: dict[int, AESGCM] = field(default_factory=dict, repr=False)
    _macs: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not self.keys:
            raise PrivacyError(f"no encryption key: set {ENCRYPTION_KEYS_ENV} (memberhub keys new prints one)")
        for version, key in self.keys.items():
            if len(key) != 32:
                raise PrivacyError(
                    f"encryption key version {version} is {len(key)} bytes; AES-256 needs 32 "
                    "(memberhub keys new prints a fresh one)"
                )
            self._ciphers[version] = AESGCM(key)
        self.current = max(self.keys)
        self._prefix = f"v{self.current}:"

    # sealing -------------------------------------------------------------------------------------
    def encrypt(self, plaintext: str) -> str:
        nonce = os.urandom(_NONCE)
        sealed = self._ciphers[self.current].encrypt(nonce, plaintext.encode(), None)
        return self._prefix + base64.b64encode(nonce + sealed).decode("ascii")

    def decrypt(self, token: str) -> str:
        version, body = self.split(token)
        cipher = self._ciphers.get(version)
        if cipher is None:
            held = ", ".join(str(v) for v in sorted(self.keys, reverse=True))
            raise PrivacyError(
                f"a value is encrypted with key version {version}, which the keyring ({self.origin}) does not "
                f"hold (it has {held}); put that key back until `memberhub keys rotate` has re-encrypted everything"
            )
        try:
            raw = base64.b64decode(body, validate=True)
            return cipher.decrypt(raw[:_NONCE], raw[_NONCE:], None).decode()
        except (InvalidTag, binascii.Error, ValueError):
            raise PrivacyError(
                f"cannot decrypt a value sealed with key version {version}: the key of that version ({self.origin}) "
                f"is not the one it was sealed with, or the value was altered. Use the {ENCRYPTION_KEYS_ENV} "
                "this database was written with"
            ) from None

    @staticmethod
    def split(token: str) -> tuple[int, str]:
        """(key version, base64 body) of a sealed value; PrivacyError for anything else."""
        match = _TOKEN.match(token) if isinstance(token, str) else None
        if match is None:
            shown = f"{type(token).__name__} of {len(token)} characters" if isinstance(token, str) else type(token)
            raise PrivacyError(
                f"an encrypted column holds a value that is not sealed ({shown}); was the database written "
                "without `memberhub db upgrade`, or by hand?"
            )
        return int(match.group(1)), token[match.end() :]

    def version_of(self, token: str) -> int:
        return self.split(token)[0]

    # blind indexes --------------------------------------------------------------------------------
    def blind_index(self, kind: str, value: str | None) -> str | None:
        """``hub.normalise.keyed_hash(f"bidx:{kind}", value)`` under the index secret, cut to 128 bits
        (the keyed state for each kind is kept, which makes it several times faster in bulk)."""
        if value in (None, ""):
            return None
        mac = self._macs.get(kind)
        if mac is None:
            keyed_hash(f"bidx:{kind}", "", key=self.index_secret)  # the same checks on the secret
            mac = self._macs[kind] = hmac.new(self.index_secret.encode(), f"bidx:{kind}:".encode(), hashlib.sha256)
        mac = mac.copy()
        mac.update(value.encode())
        return mac.hexdigest()[:INDEX_HEX_CHARS]


# ------------------------------------------------------------------------------------------ loading
def parse_keys(text: str, *, origin: str = ENCRYPTION_KEYS_ENV) -> dict[int, bytes]:
    """``2:BASE64,1:BASE64`` -> {2: key, 1: key}, with errors that say which part is wrong."""
    keys: dict[int, bytes] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        version, sep, encoded = part.partition(":")
        if not sep or not version.strip().isdigit():
            raise PrivacyError(f"{origin}: {part[:6]}… is not VERSION:BASE64KEY (e.g. 2:{'A' * 8}…)")
        number = int(version)
        if number in keys:
            raise PrivacyError(f"{origin}: key version {number} is given twice")
        try:
            keys[number] = base64.b64decode(encoded.strip() + "=" * (-len(encoded.strip()) % 4), altchars=b"-_")
        except (binascii.Error, ValueError):
            raise PrivacyError(f"{origin}: key version {number} is not base64") from None
    if not keys:
        raise PrivacyError(f"{origin} is empty; give VERSION:BASE64KEY pairs (memberhub keys new prints one)")
    return keys


def new_key() -> str:
    """A fresh 32-byte key, base64 (what goes after ``VERSION:`` in MEMBERHUB_ENCRYPTION_KEYS)."""
    return base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def key_file() -> Path:
    return hub_home() / KEY_FILE


def _read_key_file(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        keys = {int(v): base64.b64decode(k) for v, k in data["encryption"].items()}
        return {"encryption": keys, "index": str(data["index"])}
    except (OSError, ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise PrivacyError(f"{path}: not a readable MemberHub key file ({exc}); restore it from your backup") from None


def write_key_file(path: Path, encryption: dict[int, bytes], index: str, *, replace: bool = True) -> bool:
    """Write the key file, readable and writable by its owner only. With ``replace=False`` an existing
    file wins (two processes starting at once must not each seal with a key of their own): False then."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "encryption": {str(v): base64.b64encode(k).decode("ascii") for v, k in sorted(encryption.items())},
        "index": index,
    }
    temporary = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(data, out, indent=1)
    try:
        if replace:
            os.replace(temporary, path)
            return True
        try:
            os.link(temporary, path)  # atomic, and refuses to overwrite
            return True
        except FileExistsError:
            return False
    finally:
        temporary.unlink(missing_ok=True)


def _file_keys(missing: str) -> dict:
    path = key_file()
    if not path.exists() and write_key_file(path, {1: secrets.token_bytes(32)}, secrets.token_hex(32), replace=False):
        log.warning(
            "%s not set: generated the key file %s; keep it with the database, which cannot be read "
            "without it (a production hub passes its keys in the environment from a secret store)",
            missing,
            path,
        )
    return _read_key_file(path)


def add_file_key() -> int:
    """A new key version in the generated key file (which then seals new values); returns it."""
    path = key_file()
    stored = _file_keys("a key file")
    version = max(stored["encryption"]) + 1
    write_key_file(path, {**stored["encryption"], version: secrets.token_bytes(32)}, stored["index"])
    forget_keyring()
    return version


_CACHE: tuple[tuple[Any, ...], Keyring] | None = None


# Every sealed value asks for the keyring, so the check that the environment has not changed must be
# cheap: os.environ.get costs microseconds (a missing name raises inside), its backing dict nanoseconds.
_ENV_DATA = getattr(os.environ, "_data", None)
_ENV_NAMES = (ENCRYPTION_KEYS_ENV, HASH_KEY_ENV, "MEMBERHUB_HOME")
_ENV_KEYS = tuple(os.environ.encodekey(n) for n in _ENV_NAMES) if isinstance(_ENV_DATA, dict) else None


def _environment() -> tuple[Any, ...]:
    if _ENV_KEYS is not None:
        data = _ENV_DATA
        return (data.get(_ENV_KEYS[0]), data.get(_ENV_KEYS[1]), data.get(_ENV_KEYS[2]))
    return tuple(os.environ.get(n) for n in _ENV_NAMES)


def keyring() -> Keyring:
    """The hub's keyring, from the environment or the generated key file (cached until either changes)."""
    global _CACHE
    marker = _environment()
    cached = _CACHE
    if cached is not None and cached[0] == marker:
        return cached[1]
    ring = _load(os.environ.get(ENCRYPTION_KEYS_ENV), os.environ.get(HASH_KEY_ENV))
    _CACHE = (marker, ring)
    return ring


def forget_keyring() -> None:
    """Read the keys again on next use (after the key file changed)."""
    global _CACHE
    _CACHE = None


def _load(encryption_env: str | None, index_env: str | None) -> Keyring:
    if encryption_env and not index_env:
        # keys from a secret store but a blind-index secret from a local file would give each machine
        # its own indexes, and lookups would quietly find nothing
        raise PrivacyError(f"{ENCRYPTION_KEYS_ENV} is set but {HASH_KEY_ENV} is not; set both from your secret store")
    missing = " and ".join(n for n, v in ((ENCRYPTION_KEYS_ENV, encryption_env), (HASH_KEY_ENV, index_env)) if not v)
    stored = _file_keys(missing) if missing else None
    if encryption_env:
        keys, origin = parse_keys(encryption_env), ENCRYPTION_KEYS_ENV
    else:
        assert stored is not None
        keys, origin = stored["encryption"], str(key_file())
    if index_env:
        if len(index_env) < 16:
            raise PrivacyError(
                f"{HASH_KEY_ENV} is too short ({len(index_env)} characters); use at least 32 random characters"
            )
        index = index_env
    else:
        assert stored is not None
        index = stored["index"]
    return Keyring(keys, index, origin)


def encrypt(plaintext: str) -> str:
    return keyring().encrypt(plaintext)


def decrypt(token: str) -> str:
    return keyring().decrypt(token)


def blind_index(kind: str, value: str | None) -> str | None:
    """The blind index of an already normalised value (E.164 phone, lower-cased email); None for none."""
    return keyring().blind_index(kind, value)


__all__ = [
    "ENCRYPTION_KEYS_ENV",
    "Keyring",
    "PrivacyError",
    "add_file_key",
    "blind_index",
    "decrypt",
    "encrypt",
    "forget_keyring",
    "key_file",
    "keyring",
    "new_key",
    "parse_keys",
    "write_key_file",
]
