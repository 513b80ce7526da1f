"""The WSGI entry point, for several worker processes::

    cd examples/django_app
    REDIS_URL=redis://127.0.0.1:6379/0 OPENAI_API_KEY=sk-... \\
        gunicorn -w 3 --threads 4 -b 127.0.0.1:8000 shop.wsgi

With ``REDIS_URL`` each worker starts the shared registry of live calls at boot (after
gunicorn's fork: do not ``--preload``), so it takes over the calls of a worker that
died before serving its first request.
"""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")
application = get_wsgi_application()

from orders import realtime  # noqa: E402 - needs the app registry ready

realtime.start_registry()
