"""The example Django project: one app (``orders``), one voice call per user.

Each browser holds its own WebRTC call (``voice.html``); the server creates it with
its key, instructions and tools and attaches a sideband whose tool reads the ORM.

Run it offline (from ``examples/django_app``)::

    rtclient emulator --port 8765 --no-vad &          # or use the real API instead
    python manage.py migrate
    python manage.py shell -c "from orders.models import Order; Order(customer='Ada').save()"
    OPENAI_BASE_URL=http://127.0.0.1:8765/v1 OPENAI_API_KEY=sk-any \\
        python manage.py runserver --noreload

then open http://127.0.0.1:8000/, press "Start call" and type
``order_status({"order_id": 1})``. With the real API, set only ``OPENAI_API_KEY`` and
speak. Tested by ``tests/test_examples.py``.
"""
