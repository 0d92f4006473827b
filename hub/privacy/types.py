"""Column types that seal personal data at rest: the ORM and Core statements read and write plain
values, the database holds only ``v<version>:…`` ciphertext (see hub.privacy.crypto).

A sealed column cannot be compared in SQL — each value has its own random nonce, so ``phone = ?``
would quietly match nothing. Comparing one raises instead; look it up by its blind index column
(``phone_bidx``, ``email_bidx``). ``IS NULL`` still works: a missing value is stored as NULL.
"""

from __future__ import annotations

import json
import operator
from typing import Any

from sqlalchemy import Text
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import operators
from sqlalchemy.types import TypeDecorator

from hub.privacy.crypto import PrivacyError, keyring

_ALLOWED = {operators.is_, operators.is_not}


class _Sealed(TypeDecorator[Any]):
    impl = Text
    cache_ok = True

    class comparator_factory(Text.Comparator):
        def operate(self, op: Any, *other: Any, **kwargs: Any) -> Any:
            if op in (operator.eq, operator.ne) and other and other[0] is None:
                return super().operate(op, *other, **kwargs)
            if op not in _ALLOWED:
                raise PrivacyError(
                    f"{getattr(self.expr, 'name', 'an encrypted column')} is encrypted: it cannot be compared in SQL; "
                    "look it up by its blind index (hub.privacy.blind_index, the *_bidx columns)"
                )
            return super().operate(op, *other, **kwargs)

        def reverse_operate(self, op: Any, other: Any, **kwargs: Any) -> Any:
            raise PrivacyError("an encrypted column cannot be compared in SQL; use its blind index")


class EncryptedText(_Sealed):
    """Text sealed with the current key."""

    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return keyring().encrypt(value if isinstance(value, str) else str(value))

    def process_result_value(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else keyring().decrypt(value)


class EncryptedJSON(_Sealed):
    """A JSON document (dict, list, …) sealed as one value."""

    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return keyring().encrypt(json.dumps(value, ensure_ascii=False, separators=(",", ":")))

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        return None if value is None else json.loads(keyring().decrypt(value))


def keep_blind_indexes(*models: Any) -> None:
    """Every ORM write of ``phone`` or ``email`` on these models also sets ``phone_bidx``/``email_bidx``.
    (Core bulk writes — staging — compute them with ``hub.privacy.blind_indexes``.)"""
    from sqlalchemy import event

    for model in models:
        for name in ("phone", "email"):

            def _set(target: Any, value: Any, _old: Any, _initiator: Any, name: str = name) -> None:
                setattr(target, f"{name}_bidx", keyring().blind_index(name, value))

            event.listen(getattr(model, name), "set", _set)


__all__ = ["EncryptedJSON", "EncryptedText", "keep_blind_indexes"]
