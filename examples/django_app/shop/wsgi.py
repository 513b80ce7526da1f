"""The WSGI entry point, for several worker processes::

    cd examples/django_app
    REDIS_URL=redis://127.0.0.1:6379/0 OPENAI_API_KEY=sk-... \\
        gunicorn -w 3 --threads 4 -b 127.0.0.1:8000 shop.wsgi

With ``REDIS_URL`` each worker starts the shared registry of live calls at boot (after
gunicorn's fork: do not ``--preload``), so it takes over the calls of a worker that
died before serving its first request - a phone call's too, keypad included.
"""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")
application = get_wsgi_application()

from orders import realtime  # noqa: E402 - needs the app registry ready

if realtime.start_registry() is not None:
    realtime.phone_line()  # the keypad of a phone call this worker takes over
