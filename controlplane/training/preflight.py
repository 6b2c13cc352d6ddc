"""Checks made before a fine-tune is queued, so a job that cannot run is refused at once, and
one that may wait or lose rows says so, instead of failing on a worker an hour later.

The launch (API and page) and the estimate ask the same questions here:

- its rows against ``max_seq_length``, counted with the base model's own tokenizer where the
  dataset version's token statistics were made with it (an upload's "count tokens with"): a job
  whose every row is longer cannot learn anything and is refused; one that cuts some rows is told;
- its queue against the workers that have ever read it: none ever did (the job would wait for
  a worker no one may ever start), or none of them has the GPUs the job asks for.
"""

from __future__ import annotations

from controlplane.datasets.models import DatasetOperation, DatasetVersion
from controlplane.errors import ValidationFailed
from controlplane.training.models import BaseModel, Worker
from workers.spec import TrainingConfig


def _token_lengths(*, dataset_version: DatasetVersion, base_model: BaseModel) -> dict | None:
    """The version's token-length summary if it was counted with ``base_model``'s tokenizer."""
    tokens = dataset_version.stats.get("tokens")
    if not isinstance(tokens, dict) or not tokens.get("count"):
        return None
    counted_with = (
        DatasetOperation.objects.filter(version=dataset_version).values_list("options", flat=True).first()
    )
    if not isinstance(counted_with, dict) or counted_with.get("tokenizer") != base_model.pk:
        return None
    return tokens


def _share_longer(tokens: dict, limit: int) -> float:
    """The share of the sampled rows longer than ``limit`` tokens, read from the histogram."""
    histogram = tokens.get("histogram") or {}
    edges, counts = histogram.get("edges") or [], histogram.get("counts") or []
    total = sum(counts)
    if not total:
        return 0.0
    # A bin [lo, hi) counts as longer when its low edge is past the limit: a lower bound.
    longer = sum(count for lo, count in zip(edges[:-1], counts, strict=False) if lo > limit)
    return longer / total


def job_preflight(
    *, base_model: BaseModel, dataset_version: DatasetVersion, config: TrainingConfig
) -> list[str]:
    """What a person should know before this job is queued; ValidationFailed if it cannot train."""
    warnings: list[str] = []
    limit = config.hyperparameters.max_seq_length
    tokens = _token_lengths(dataset_version=dataset_version, base_model=base_model)
    if tokens is not None:
        name = f"{dataset_version.dataset.name} v{dataset_version.version}"
        if tokens["min"] > limit and not config.objective.preference_data:
            raise ValidationFailed(
                f"config.hyperparameters.max_seq_length: every row of {name} is longer than "
                f"{limit} tokens (the shortest has {tokens['min']} by {base_model.name}'s tokenizer), "
                "so nothing would be learned: raise max_seq_length or shorten the rows."
            )
        if tokens["max"] > limit:
            share = _share_longer(tokens, limit)
            amount = f"at least {share:.0%} of" if share else "some of"
            warnings.append(
                f"{amount} the rows of {name} are longer than max_seq_length ({limit} tokens; the "
                f"longest has {tokens['max']}): they are cut to fit."
            )
    queue, gpus = config.resources.queue_name, config.resources.gpus
    readers = [w for w in Worker.objects.only("queues", "gpus") if queue in (w.queues or [])]
    if not readers:
        warnings.append(
            f"no worker has ever read queue {queue}: the job waits until one does "
            "(start a worker with that queue, or choose another)."
        )
    elif gpus and not any(len(w.gpus or []) >= gpus for w in readers):
        most = max(len(w.gpus or []) for w in readers)
        warnings.append(
            f"no worker that reads queue {queue} has {gpus} GPU(s) (the most is {most}): "
            "the job waits until one does."
        )
    return warnings
