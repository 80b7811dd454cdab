import hashlib
import hmac

import pytest

from rasa_sparkcentral.signature import (
    InvalidSecretError,
    decode_secret,
    sign,
    sign_with_secret,
    verify,
)

VECTOR_SECRET = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
VECTOR_BODY = (
    b'{"timestamp":"2019-02-20T10:29:10.238188Z",'
    b'"idempotencyKey":"5b784e97-34fa-11e9-bf33-f1b7c89708ca","version":1,'
    b'"type":"INBOUND_MESSAGE_RECEIVED","data":{"conversationId":"0-01e67a8c216-000-8c9ea98e",'
    b'"message":{"text":"Hello"}}}'
)
VECTOR_DIGEST = "239d4f1960b558f61955ad94dd3c847d80df2fe17b37a9ac7ba67ace75a1106d"


def test_protocol_test_vector() -> None:
    assert len(VECTOR_BODY) == 227
    assert sign_with_secret(VECTOR_SECRET, VECTOR_BODY) == VECTOR_DIGEST


def test_ascii_keyed_digest_differs_from_the_vector() -> None:
    wrong = hmac.new(VECTOR_SECRET.encode(), VECTOR_BODY, hashlib.sha256).hexdigest()
    assert wrong != VECTOR_DIGEST
    assert not verify(decode_secret(VECTOR_SECRET), VECTOR_BODY, wrong)


@pytest.mark.parametrize("header", [VECTOR_DIGEST, VECTOR_DIGEST.upper(), f"  {VECTOR_DIGEST} "])
def test_verify_accepts_either_case(header: str) -> None:
    assert verify(decode_secret(VECTOR_SECRET), VECTOR_BODY, header)


@pytest.mark.parametrize(
    "header",
    [None, "", "abc", VECTOR_DIGEST[:-1] + "0", "sha256=" + VECTOR_DIGEST, "é" * 64, "z" * 64],
)
def test_verify_rejects(header: "str | None") -> None:
    assert not verify(decode_secret(VECTOR_SECRET), VECTOR_BODY, header)


def test_body_change_breaks_signature() -> None:
    key = decode_secret(VECTOR_SECRET)
    assert not verify(key, VECTOR_BODY + b" ", VECTOR_DIGEST)
    assert verify(key, b"", sign(key, b""))


@pytest.mark.parametrize("secret", ["", "   ", "xyz", "abc", "00112233gg"])
def test_decode_secret_rejects_non_hex(secret: str) -> None:
    with pytest.raises(InvalidSecretError):
        decode_secret(secret)


def test_either_platform_header_is_read() -> None:
    from multidict import CIMultiDict

    from rasa_sparkcentral.signature import signature_of

    assert signature_of(CIMultiDict({"x-hootsuite-signature": "ab"})) == "ab"
    assert signature_of(CIMultiDict({"X-Sparkcentral-Signature": "cd"})) == "cd"
    both = CIMultiDict({"X-Hootsuite-Signature": "ab", "X-Sparkcentral-Signature": "cd"})
    assert signature_of(both) == "cd"
    assert signature_of(CIMultiDict({"X-Other-Signature": "ef"})) is None
