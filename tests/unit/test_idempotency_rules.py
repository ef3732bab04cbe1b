"""The reference a booking request with an idempotency key books under (issue 25)."""
import re

import pytest

from services.booking import references
from services.common import idempotency
from services.common.errors import InvalidRequest
from services.common.schemas import idempotency_key
from services.common.tokens import TokenSigner

SIGNER = TokenSigner("unit-test-secret-0123456789")
REQUEST = {"procedure": "renewal", "slot_id": "s1", "family_name": "Benali",
           "given_names": "Yasmine", "email": "y@example.org"}
KEY = "0123456789abcdef0123"


def test_the_same_key_and_request_give_the_same_reference_at_each_try():
    fingerprint = idempotency.request_fingerprint(KEY, REQUEST)
    assert fingerprint == idempotency.request_fingerprint(KEY, dict(reversed(list(REQUEST.items()))))
    first = references.derived_reference(SIGNER, fingerprint)
    assert first == references.derived_reference(SIGNER, fingerprint, 0)
    assert re.fullmatch(r"RDV-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}", first)
    # the next try, after a reference was given up, is another reference
    tries = {references.derived_reference(SIGNER, fingerprint, n) for n in range(idempotency.REFERENCE_TRIES)}
    assert len(tries) == idempotency.REFERENCE_TRIES


def test_another_key_other_data_or_another_secret_give_another_reference():
    reference = references.derived_reference(SIGNER, idempotency.request_fingerprint(KEY, REQUEST))
    assert reference != references.derived_reference(
        SIGNER, idempotency.request_fingerprint(KEY[::-1], REQUEST))
    assert reference != references.derived_reference(
        SIGNER, idempotency.request_fingerprint(KEY, dict(REQUEST, email="other@example.org")))
    # without the secret, knowing the key does not tell the reference
    assert reference != references.derived_reference(
        TokenSigner("another-secret-0123456789"), idempotency.request_fingerprint(KEY, REQUEST))


@pytest.mark.parametrize("bad", ["short", "x" * 129, "has space in it 0123", "é" * 20, 12345678901234567,
                                 {"$gt": ""}])
def test_a_malformed_key_is_refused_naming_its_field(bad):
    with pytest.raises(InvalidRequest) as caught:
        idempotency_key(bad, InvalidRequest, "Idempotency-Key")
    assert list(caught.value.fields) == ["Idempotency-Key"]


def test_no_key_is_none_and_a_good_one_is_kept():
    assert idempotency_key(None, InvalidRequest) is None
    assert idempotency_key(KEY, InvalidRequest) == KEY
