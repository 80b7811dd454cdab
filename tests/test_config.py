import pytest

from rasa_sparkcentral.config import REGION_BASE_URLS, ConfigError, Settings

SECRET = "00112233445566778899aabbccddeeff"
GOOD = {"client_id": "id", "client_secret": "s3cr3t-value", "shared_secret": SECRET}


def test_defaults_and_regions() -> None:
    settings = Settings.from_credentials(GOOD)
    assert settings.base_url == REGION_BASE_URLS["us"] == "https://public-api.sparkcentral.com"
    assert settings.shared_secret == bytes.fromhex(SECRET)
    assert settings.reply_mode == "rest" and settings.conversation_started_intent == "greet"
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
