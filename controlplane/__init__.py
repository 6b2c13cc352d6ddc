"""Tuneyard's control plane: a Django project, one app per domain, layered (see DESIGN.md and make lint)."""
