"""Webhooks in Django's admin: for looking into deliveries; subscriptions are made on the project page."""

from __future__ import annotations

from django.contrib import admin

from controlplane.webhooks.models import Delivery, Endpoint, Event


@admin.register(Endpoint)
class EndpointAdmin(admin.ModelAdmin):
    list_display = ["pk", "project", "url", "enabled", "created_by", "created_at"]
    list_filter = ["enabled", "project"]
    exclude = ["secret", "previous_secret"]


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    list_display = ["pk", "project", "type", "key", "created_at"]
    list_filter = ["type"]


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    list_display = [
        "pk",
        "message_id",
        "endpoint",
        "status",
        "attempts",
        "response_status",
        "next_attempt_at",
    ]
    list_filter = ["status"]
