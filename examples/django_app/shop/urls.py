"""The voice page, its two endpoints and the phone calls' webhook (``orders/views.py``)."""

from django.urls import path
from orders import views

urlpatterns = [
    path("", views.page),
    path("call_page.js", views.page_script),
    path("calls", views.start_call),
    path("calls/<str:call_id>/hangup", views.hangup),
    path("webhooks/openai", views.openai_webhook),
]
