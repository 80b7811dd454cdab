"""Webhook signatures: HMAC-SHA256 over the raw body, keyed with the hex-decoded secret."""

from __future__ import annotations

import binascii
import hashlib
import hmac
from typing import Mapping, Optional

from rasa_sparkcentral.protocol import SIGNATURE_HEADER, SIGNATURE_HEADERS

__all__ = [
    "SIGNATURE_HEADER",
    "InvalidSecretError",
    "decode_secret",
    "sign",
    "signature_of",
    "verify",
]


class InvalidSecretError(ValueError):
    """The shared secret is not a non-empty hexadecimal string."""


def decode_secret(secret_hex: str) -> bytes:
    """Turn the hexadecimal shared secret Sparkcentral shows into the HMAC key bytes."""
    cleaned = secret_hex.strip() if isinstance(secret_hex, str) else ""
    if not cleaned:
        raise InvalidSecretError("the shared secret is empty")
    try:
        return binascii.unhexlify(cleaned)
    except (binascii.Error, ValueError):
        raise InvalidSecretError(
            "the shared secret is not a hexadecimal string of even length"
        ) from None


def sign(key: bytes, body: bytes) -> str:
    """Lowercase hex HMAC-SHA256 of ``body`` under ``key`` (already decoded)."""
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def sign_with_secret(secret_hex: str, body: bytes) -> str:
    """Sign ``body`` with the shared secret as Sparkcentral shows it (hex)."""
    return sign(decode_secret(secret_hex), body)


def verify(key: bytes, body: bytes, header_value: str | None) -> bool:
    """Check a signature header in constant time; any case of hex is accepted."""
    if not header_value:
        return False
    candidate = header_value.strip().lower()
    if len(candidate) != 64:
        return False
    expected = sign(key, body)
    return hmac.compare_digest(expected.encode("ascii"), candidate.encode("ascii", "replace"))


def signature_of(headers: Mapping[str, str]) -> Optional[str]:
    """The request's signature: ``X-Sparkcentral-Signature`` or ``X-Hootsuite-Signature``
    (either platform may send either; ``headers`` must match names case-insensitively, as
    Sanic's and aiohttp's header mappings do)."""
    for name in SIGNATURE_HEADERS:
        value = headers.get(name)
        if value:
            return value
    return None
