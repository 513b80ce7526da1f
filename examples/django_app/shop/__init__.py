"""The example Django project: one app (``orders``) answering questions with rtclient.

Run it offline (from ``examples/django_app``)::

    rtclient emulator --port 8765 --no-vad &          # or use the real API instead
    python manage.py migrate
    python manage.py shell -c "from orders.models import Order; Order(customer='Ada').save()"
    OPENAI_BASE_URL=http://127.0.0.1:8765/v1 OPENAI_API_KEY=sk-any RTCLIENT_LOOPBACK=1 \\
        python manage.py runserver --noreload
    curl -s localhost:8000/ask -H 'content-type: application/json' \\
         -d '{"question": "Where is it? order_status({\\"order_id\\": 1})"}'

With the real API, set only ``OPENAI_API_KEY``. Tested by ``tests/test_examples.py``.
"""
