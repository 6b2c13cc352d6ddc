"""The MLflow gate: every MLflow call from outside the control plane passes Tuneyard's permissions here."""
