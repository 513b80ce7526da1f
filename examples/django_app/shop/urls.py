"""One route: ``POST /ask``."""

from django.urls import path
from orders import views

urlpatterns = [path("ask", views.ask)]
