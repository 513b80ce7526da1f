"""Which worker served a response (``X-Served-By``), when the calls live in a shared
registry (``REDIS_URL``): for operators following a call across gunicorn workers."""

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from . import realtime


def served_by(get_response: Callable[[HttpRequest], HttpResponse]) -> Callable[..., HttpResponse]:
    def middleware(request: HttpRequest) -> HttpResponse:
        response = get_response(request)
        registry = realtime.start_registry()
        if registry is not None:
            response["X-Served-By"] = registry.worker
        return response

    return middleware
