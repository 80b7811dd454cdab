"""The intent → topic setting, on the channel object itself (no server needed)."""

from rasa_sparkcentral.channel import SparkcentralInput

SECRET = "00112233445566778899aabbccddeeff"


def channel(intent_topics: object) -> SparkcentralInput:
    return SparkcentralInput.from_credentials(
        {"shared_secret": SECRET, "reply_mode": "webhook", "intent_topics": intent_topics}
    )


def test_every_intent_is_a_topic_when_true() -> None:
    assert channel(True).inbound.topic_for({"intent": {"name": "ask_shipping"}}) == "ask_shipping"
    assert channel(True).inbound.topic_for({"intent": {"name": None}}) is None


def test_mapping_renames_and_filters() -> None:
    mapped = channel({"ask_shipping": "Shipping", "greet": ""})
    assert mapped.inbound.topic_for({"intent": {"name": "ask_shipping"}}) == "Shipping"
    assert mapped.inbound.topic_for({"intent": {"name": "ask_opening_hours"}}) is None
    assert mapped.inbound.topic_for({"intent": {"name": "greet"}}) is None
