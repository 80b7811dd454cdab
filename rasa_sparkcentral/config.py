"""Channel settings read from ``credentials.yml``, validated with one clear message each."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional
from urllib.parse import urlparse

from rasa_sparkcentral.protocol import (
    ATTACHMENT_LIMIT_BYTES,
    CREDENTIALS_KEY,
    HOOTSUITE,
    MAX_EVENT_AGE,
    PLATFORMS,
    SPARKCENTRAL,
    Platform,
)
from rasa_sparkcentral.signature import InvalidSecretError, decode_secret

REGION_BASE_URLS = dict(PLATFORMS[SPARKCENTRAL].base_urls)
REPLY_MODES = ("rest", "webhook")


class ConfigError(ValueError):
    """A setting is missing or malformed. The message names the key."""


@dataclass(frozen=True)
class Settings:
    """Everything the channel needs, after validation."""

    shared_secret: bytes = field(repr=False)
    client_id: Optional[str] = None
    client_secret: Optional[str] = field(default=None, repr=False)
    platform: str = SPARKCENTRAL
    organization_id: Optional[str] = None
    region: str = "us"
    base_url: str = REGION_BASE_URLS["us"]
    reply_mode: str = "rest"
    #: Sent to Rasa after the fresh session on CONVERSATION_STARTED: none by default, since
    #: the contact's own messages follow from the beginning of the conversation.
    conversation_started_intent: Optional[str] = None
    #: Sent on CONVERSATION_DELEGATED: the bot is expected to ask the first question.
    conversation_delegated_intent: Optional[str] = "greet"
    #: Events whose ``timestamp`` is further than this in the past or future are refused
    #: as possible replays (seconds; 0 turns the check off).
    max_event_age: float = MAX_EVENT_AGE
    redis_url: Optional[str] = field(default=None, repr=False)
    intent_topics: Any = False
    allow_successor_fields: bool = False
    webhook_timeout: float = 8.0
    max_body_bytes: int = 256 * 1024
    dedup_ttl: float = 24 * 3600.0
    cache_size: int = 10_000
    request_timeout: float = 10.0
    max_attempts: int = 6
    retry_deadline: float = 60.0
    backoff_base: float = 0.25
    backoff_max: float = 10.0
    max_connections: int = 20
    max_concurrent_turns: int = 8
    order_timeout: float = 60.0
    webhook_port: Optional[int] = None
    webhook_host: str = "0.0.0.0"
    #: Attachments must be fewer than 10,000,000 bytes.
    image_max_bytes: int = ATTACHMENT_LIMIT_BYTES - 1
    image_timeout: float = 10.0
    #: The embedded journal (and its outbox beside it); unused with ``redis_url``.
    journal_path: str = ".rasa/sparkcentral-journal.sqlite3"
    #: A dead instance's conversations are taken over after this many seconds.
    claim_after: float = 15.0
    #: Replies not delivered within this many seconds are given up (the platform hands
    #: an unanswered conversation to a human after 5 minutes).
    reply_deadline: float = 300.0
    #: This instance's name for its leases (default hostname:port).
    instance_name: Optional[str] = None
    #: Contact text starting with "/" is read as an intent only when this is true
    #: (trusted test channels); otherwise it reaches Rasa as plain text.
    trust_slash_commands: bool = False
    #: Only a message whose channel details are new to Rasa carries them in its metadata
    #: (the slots keep them, and the slot action brings them back where Rasa emptied
    #: them); true: every message repeats them (see the README).
    details_in_every_message: bool = False
    #: How long a stopping server lets turns in flight finish (seconds).
    shutdown_grace: float = 10.0
    #: Python's thread switch interval (``sys.setswitchinterval``) set when the channel
    #: starts; None: leave Python's (5 ms).
    switch_interval: Optional[float] = None

    @property
    def has_api_keys(self) -> bool:
        return bool(self.client_id and self.client_secret)

    @property
    def api(self) -> Platform:
        """Paths, token grant and signature header of the configured platform."""
        return PLATFORMS[self.platform]

    @classmethod
    def from_credentials(cls, credentials: Optional[Mapping[str, Any]]) -> Settings:
        creds: Dict[str, Any] = dict(credentials or {})

        secret_hex = _text(creds, "shared_secret")
        if not secret_hex:
            raise ConfigError(
                f"{CREDENTIALS_KEY}: 'shared_secret' is missing: copy the shared secret "
                "Sparkcentral shows when you add the Custom Virtual Agent"
            )
        try:
            shared_secret = decode_secret(secret_hex)
        except InvalidSecretError as e:
            raise ConfigError(f"{CREDENTIALS_KEY}: 'shared_secret' is invalid: {e}") from None

        platform_name = (_text(creds, "platform") or SPARKCENTRAL).lower()
        if platform_name not in PLATFORMS:
            raise ConfigError(
                f"{CREDENTIALS_KEY}: 'platform' must be one of {', '.join(PLATFORMS)}, "
                f"not {platform_name!r}"
            )
        platform = PLATFORMS[platform_name]
        regions = platform.base_urls
        default_region = next(iter(regions))
        region = (_text(creds, "region") or default_region).lower()
        if region not in regions:
            raise ConfigError(
                f"{CREDENTIALS_KEY}: 'region' must be one of {', '.join(regions)} on "
                f"platform {platform_name}, not {region!r}"
            )
        base_url = _text(creds, "base_url") or regions[region]
        parsed = urlparse(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ConfigError(
                f"{CREDENTIALS_KEY}: 'base_url' must be an http(s) URL, not {base_url!r}"
            )

        client_id = _text(creds, "client_id")
        client_secret = _text(creds, "client_secret")
        where_keys = (
            "the client id and secret of the Hootsuite developer app linked to your organization"
            if platform_name == HOOTSUITE
            else "Settings → Integrations → Generate API Keys"
        )
        if bool(client_id) != bool(client_secret):
            missing = "client_secret" if client_id else "client_id"
            raise ConfigError(
                f"{CREDENTIALS_KEY}: '{missing}' is missing: give both API keys "
                f"({where_keys}) or neither"
            )
        organization_id = _text(creds, "organization_id")
        if platform_name == HOOTSUITE and client_id and not organization_id:
            raise ConfigError(
                f"{CREDENTIALS_KEY}: 'organization_id' is missing: platform hootsuite grants "
                "tokens per organization (the number in the URL of Hootsuite's Teams page)"
            )

        reply_mode = (_text(creds, "reply_mode") or "rest").lower()
        if reply_mode not in REPLY_MODES:
            raise ConfigError(
                f"{CREDENTIALS_KEY}: 'reply_mode' must be one of {', '.join(REPLY_MODES)}, "
                f"not {reply_mode!r}"
            )
        if reply_mode == "rest" and not client_id:
            raise ConfigError(
                f"{CREDENTIALS_KEY}: 'client_id' and 'client_secret' are missing: "
                "reply_mode 'rest' needs API keys (or set reply_mode: webhook)"
            )

        start_intent = _intent(creds, "conversation_started_intent", None)
        delegated_intent = _intent(creds, "conversation_delegated_intent", "greet")

        webhook_port: Optional[int] = None
        if creds.get("webhook_port") not in (None, ""):
            webhook_port = int(_number(creds, "webhook_port", 0, low=1, high=65535))
            if reply_mode == "webhook":
                raise ConfigError(
                    f"{CREDENTIALS_KEY}: 'webhook_port' answers webhooks at once, so it "
                    "needs reply_mode 'rest'"
                )

        intent_topics = creds.get("intent_topics", False)
        if intent_topics is None:
            intent_topics = False
        if not isinstance(intent_topics, (bool, dict)):
            raise ConfigError(
                f"{CREDENTIALS_KEY}: 'intent_topics' must be true, false or a mapping "
                "intent → topic"
            )

        return cls(
            shared_secret=shared_secret,
            client_id=client_id,
            client_secret=client_secret,
            platform=platform_name,
            organization_id=organization_id,
            region=region,
            base_url=base_url.rstrip("/"),
            reply_mode=reply_mode,
            conversation_started_intent=start_intent,
            conversation_delegated_intent=delegated_intent,
            max_event_age=_number(creds, "max_event_age", MAX_EVENT_AGE, low=0),
            redis_url=_text(creds, "redis_url"),
            intent_topics=intent_topics,
            allow_successor_fields=_bool(
                creds, "allow_successor_fields", platform.successor_fields
            ),
            webhook_timeout=_number(creds, "webhook_timeout", 8.0, low=0.1, high=9.5),
            max_body_bytes=int(_number(creds, "max_body_bytes", 256 * 1024, low=1024)),
            dedup_ttl=_number(creds, "dedup_ttl", 24 * 3600.0, low=1),
            cache_size=int(_number(creds, "cache_size", 10_000, low=10)),
            request_timeout=_number(creds, "request_timeout", 10.0, low=0.1),
            max_attempts=int(_number(creds, "max_attempts", 6, low=1, high=50)),
            retry_deadline=_number(creds, "retry_deadline", 60.0, low=0.1),
            backoff_base=_number(creds, "backoff_base", 0.25, low=0.0),
            backoff_max=_number(creds, "backoff_max", 10.0, low=0.0),
            max_connections=int(_number(creds, "max_connections", 20, low=1)),
            max_concurrent_turns=int(_number(creds, "max_concurrent_turns", 8, low=1)),
            order_timeout=_number(creds, "order_timeout", 60.0, low=0.1),
            webhook_port=webhook_port,
            webhook_host=_text(creds, "webhook_host") or "0.0.0.0",
            image_max_bytes=int(
                _number(
                    creds,
                    "image_max_bytes",
                    ATTACHMENT_LIMIT_BYTES - 1,
                    low=1,
                    high=ATTACHMENT_LIMIT_BYTES - 1,
                )
            ),
            image_timeout=_number(creds, "image_timeout", 10.0, low=0.1),
            journal_path=_text(creds, "journal_path") or ".rasa/sparkcentral-journal.sqlite3",
            claim_after=_number(creds, "claim_after", 15.0, low=0.5),
            reply_deadline=_number(creds, "reply_deadline", 300.0, low=1.0),
            instance_name=_text(creds, "instance_name"),
            trust_slash_commands=_bool(creds, "trust_slash_commands", False),
            details_in_every_message=_bool(creds, "details_in_every_message", False),
            shutdown_grace=_number(creds, "shutdown_grace", 10.0, low=0.0),
            switch_interval=_switch_interval(creds),
        )


def _switch_interval(creds: Mapping[str, Any]) -> Optional[float]:
    """Seconds, or None to leave Python's own (5 ms)."""
    if creds.get("switch_interval") in (None, "", 0, "0"):
        return None
    return _number(creds, "switch_interval", 0.0, low=0.0001, high=0.1)


def _intent(creds: Mapping[str, Any], key: str, default: Optional[str]) -> Optional[str]:
    """An intent name (a leading ``/`` is dropped); empty or null turns it off."""
    intent = (_text(creds, key) or None) if key in creds else default
    return intent.lstrip("/") or None if intent is not None else None


def _text(creds: Mapping[str, Any], key: str) -> Optional[str]:
    value = creds.get(key)
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise ConfigError(f"{CREDENTIALS_KEY}: '{key}' must be a string")
    value = value.strip()
    return value or None


def _bool(creds: Mapping[str, Any], key: str, default: bool) -> bool:
    value = creds.get(key, default)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "yes", "1", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("false", "no", "0", "off", ""):
        return False
    raise ConfigError(f"{CREDENTIALS_KEY}: '{key}' must be true or false")


def _number(
    creds: Mapping[str, Any],
    key: str,
    default: float,
    *,
    low: Optional[float] = None,
    high: Optional[float] = None,
) -> float:
    value = creds.get(key, default)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{CREDENTIALS_KEY}: '{key}' must be a number, not {value!r}") from None
    if (low is not None and number < low) or (high is not None and number > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ConfigError(f"{CREDENTIALS_KEY}: '{key}' must be {bounds}, not {value!r}")
    return number
