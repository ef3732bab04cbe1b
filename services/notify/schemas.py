"""Validation of what staff send to notify's RPCs."""
from marshmallow import Schema, validate

from services.common.schemas import SafeString


class MessageKey(Schema):
    key = SafeString(required=True, validate=validate.Length(min=1, max=200))
