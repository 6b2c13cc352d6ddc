"""How the evidence app hears of the apps below it (their seams), registered once from ``ready()``."""

from __future__ import annotations


def register() -> None:
    """Connect this app's listeners to the training and registry seams.

    Order matters for the promotion listeners: the gate's verdict is kept first,
    so the model card written after it can cite it.
    """
    from controlplane.evidence import cards, gates, suites
    from controlplane.registry import hooks as registry_hooks
    from controlplane.training import hooks as training_hooks

    training_hooks.on_job_finished(suites.job_finished)
    registry_hooks.on_approval_check(gates.approval_blockers)
    registry_hooks.on_promotion_changed(gates.promotion_changed)
    registry_hooks.on_promotion_changed(cards.promotion_changed)
    # A request starts the model's suites on the challenger and the champion, on commit.
    registry_hooks.on_promotion_changed(suites.promotion_changed)
