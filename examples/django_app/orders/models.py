"""The data the assistant's tool looks up."""

from django.db import models


class Order(models.Model):
    customer = models.CharField(max_length=100)
    status = models.CharField(max_length=20, default="processing")

    def __str__(self) -> str:
        return f"order {self.pk} ({self.status})"
