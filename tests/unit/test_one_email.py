"""M3 one e-mail: booking, fraud, requests and notify key a mailbox alike, whatever the one
setting (EMAIL_PROVIDER_RULES, services/common/one_email.py) says."""
from types import SimpleNamespace

import pytest

from services.booking import evidence
from services.common import one_email
from services.fraud import screening
from services.fraud.service import Settings as FraudSettings
from services.notify.service import Settings as NotifySettings

SPELLINGS = ("Awa.Diallo+rdv@gmail.com", " awadiallo@googlemail.com ", "AWA.DIALLO@gmail.com")


def settings_of(provider, config):
    """What a service's settings provider reads from this configuration."""
    provider = provider()
    provider.container = SimpleNamespace(config=config)
    provider.setup()
    return provider.settings


def fraud_key(email, config):
    event = {"reference": "RDV-AAAA-BBBB", "email": email, "occurred_at": "2027-03-01T09:00:00Z",
             "identity": {"family_name": "Diallo", "given_names": "Awa",
                          "birth_date": "1990-01-01"}}
    return screening.index_entry(event, settings_of(FraudSettings, config))["email_key"]


@pytest.mark.parametrize("value, one_mailbox", [(True, True), ("true", True), (False, False),
                                                ("false", False)])
def test_booking_and_fraud_key_a_mailbox_alike_under_either_value(value, one_mailbox):
    config = {"EMAIL_PROVIDER_RULES": value}
    for email in SPELLINGS:
        # booking stores one_email.mailbox_key as the booking's email_key (and requests as the
        # request's); fraud's M3 screening groups by its index entry's
        assert fraud_key(email, config) == one_email.mailbox_key(email, config)
        assert settings_of(NotifySettings, config)["provider_rules"] == one_email.provider_rules(config)
        assert evidence.applicant_key(None, email, one_email.provider_rules(config)) == \
            "email:" + one_email.mailbox_key(email, config)
    keys = {one_email.mailbox_key(email, config) for email in SPELLINGS}
    assert (len(keys) == 1) is one_mailbox


def test_the_setting_defaults_to_one_mailbox_for_the_providers_that_ignore_tags():
    assert one_email.mailbox_key("Awa.Diallo+rdv@gmail.com", {}) == "awadiallo@gmail.com"
    assert one_email.mailbox_key("Awa.Diallo+rdv@gmail.com", {"EMAIL_PROVIDER_RULES": False}) \
        == "awa.diallo+rdv@gmail.com"
