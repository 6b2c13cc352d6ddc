"""Evaluation of a causal language model: the metrics, each as its reference implementation computes it.

* ``text``: BLEU (sacrebleu), ROUGE-1/2/L (rouge-score) and exact match of
  predictions against references. No torch: predictions made anywhere can be scored.
* ``generation``: greedy generation, the predictions those metrics score.
* ``likelihood``: log-probabilities of token sequences, and perplexity on validation texts.
* ``multiple_choice``: accuracy by log-likelihood, zero- and k-shot, as
  lm-evaluation-harness computes ``acc`` and ``acc_norm``.
* ``suite``: the metrics an ``EvaluationConfig`` asks for, in one call.

Every metric comes back as a flat ``{name: float}`` that MLflow's
``log_metrics`` and ``JobResult.metrics`` take as they are. Scales are the
reference libraries' own, so numbers compare with published ones: BLEU is
0-100, ROUGE, exact match and accuracies are 0-1.

The modules that run the model import torch; this package's ``__init__`` and
``text`` do not, so importing them keeps a process torch-free.
"""

from __future__ import annotations

from workers.engine import JobInputError


class EvaluationDataError(JobInputError):
    """An evaluation set the engine cannot score: empty, mismatched, or an answer that is not a choice."""
