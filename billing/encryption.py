"""Payload encryption: with `BILLING_ENCRYPTION_KEYS` set, every payload the engine writes to Temporal (workflow
inputs, activity inputs and results, query and update results, memo, summaries, failure messages) is
AES-256-GCM ciphertext, so no customer name or email is stored in clear on the Temporal server.

    python -m billing.encryption new-key [--id KEY_ID]     prints a new `key_id:base64` for the setting

The codec encrypts the whole serialised payload (its metadata too), as Temporal recommends
(https://docs.temporal.io/production-deployment/data-encryption), and writes the id of the key it used into the
new payload's metadata, so a payload written before a key rotation still finds its key. A payload without the
encrypted encoding passes through unchanged: other services may send plain JSON, as the contract allows.
"""

from __future__ import annotations

import argparse
import base64
import copy
import dataclasses
import functools
import os
import sys
from collections.abc import Sequence
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.protobuf.message import DecodeError
from pydantic import TypeAdapter
from temporalio.api.common.v1 import Payload
from temporalio.api.failure.v1 import Failure
from temporalio.contrib.pydantic import PydanticJSONPlainPayloadConverter, pydantic_data_converter
from temporalio.converter import (
    CompositePayloadConverter,
    DataConverter,
    DefaultFailureConverter,
    DefaultPayloadConverter,
    JSONPlainPayloadConverter,
    PayloadCodec,
    PayloadConverter,
)
from temporalio.exceptions import ApplicationError

from billing.encryption_keys import KEY_BYTES, EncryptionKey, EncryptionKeys

ENCODING = b"binary/encrypted"
KEY_ID_METADATA = "encryption-key-id"
NONCE_BYTES = 12  # 96 bits, the size GCM is specified for (NIST SP 800-38D, 5.2.1.1)


class PayloadDecryptionError(ValueError):
    """An encrypted payload this engine cannot decrypt; the message names the key id, never key material."""


class UnknownEncryptionKey(PayloadDecryptionError):
    """The payload was encrypted with a key id that is not among the configured keys."""


def new_key(key_id: str) -> str:
    """A fresh random key in the setting's `key_id:base64` form."""
    EncryptionKey(key_id, bytes(KEY_BYTES))  # checks the id
    return f"{key_id}:{base64.b64encode(os.urandom(KEY_BYTES)).decode()}"


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM over the serialised payload, a random 96-bit nonce per payload, the key id in the metadata
    (and bound to the ciphertext as associated data, so it cannot be swapped)."""

    def __init__(self, keys: EncryptionKeys) -> None:
        self._keys = keys
        self._ciphers = {key.key_id: AESGCM(key.secret) for key in (keys.get(i) for i in keys.ids) if key}

    def __repr__(self) -> str:
        return f"EncryptionCodec({self._keys!r})"

    def encrypt(self, payload: Payload) -> Payload:
        key_id = self._keys.encrypting.key_id
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[key_id].encrypt(nonce, payload.SerializeToString(), key_id.encode())
        return Payload(metadata={"encoding": ENCODING, KEY_ID_METADATA: key_id.encode()}, data=nonce + sealed)

    def decrypt(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            return payload
        key_id = payload.metadata.get(KEY_ID_METADATA, b"").decode(errors="replace")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise UnknownEncryptionKey(
                f"the payload was encrypted with key id {key_id!r}, which is not among the configured "
                f"BILLING_ENCRYPTION_KEYS (ids {', '.join(self._keys.ids)}): add that key to decrypt it"
            )
        nonce, sealed = payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:]
        try:
            return Payload.FromString(cipher.decrypt(nonce, sealed, key_id.encode()))
        except (InvalidTag, ValueError, DecodeError):
            raise PayloadDecryptionError(
                f"the payload encrypted with key id {key_id!r} does not decrypt with the configured key of that "
                "id: the key differs from the one that encrypted it, or the payload was altered"
            ) from None

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.encrypt(payload) for payload in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.decrypt(payload) for payload in payloads]


# The engine's own refusals (workflows/inbox.py) and "not started yet": sentences the engine writes, which name
# fields and amounts, never a customer's name or email (billing/refusals.py says never the value).
PLAIN_FAILURE_TYPES = frozenset({"Refused", "NotStarted"})


def is_refusal(exception: BaseException) -> bool:
    """The engine saying no with a sentence of its own: not a bug, so its failure needs no stack trace."""
    return isinstance(exception, ApplicationError) and exception.type in PLAIN_FAILURE_TYPES


def _sentence_only(refusal: ApplicationError) -> ApplicationError:
    """The same refusal without its traceback (the one raised keeps its own). The SDK writes an exception's
    traceback into the failure's `stack_trace`, which the Temporal Web UI shows under the message: the worker's
    file paths under an operator's refusal read as a crash. What it wraps, if anything, keeps its trace."""
    bare = copy.copy(refusal)  # a copy carries no traceback
    bare.__cause__, bare.__context__ = refusal.__cause__, refusal.__context__
    bare.__suppress_context__ = refusal.__suppress_context__
    return bare


class RefusalFailureConverter(DefaultFailureConverter):
    """The SDK's failure conversion, except that the engine's refusals carry their sentence and no stack trace
    (`CONTRACT.md`: "A refusal's failure carries the sentence only"). Every other failure (a bug, an activity's
    error) keeps its trace."""

    def to_failure(self, exception: BaseException, payload_converter: PayloadConverter, failure: Failure) -> None:
        if isinstance(exception, ApplicationError) and is_refusal(exception):
            exception = _sentence_only(exception)
        super().to_failure(exception, payload_converter, failure)


class EncryptedFailureConverter(RefusalFailureConverter):
    """Failure messages and stack traces moved into the failure's encoded attributes, which the codec encrypts
    (they are not payloads by default: https://docs.temporal.io/production-deployment/data-encryption,
    "Application errors and failures"), as `DefaultFailureConverterWithEncodedAttributes` does, except the
    engine's refusals: an operator must read why an update was refused where it was sent, and the Temporal
    Web UI's "Send an Update" dialog (UI 2.54) shows an encoded failure as "Encoded failure", even with a codec
    server configured. Everything else (activity errors, mail and HTTP errors, stack traces) is encrypted."""

    def __init__(self) -> None:
        super().__init__(encode_common_attributes=True)
        self._plain = RefusalFailureConverter()

    def to_failure(self, exception: BaseException, payload_converter: PayloadConverter, failure: Failure) -> None:
        if is_refusal(exception) and exception.__cause__ is None:
            self._plain.to_failure(exception, payload_converter, failure)
        else:
            super().to_failure(exception, payload_converter, failure)


# One cache of pydantic type adapters for every payload converter of the process. The worker makes a payload
# converter for each workflow instance it takes up, and the SDK's keeps its own cache: every cached lifecycle
# built and kept its own TypeAdapter of each model it decoded (11 KiB a lifecycle, bench/profile_worker.py).
# An adapter is a pure function of its type, and the payload types are the billing models, shared by every
# sandbox; functools' cache is safe across the activation threads.
_TYPE_ADAPTERS = functools.lru_cache(maxsize=1024)(TypeAdapter)


class _SharedAdaptersJSONConverter(PydanticJSONPlainPayloadConverter):
    """The SDK's pydantic JSON converter, decoding through the process's one cache of type adapters."""

    def __init__(self) -> None:
        super().__init__(max_cached_type_adapters=0)

    def from_payload(self, payload: Payload, type_hint: type | None = None) -> Any:
        hint = Any if type_hint is None else type_hint
        try:
            adapter: TypeAdapter[Any] = _TYPE_ADAPTERS(hint)
        except TypeError:
            try:
                hash(hint)
            except TypeError:  # an unhashable hint, as the SDK's converter: no cache
                adapter = TypeAdapter(hint)
            else:
                raise
        return adapter.validate_json(payload.data)


class SharedPydanticPayloadConverter(CompositePayloadConverter):
    """`temporalio.contrib.pydantic.PydanticPayloadConverter` (the same payloads, plain JSON), with the type
    adapters shared by every instance."""

    def __init__(self) -> None:
        super().__init__(
            *(
                _SharedAdaptersJSONConverter() if isinstance(converter, JSONPlainPayloadConverter) else converter
                for converter in DefaultPayloadConverter.default_encoding_payload_converters
            )
        )


def data_converter(keys: EncryptionKeys | None) -> DataConverter:
    """The engine's data converter: plain JSON (pydantic) without keys; with keys, JSON encrypted by the codec
    and failure messages encrypted too (`EncryptedFailureConverter`). Either way a refusal carries no stack
    trace (`RefusalFailureConverter`)."""
    plain = dataclasses.replace(pydantic_data_converter, payload_converter_class=SharedPydanticPayloadConverter)
    if keys is None:
        return dataclasses.replace(plain, failure_converter_class=RefusalFailureConverter)
    return dataclasses.replace(
        plain, payload_codec=EncryptionCodec(keys), failure_converter_class=EncryptedFailureConverter
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m billing.encryption", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("new-key", help="print a new random key as key_id:base64")
    create.add_argument("--id", default="key-1", help="the key's id, written into every payload it encrypts")
    args = parser.parse_args(argv)
    try:
        print(new_key(args.id))
    except ValueError as error:
        print(f"python -m billing.encryption: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
