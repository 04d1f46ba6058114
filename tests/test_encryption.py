"""Payload encryption (billing/encryption.py) and its settings: AES-256-GCM per payload with the key id in the
metadata, plain payloads passed through, rotation, and key errors that never show a key."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from pydantic import BaseModel, TypeAdapter
from temporalio.api.common.v1 import Payload
from temporalio.api.failure.v1 import Failure
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError

from billing.encryption import (
    ENCODING,
    KEY_ID_METADATA,
    EncryptedFailureConverter,
    EncryptionCodec,
    PayloadDecryptionError,
    UnknownEncryptionKey,
    data_converter,
    main,
    new_key,
)
from billing.models import CustomerAccount
from billing.settings import (
    SettingsError,
    codec_server_settings_from_environment,
    encryption_keys_from_environment,
    parse_encryption_keys,
    settings_from_environment,
)

PARTNER_CENTER = {
    "BILLING_PARTNER_CENTER_CLIENT_ID": "app",
    "BILLING_PARTNER_CENTER_CLIENT_SECRET": "secret",
    "BILLING_PARTNER_CENTER_TOKEN_URL": "https://login.example.cn/t/oauth2/token",
}
ACCOUNT = CustomerAccount(customer_id="C-ENC-1", name="莲花贸易有限公司", email="ap@lotus.example.cn")


def key(key_id: str) -> str:
    return f"{key_id}:{base64.b64encode(os.urandom(32)).decode()}"


def json_payload(value: object) -> Payload:
    [payload] = pydantic_data_converter.payload_converter.to_payloads([value])
    return payload


async def test_an_encrypted_payload_holds_neither_name_nor_email_and_decrypts_to_the_original():
    codec = EncryptionCodec(parse_encryption_keys(key("2026-01")))
    plain = json_payload(ACCOUNT)
    [sealed] = await codec.encode([plain])
    assert sealed.metadata["encoding"] == ENCODING
    assert sealed.metadata[KEY_ID_METADATA] == b"2026-01"
    wire = sealed.SerializeToString()
    for personal in (ACCOUNT.name, ACCOUNT.email, "json/plain"):
        assert personal.encode() not in wire
    assert await codec.decode([sealed]) == [plain]


async def test_each_payload_gets_its_own_nonce():
    codec = EncryptionCodec(parse_encryption_keys(key("k")))
    first, second = await codec.encode([json_payload(ACCOUNT), json_payload(ACCOUNT)])
    assert first.data[:12] != second.data[:12]
    assert first.data != second.data


async def test_a_plain_json_payload_from_another_service_passes_through_unchanged():
    codec = EncryptionCodec(parse_encryption_keys(key("k")))
    plain = Payload(metadata={"encoding": b"json/plain"}, data=b'{"invoice_id": "INV-1"}')
    empty = Payload()
    assert await codec.decode([plain, empty]) == [plain, empty]


async def test_after_a_rotation_new_payloads_use_the_first_key_and_old_ones_still_decrypt():
    old, new = key("2025"), key("2026")
    [written_before] = await EncryptionCodec(parse_encryption_keys(old)).encode([json_payload(ACCOUNT)])
    rotated = EncryptionCodec(parse_encryption_keys(f"{new},{old}"))
    [written_after] = await rotated.encode([json_payload(ACCOUNT)])
    assert written_after.metadata[KEY_ID_METADATA] == b"2026"
    assert await rotated.decode([written_before, written_after]) == [json_payload(ACCOUNT)] * 2


async def test_a_payload_of_an_unknown_key_id_fails_naming_that_id():
    [sealed] = await EncryptionCodec(parse_encryption_keys(key("retired"))).encode([json_payload(ACCOUNT)])
    with pytest.raises(UnknownEncryptionKey, match=r"key id 'retired'.*ids current"):
        await EncryptionCodec(parse_encryption_keys(key("current"))).decode([sealed])


async def test_a_different_key_under_the_same_id_or_an_altered_payload_fails_clearly():
    [sealed] = await EncryptionCodec(parse_encryption_keys(key("k"))).encode([json_payload(ACCOUNT)])
    with pytest.raises(PayloadDecryptionError, match="key id 'k' does not decrypt"):
        await EncryptionCodec(parse_encryption_keys(key("k"))).decode([sealed])
    codec = EncryptionCodec(parse_encryption_keys(key("k")))
    [sealed] = await codec.encode([json_payload(ACCOUNT)])
    altered = Payload(metadata=sealed.metadata, data=sealed.data[:-1] + bytes([sealed.data[-1] ^ 1]))
    with pytest.raises(PayloadDecryptionError, match="altered"):
        await codec.decode([altered])


async def test_the_key_id_is_bound_to_the_ciphertext():
    """Relabelling a payload with another configured key's id must not decrypt (the id is associated data)."""
    shared = base64.b64encode(os.urandom(32)).decode()
    codec = EncryptionCodec(parse_encryption_keys(f"a:{shared},b:{shared}"))
    [sealed] = await codec.encode([json_payload(ACCOUNT)])
    relabelled = Payload(metadata={**sealed.metadata, KEY_ID_METADATA: b"b"}, data=sealed.data)
    with pytest.raises(PayloadDecryptionError):
        await codec.decode([relabelled])


async def test_with_keys_failure_messages_are_encrypted_too_and_without_keys_the_converter_is_todays():
    plain = data_converter(None)
    assert plain.payload_codec is None
    # The SDK's pydantic JSON, payload for payload (its type adapters shared: see the test below).
    values = [ACCOUNT, {"amount": "1.00"}, None, b"raw", "text"]
    sdk_payloads = pydantic_data_converter.payload_converter.to_payloads(values)
    assert plain.payload_converter.to_payloads(values) == sdk_payloads
    hints = [CustomerAccount, dict, type(None), bytes, str]
    assert plain.payload_converter.from_payloads(sdk_payloads, hints) == values
    converter = data_converter(parse_encryption_keys(key("k")))
    assert isinstance(converter.failure_converter, EncryptedFailureConverter)
    failure = Failure()
    await converter.encode_failure(ApplicationError(f"mail to {ACCOUNT.email} bounced"), failure)
    assert ACCOUNT.email.encode() not in failure.SerializeToString()
    assert failure.message == "Encoded failure"
    decoded = await converter.decode_failure(failure)
    assert str(decoded) == f"mail to {ACCOUNT.email} bounced"


async def test_the_engines_refusal_stays_readable_without_the_codec_and_anything_it_wraps_does_not():
    """The Web UI's update dialog shows a refusal's message only in clear; refusals name no personal data."""
    converter = data_converter(parse_encryption_keys(key("k")))
    refusal = Failure()
    await converter.encode_failure(ApplicationError("cannot write off 5000.00 CNY", type="Refused"), refusal)
    assert refusal.message == "cannot write off 5000.00 CNY"
    try:
        raise ApplicationError("ledger down", type="Refused") from OSError(f"no route for {ACCOUNT.email}")
    except ApplicationError as error:
        wrapping = Failure()
        await converter.encode_failure(error, wrapping)
    assert ACCOUNT.email.encode() not in wrapping.SerializeToString()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("k1", "entry 1 is not key_id:base64-of-32-bytes"),
        ("k1:not base64!", "key 'k1' (entry 1) is not valid base64"),
        (f"k1:{base64.b64encode(os.urandom(16)).decode()}", "key 'k1' is 16 bytes; AES-256 needs 32"),
        ("{a},{a}", "key id 'k1' appears more than once"),
        ("bad id:{b}", "key id 'bad id' must be"),
        (" , ", "no key given"),
    ],
)
def test_a_bad_key_is_a_settings_error_naming_the_entry_never_the_key(value: str, expected: str):
    secret = base64.b64encode(os.urandom(32)).decode()
    value = value.format(a=f"k1:{secret}", b=secret)
    with pytest.raises(SettingsError) as raised:
        settings_from_environment({**PARTNER_CENTER, "BILLING_ENCRYPTION_KEYS": value})
    message = str(raised.value)
    assert "BILLING_ENCRYPTION_KEYS" in message and expected in message, message
    assert secret not in message


def test_keys_never_show_in_a_repr_of_the_settings_or_the_codec():
    value = key("shown-id")
    secret = value.partition(":")[2]
    settings = settings_from_environment({**PARTNER_CENTER, "BILLING_ENCRYPTION_KEYS": value})
    raw = base64.b64decode(secret)
    assert settings.encryption_keys is not None
    for text in (
        repr(settings),
        str(settings),
        repr(settings.encryption_keys),
        repr(EncryptionCodec(settings.encryption_keys)),
    ):
        assert secret not in text and repr(raw) not in text and str(raw) not in text
    assert "shown-id" in repr(settings.encryption_keys)


def test_keys_are_read_from_a_file_one_per_line_or_comma_separated(tmp_path: Path):
    first, second, third = key("a"), key("b"), key("c")
    path = tmp_path / "keys"
    path.write_text(f"{first}\n{second}, {third}\n", encoding="utf-8")
    keys = encryption_keys_from_environment({"BILLING_ENCRYPTION_KEYS_FILE": str(path)})
    assert keys is not None and keys.ids == ["a", "b", "c"] and keys.encrypting.key_id == "a"
    with pytest.raises(SettingsError, match="both set"):
        encryption_keys_from_environment({"BILLING_ENCRYPTION_KEYS_FILE": str(path), "BILLING_ENCRYPTION_KEYS": first})
    with pytest.raises(SettingsError, match=r"BILLING_ENCRYPTION_KEYS_FILE: cannot read .*missing"):
        encryption_keys_from_environment({"BILLING_ENCRYPTION_KEYS_FILE": str(tmp_path / "missing")})
    path.write_text("a:short\n", encoding="utf-8")
    with pytest.raises(SettingsError, match=r"BILLING_ENCRYPTION_KEYS_FILE \(.*\): key 'a'"):
        encryption_keys_from_environment({"BILLING_ENCRYPTION_KEYS_FILE": str(path)})


def test_no_key_setting_means_plain_json():
    assert encryption_keys_from_environment({}) is None
    assert settings_from_environment(PARTNER_CENTER).encryption_keys is None


def test_the_codec_server_needs_keys_and_off_loopback_a_token():
    keys = {"BILLING_ENCRYPTION_KEYS": key("k")}
    with pytest.raises(SettingsError, match="BILLING_ENCRYPTION_KEYS or BILLING_ENCRYPTION_KEYS_FILE is required"):
        codec_server_settings_from_environment({})
    with pytest.raises(SettingsError, match="BILLING_CODEC_TOKEN is required when BILLING_CODEC_HOST is not loopback"):
        codec_server_settings_from_environment({**keys, "BILLING_CODEC_HOST": "0.0.0.0"})
    settings = codec_server_settings_from_environment(
        {**keys, "BILLING_CODEC_HOST": "10.0.0.5", "BILLING_CODEC_TOKEN": "t0ken-value"}
    )
    assert "t0ken-value" not in repr(settings)
    local = codec_server_settings_from_environment(keys)
    assert (local.host, local.port, local.token, local.cors_origins) == (
        "127.0.0.1",
        8081,
        None,
        ("http://localhost:8233",),
    )
    several = codec_server_settings_from_environment(
        {**keys, "BILLING_CODEC_CORS_ORIGINS": "http://localhost:8233, https://temporal.partner.example.cn/"}
    )
    assert several.cors_origins == ("http://localhost:8233", "https://temporal.partner.example.cn")
    with pytest.raises(SettingsError, match="BILLING_CODEC_CORS_ORIGINS: 'localhost:8233' is not an origin"):
        codec_server_settings_from_environment({**keys, "BILLING_CODEC_CORS_ORIGINS": "localhost:8233"})


def test_new_key_prints_a_key_the_setting_accepts(capsys: pytest.CaptureFixture[str]):
    assert main(["new-key", "--id", "2026-05"]) == 0
    printed = capsys.readouterr().out.strip()
    assert parse_encryption_keys(printed).ids == ["2026-05"]
    assert new_key("x") != new_key("x")


def test_dev_run_makes_its_key_once_readable_by_its_user_only_and_a_developers_own_keys_win(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from billing.devtools.local_stack import encryption_key_file, worker_environment

    monkeypatch.delenv("BILLING_ENCRYPTION_KEYS", raising=False)
    monkeypatch.delenv("BILLING_ENCRYPTION_KEYS_FILE", raising=False)
    env = worker_environment(tmp_path, demo=False)
    path = Path(env["BILLING_ENCRYPTION_KEYS_FILE"])
    assert path == tmp_path / "encryption-keys"
    assert path.stat().st_mode & 0o777 == 0o600
    first = path.read_text(encoding="utf-8")
    assert encryption_keys_from_environment(env) is not None
    assert encryption_key_file(tmp_path) == path and path.read_text(encoding="utf-8") == first  # reused
    monkeypatch.setenv("BILLING_ENCRYPTION_KEYS", key("mine"))
    assert "BILLING_ENCRYPTION_KEYS_FILE" not in worker_environment(tmp_path, demo=False)


def test_a_command_in_the_checkout_of_dev_run_uses_its_key_unless_told_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cli import common

    key_file = tmp_path / "encryption-keys"
    key_file.write_text(new_key("dev-run"), encoding="utf-8")
    monkeypatch.setattr(common, "DEV_RUN_KEY_FILE", key_file)
    codec = common.data_converter({}).payload_codec
    assert isinstance(codec, EncryptionCodec) and codec._keys.ids == ["dev-run"]
    own = common.data_converter({"BILLING_ENCRYPTION_KEYS": new_key("own")}).payload_codec
    assert isinstance(own, EncryptionCodec) and own._keys.ids == ["own"]
    monkeypatch.setattr(common, "DEV_RUN_KEY_FILE", tmp_path / "none")
    assert common.data_converter({}).payload_codec is None


def test_the_payload_converters_of_all_workflow_instances_share_their_type_adapters(monkeypatch):
    """The worker makes a payload converter for each workflow instance: each built (and, cached, kept) its own
    pydantic TypeAdapter of every model it decoded."""

    class Decoded(BaseModel):
        value: int

    built: list[object] = []
    original = TypeAdapter.__init__

    def counting(self, kind, *args, **kwargs):  # type: ignore[no-untyped-def]
        if kind is Decoded:
            built.append(kind)
        original(self, kind, *args, **kwargs)

    monkeypatch.setattr(TypeAdapter, "__init__", counting)
    converter_class = data_converter(None).payload_converter_class
    payloads = pydantic_data_converter.payload_converter.to_payloads([Decoded(value=1)])

    for _ in range(3):  # three workflow instances
        assert converter_class().from_payloads(payloads, [Decoded]) == [Decoded(value=1)]

    assert len(built) == 1
