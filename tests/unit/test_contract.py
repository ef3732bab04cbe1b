"""The bus contract: producers cannot send what consumers could not read, and consumers refuse
what does not follow it, with the reason."""
import re
import uuid
from pathlib import Path

import pytest

from services.common import contract
from tests.helpers import booking_event

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_build_adds_the_envelope_and_checks_the_payload():
    event = contract.build("fraud_detected", reference="RDV-AAAA-BBBB", rule="name_not_exact",
                           action="cancelled", evidence={"field": "family_name"})
    uuid.UUID(event["event_id"])
    assert event["occurred_at"].endswith("Z")
    with pytest.raises(contract.ContractError) as caught:
        contract.build("fraud_detected", reference="RDV-AAAA-BBBB", rule="x", action="deleted")
    assert "action" in caught.value.fields
    with pytest.raises(contract.ContractError):  # producers may not add fields nobody declared
        contract.build("fraud_detected", reference="R", rule="x", action="review", surprise=1)
    with pytest.raises(contract.ContractError):
        contract.build("booking_exploded", reference="R")


def test_cancel_reasons_are_the_contract_s():
    event = booking_event(name="booking_cancelled", reason="name_mismatch")
    assert event["reason"] == "name_mismatch"
    with pytest.raises(contract.ContractError):
        booking_event(name="booking_cancelled", reason="because")
    assert set(contract.CANCEL_REASONS) == {"applicant", "multiple_bookings_same_email",
                                            "multiple_bookings_same_person",
                                            "name_not_exact", "slot_grabbing", "name_mismatch",
                                            "staff", "not_confirmed", "email_already_used"}


@pytest.mark.parametrize("broken, field", [
    ({"event_id": "not-a-uuid"}, "event_id"),
    ({"occurred_at": "yesterday"}, "occurred_at"),
    ({"procedure": "visa"}, "procedure"),
    ({"identity": {"family_name": "X"}}, "identity"),
    ({"slot_start": None}, "slot_start"),
])
def test_load_refuses_a_malformed_event_and_says_why(broken, field):
    event = dict(booking_event(), **broken)
    with pytest.raises(contract.ContractError) as caught:
        contract.load("booking_created", event)
    assert field in caught.value.fields and field in str(caught.value)


def test_load_lets_fields_added_later_through():
    event = dict(booking_event(), added_by_a_newer_producer=True)
    assert contract.load("booking_created", event) is event
    with pytest.raises(contract.ContractError):
        contract.load("booking_created", ["not", "an", "object"])
    with pytest.raises(contract.ContractError):
        contract.load("no_such_event", {})


def test_the_readme_events_table_names_every_event_and_its_fields():
    table = README[README.index("## Events"):]
    table = table[:table.index("\n## ", 1)]
    for name, event in contract.EVENTS.items():
        row = next((line for line in table.splitlines() if f"`{name}`" in line), None)
        assert row, f"{name} missing from the README's events table"
        assert event.producer in row
        for field, _, _ in contract.fields_table(name):
            if field not in ("event_id", "occurred_at"):
                assert re.search(rf"`{field}`", row), f"{name}: field {field} not in the README"
