"""Validation of what staff send to notify's RPCs."""
from marshmallow import Schema, fields, validate

from services.common.schemas import IDEMPOTENCY_KEY, IDEMPOTENCY_REASON, SafeString


class MessageKey(Schema):
    key = SafeString(required=True, validate=validate.Length(min=1, max=200))


class Resend(MessageKey):
    # one per staff request: a second delivery of the same call puts nothing back in the queue
    idempotency_key = fields.String(load_default=None, allow_none=True,
                                    validate=validate.Regexp(IDEMPOTENCY_KEY, error=IDEMPOTENCY_REASON))
