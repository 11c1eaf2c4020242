"""Fields the response schemas share."""

from typing import Any

from marshmallow import fields


class IsoDate(fields.Date):
    """A calendar date. Sealed fields open as the ISO text they were stored as (a date of birth, an
    incident's date): that text is the answer as it is; a `date` is written the same way."""

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> Any:
        if isinstance(value, str):
            return value
        return super()._serialize(value, attr, obj, **kwargs)
