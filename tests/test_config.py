import pytest

from rasa_sparkcentral.config import REGION_BASE_URLS, ConfigError, Settings

SECRET = "00112233445566778899aabbccddeeff"
GOOD = {"client_id": "id", "client_secret": "s3cr3t-value", "shared_secret": SECRET}


def test_defaults_and_regions() -> None:
    settings = Settings.from_credentials(GOOD)
    assert settings.base_url == REGION_BASE_URLS["us"] == "https://public-api.sparkcentral.com"
    assert settings.shared_secret == bytes.fromhex(SECRET)
    assert settings.reply_mode == "rest" and settings.platform == "sparkcentral"
    # as published: after CONVERSATION_STARTED the contact's messages follow, after
    # CONVERSATION_DELEGATED the bot asks the first question
    assert settings.conversation_started_intent is None
    assert settings.conversation_delegated_intent == "greet"
    assert settings.max_event_age == 300.0
    assert settings.allow_successor_fields is False
    assert settings.image_max_bytes == 9_999_999  # "fewer than 10 megabytes"
    eu = Settings.from_credentials({**GOOD, "region": "EU"})
    assert eu.base_url == "https://public-api-eu.sparkcentral.com"
    local = Settings.from_credentials({**GOOD, "base_url": "http://127.0.0.1:8900/"})
    assert local.base_url == "http://127.0.0.1:8900"


def test_secrets_stay_out_of_repr() -> None:
    text = repr(Settings.from_credentials(GOOD))
    assert "s3cr3t-value" not in text and SECRET not in text and "shared_secret" not in text


@pytest.mark.parametrize(
    ("credentials", "key"),
    [
        ({"client_id": "id", "client_secret": "s"}, "shared_secret"),
        ({**GOOD, "shared_secret": "not-hex"}, "shared_secret"),
        ({**GOOD, "shared_secret": "abc"}, "shared_secret"),
        ({**GOOD, "region": "asia"}, "region"),
        ({**GOOD, "base_url": "ftp://x"}, "base_url"),
        ({"client_id": "id", "shared_secret": SECRET}, "client_secret"),
        ({"client_secret": "s", "shared_secret": SECRET}, "client_id"),
        ({"shared_secret": SECRET}, "client_id"),
        ({**GOOD, "reply_mode": "carrier-pigeon"}, "reply_mode"),
        ({**GOOD, "webhook_timeout": 30}, "webhook_timeout"),
        ({**GOOD, "max_attempts": "many"}, "max_attempts"),
        ({**GOOD, "intent_topics": "yes please"}, "intent_topics"),
        ({**GOOD, "client_id": ["a"]}, "client_id"),
        ({**GOOD, "platform": "myspace"}, "platform"),
        ({**GOOD, "platform": "hootsuite"}, "organization_id"),
        ({**GOOD, "platform": "hootsuite", "organization_id": "1", "region": "eu"}, "region"),
        ({**GOOD, "max_event_age": -1}, "max_event_age"),
        ({**GOOD, "image_max_bytes": 10_000_000}, "image_max_bytes"),
        ({**GOOD, "switch_interval": 0.5}, "switch_interval"),
    ],
)
def test_bad_settings_name_the_key(credentials: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_credentials(credentials)
    message = str(info.value)
    assert f"'{key}'" in message
    assert "\n" not in message
    assert "s3cr3t-value" not in message and SECRET not in message


def test_webhook_mode_without_api_keys() -> None:
    settings = Settings.from_credentials({"shared_secret": SECRET, "reply_mode": "webhook"})
    assert not settings.has_api_keys


def test_start_intent_can_be_disabled() -> None:
    assert (
        Settings.from_credentials(
            {**GOOD, "conversation_started_intent": ""}
        ).conversation_started_intent
        is None
    )
    assert (
        Settings.from_credentials(
            {**GOOD, "conversation_started_intent": "/hello"}
        ).conversation_started_intent
        == "hello"
    )


def test_webhook_port() -> None:
    settings = Settings.from_credentials({**GOOD, "webhook_port": "5006"})
    assert settings.webhook_port == 5006 and settings.webhook_host == "0.0.0.0"
    assert Settings.from_credentials(GOOD).webhook_port is None
    with pytest.raises(ConfigError, match="'webhook_port'"):
        Settings.from_credentials({**GOOD, "webhook_port": 5006, "reply_mode": "webhook"})
    with pytest.raises(ConfigError, match="'webhook_port'"):
        Settings.from_credentials({**GOOD, "webhook_port": 70000})


def test_hootsuite_platform() -> None:
    settings = Settings.from_credentials({**GOOD, "platform": "Hootsuite", "organization_id": 815})
    assert settings.platform == "hootsuite" and settings.organization_id == "815"
    assert settings.base_url == "https://platform.hootsuite.com"
    assert settings.api.token_path == "/oauth2/token"
    assert settings.api.conversation_path("c1") == "/inbox/v1/virtual-agent/conversations/c1"
    assert settings.api.attachment_path("c1", "a.png") == (
        "/inbox/v1/virtual-agent/conversations/c1/attachments/a.png"
    )
    # the successor's fields are the platform's own: on by default there, and can be off
    assert settings.allow_successor_fields is True
    off = Settings.from_credentials(
        {**GOOD, "platform": "hootsuite", "organization_id": "1", "allow_successor_fields": False}
    )
    assert off.allow_successor_fields is False
    local = Settings.from_credentials(
        {**GOOD, "platform": "hootsuite", "organization_id": "1", "base_url": "http://x:1/"}
    )
    assert local.base_url == "http://x:1"
    classic = Settings.from_credentials(GOOD)
    assert classic.api.token_path == "/virtual-agent/oauth2/token"
    assert classic.api.conversation_path("c1") == "/virtual-agent/conversations/c1"
    # webhook-only on Inbox 2.0 needs no organization (no token is ever requested)
    webhook_only = Settings.from_credentials(
        {"shared_secret": SECRET, "platform": "hootsuite", "reply_mode": "webhook"}
    )
    assert webhook_only.organization_id is None


def test_assignment_intents_and_event_age() -> None:
    settings = Settings.from_credentials(
        {
            **GOOD,
            "conversation_started_intent": "/hello",
            "conversation_delegated_intent": "",
            "max_event_age": 0,
        }
    )
    assert settings.conversation_started_intent == "hello"
    assert settings.conversation_delegated_intent is None
    assert settings.max_event_age == 0


def test_switch_interval_only_when_set() -> None:
    """The webhook_port listener is a process of its own: no thread of Rasa's process
    waits for the GIL, so webhook_port leaves Python's switch interval alone."""
    assert Settings.from_credentials(GOOD).switch_interval is None
    port = {**GOOD, "webhook_port": 5056}
    assert Settings.from_credentials(port).switch_interval is None
    assert Settings.from_credentials({**port, "switch_interval": 0}).switch_interval is None
    assert Settings.from_credentials({**GOOD, "switch_interval": 0.002}).switch_interval == 0.002
