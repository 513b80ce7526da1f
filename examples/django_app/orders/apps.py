"""App config: where rtclient's logging is plugged into Django's."""

from typing import Any

from django.apps import AppConfig


class OrdersConfig(AppConfig):
    name = "orders"
    log_handler: Any = None

    def ready(self) -> None:
        """rtclient is silent by default (a library adds no handler). Route its records
        into the standard ``logging`` module, so settings.LOGGING decides what is shown
        - the gate's ``[RESPONSE_CREATE]``/``[RESPONSE_QUEUED]`` diagnostics included."""
        from rtclient.logs import to_logging

        self.log_handler = to_logging()  # loguru handler id: logger.remove() undoes it
