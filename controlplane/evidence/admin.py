"""The evidence app in Django's admin: read-mostly, for the rare repair."""

from __future__ import annotations

from django.contrib import admin

from controlplane.evidence.models import GateCheck, GatePolicy, ModelCard, ReviewVote, Suite, SuiteRun

admin.site.register([Suite, SuiteRun, GatePolicy, GateCheck, ReviewVote, ModelCard])
