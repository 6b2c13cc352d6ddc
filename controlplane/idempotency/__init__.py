"""Idempotency-Key on the REST API's state-changing requests: a retried request gets the first answer."""
