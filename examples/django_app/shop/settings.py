"""Settings for the example shop: as few as Django needs, plus ``RTCLIENT``.

The SQLite file lives in the temp directory unless ``RTSHOP_DB`` names one (the tests
point it at their own temp path). Sessions (in the database: the cookie holds only a
random key, so every worker reads them) say which calls are a browser's; CSRF
protection is on (the page sends the ``csrftoken`` cookie back as ``X-CSRFToken``).
Several workers need one ``DJANGO_SECRET_KEY``: it signs what the sessions store.
"""

import os
import tempfile
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = ["django.contrib.sessions", "orders"]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "orders.middleware.served_by",
]
CSRF_FAILURE_VIEW = "orders.views.csrf_failure"  # a JSON 403, like the app's other errors
SESSION_COOKIE_SAMESITE = CSRF_COOKIE_SAMESITE = "Lax"  # Django's default, said aloud
ROOT_URLCONF = "shop.urls"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("RTSHOP_DB") or Path(tempfile.gettempdir()) / "rtshop.sqlite3",
        "OPTIONS": {"timeout": 20},
    }
}

# The calls' sidebands (orders/realtime.py). Offline: run `rtclient emulator --no-vad`
# and set OPENAI_BASE_URL=http://127.0.0.1:8765/v1 OPENAI_API_KEY=sk-any.
RTCLIENT = {
    "api_key": os.environ.get("OPENAI_API_KEY"),
    "base_url": os.environ.get("OPENAI_BASE_URL"),
    # signs the phone calls' webhooks (POST /webhooks/openai): the project's whsec_...
    "webhook_secret": os.environ.get("OPENAI_WEBHOOK_SECRET"),
    "max_workers": 8,  # the tool pool every call shares
    # live calls one browser session may hold; POST /calls beyond that is 429
    "max_calls_per_session": int(os.environ.get("RT_MAX_CALLS_PER_SESSION") or 2),
    # Several workers (gunicorn shop.wsgi): the registry of live calls they all share.
    "redis_url": os.environ.get("REDIS_URL"),
    "lease_ttl": float(os.environ.get("RT_LEASE_TTL", "5")),  # failover ~ this, in seconds
}

# The browser's page, shared with the Flask example.
VOICE_PAGE = BASE_DIR.parent / "voice.html"

# rtclient's records arrive here through rtclient.logs.to_logging() (orders/apps.py), so
# they are configured like any other library's. Existing loggers are left alone.
# django.request's warnings for 4xx answers name the path, call id included: shortened.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"short_call_ids": {"()": "orders.logfilters.ShortCallIds"}},
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "django.request": {"filters": ["short_call_ids"]},
        "rtclient": {
            "handlers": ["console"],
            "level": os.environ.get("RTCLIENT_LOG_LEVEL", "INFO"),
            "propagate": False,
        },
    },
}
