"""The voice page and its two endpoints (see ``orders/views.py``)."""

from django.urls import path
from orders import views

urlpatterns = [
    path("", views.page),
    path("calls", views.start_call),
    path("calls/<str:call_id>/hangup", views.hangup),
]
