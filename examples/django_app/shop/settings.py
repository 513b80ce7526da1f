"""Settings for the example shop: as few as Django needs, plus ``RTCLIENT``.

The SQLite file lives in the temp directory unless ``RTSHOP_DB`` names one (the tests
point it at their own temp path). No sessions, auth or CSRF middleware: ``POST /calls``
takes only ``application/sdp``, a content type another site's form cannot send (and its
script may not without a CORS preflight this app never grants).
"""

import os
import tempfile
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = ["orders"]
MIDDLEWARE = ["django.middleware.common.CommonMiddleware", "orders.middleware.served_by"]
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
    "max_workers": 8,  # the tool pool every call shares
    # Several workers (gunicorn shop.wsgi): the registry of live calls they all share.
    "redis_url": os.environ.get("REDIS_URL"),
    "lease_ttl": float(os.environ.get("RT_LEASE_TTL", "5")),  # failover ~ this, in seconds
}

# The browser's page, shared with the Flask example.
VOICE_PAGE = BASE_DIR.parent / "voice.html"

# rtclient's records arrive here through rtclient.logs.to_logging() (orders/apps.py), so
# they are configured like any other library's. Existing loggers are left alone.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "rtclient": {
            "handlers": ["console"],
            "level": os.environ.get("RTCLIENT_LOG_LEVEL", "INFO"),
            "propagate": False,
        }
    },
}
