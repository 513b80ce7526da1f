"""Call ids in Django's own log lines, shortened.

``django.request`` logs every 4xx answer at WARNING with its path - ``Forbidden:
/calls/rtc_.../hangup`` - and a full call id is for its browser only (with it and the
key, the call can be attached to or ended). This filter shows such ids as the app's own
lines do, ``rtc_1a2b3c4d…`` (``rtclient.logs.short_id``); ``settings.LOGGING`` puts it
on ``django.request``.
"""

from __future__ import annotations

import logging
import re

from rtclient.logs import short_id

CALL_ID = re.compile(r"\brtc_[0-9A-Za-z]+")


def shorten(text: str) -> str:
    return CALL_ID.sub(lambda found: short_id(found[0]), text)


class ShortCallIds(logging.Filter):
    """Shortens every call id in a record's message and string arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = shorten(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(shorten(a) if isinstance(a, str) else a for a in record.args)
        return True
