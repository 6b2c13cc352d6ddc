"""The training app's configuration; it fills the datasets' tokenizer seam when ready."""

from __future__ import annotations

from django.apps import AppConfig


class TrainingConfig(AppConfig):
    name = "controlplane.training"
    label = "training"

    def ready(self) -> None:
        # Uploads measure rows with a base model's tokenizer; datasets, below us, ask through this seam.
        from controlplane.datasets.tokenizers import resolver_register
        from controlplane.training.selectors import base_model_tokenizer_ref

        resolver_register(base_model_tokenizer_ref)
