"""Evaluation suites and their runs, gate policies and their checks, blind review votes, model cards.

What an approver decided on never changes afterwards: a suite version, a finished
suite run's results, a gate check and a model card are written once and carry the
SHA-256 of their canonical JSON (``digest``), by which the card cites them.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from controlplane.accounts.models import Project
from controlplane.registry.models import ModelVersion, Promotion
from controlplane.training.models import Job


class Suite(models.Model):
    """One version of a named list of evaluation tasks for a registered model (``model_name``).

    Editing a suite writes its next version; results are cached per (model version, suite
    version), so a result always says exactly which tasks, rows and settings made it.
    ``tasks`` is a list validated by ``controlplane.evidence.suites.SuiteTasks``.
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="suites")
    model_name = models.SlugField(max_length=100)
    name = models.SlugField(max_length=100)
    version = models.PositiveIntegerField()
    tasks = models.JSONField()
    seed = models.PositiveIntegerField(default=1234)
    digest = models.CharField(max_length=64)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["model_name", "name", "-version"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "model_name", "name", "version"], name="suite_version_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"


class SuiteRunStatus(models.TextChoices):
    RUNNING = "running"  # some of its jobs have not ended
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # a job failed or was cancelled; another request runs the suite again

    @property
    def is_finished(self) -> bool:
        return self is not SuiteRunStatus.RUNNING


class SuiteRun(models.Model):
    """One model version's run of one suite version: an evaluate job per task, run in parallel.

    The cache: at most one run per (suite, model version) that has not failed, so a second
    request for the same pair starts no job.
    """

    suite = models.ForeignKey(Suite, on_delete=models.PROTECT, related_name="runs")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="suite_runs")
    # Only controlplane.evidence's suite service writes status, as a conditional update.
    status = models.CharField(max_length=16, choices=SuiteRunStatus.choices, default=SuiteRunStatus.RUNNING)
    # {task name: {metric: value}}, written once when the run succeeds.
    results = models.JSONField(default=dict, blank=True)
    digest = models.CharField(max_length=64, blank=True)
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["suite", "model_version"],
                condition=~models.Q(status="failed"),
                name="one_live_suite_run_per_version",
            )
        ]

    def __str__(self) -> str:
        return f"{self.suite} on {self.model_version} ({self.status})"


class SuiteRunJob(models.Model):
    """The evaluate (or judge) job that ran one task of a suite run."""

    run = models.ForeignKey(SuiteRun, on_delete=models.CASCADE, related_name="task_jobs")
    task = models.CharField(max_length=100)
    job = models.ForeignKey(Job, on_delete=models.PROTECT, related_name="+")

    class Meta:
        ordering = ["run", "task"]
        constraints = [models.UniqueConstraint(fields=["run", "task"], name="one_job_per_suite_task")]

    def __str__(self) -> str:
        return f"{self.run_id}:{self.task} → job {self.job_id}"


class GatePolicy(models.Model):
    """What a version of ``model_name`` must show before it may reach ``target``.

    ``rules`` is a list validated by ``controlplane.evidence.gates.GateRules``: absolute
    thresholds, thresholds relative to the target's champion, and governance (no contamination
    of a suite's rows in the training data; a clean or acknowledged PII scan).
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="gate_policies")
    model_name = models.SlugField(max_length=100)
    target = models.CharField(max_length=32)
    rules = models.JSONField(default=list)
    updated_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["model_name", "target"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "model_name", "target"], name="one_gate_policy_per_target"
            )
        ]

    def __str__(self) -> str:
        return f"gate {self.model_name} → {self.target}"


class GateCheck(models.Model):
    """The gate's verdict on a promotion at the moment it was decided: kept, never recomputed.

    ``results`` lists every rule with its figures and pass / fail / pending.
    """

    promotion = models.OneToOneField(Promotion, on_delete=models.CASCADE, related_name="gate_check")
    passed = models.BooleanField()
    results = models.JSONField()
    digest = models.CharField(max_length=64)
    checked_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"gate check of promotion {self.promotion_id}: {'pass' if self.passed else 'fail'}"


class Vote(models.TextChoices):
    A = "a"
    B = "b"
    TIE = "tie"


class ReviewVote(models.Model):
    """One approver's blind vote on one prompt of a promotion's side-by-side review.

    Which side showed the challenger is fixed per (promotion, task, row) and stored with the vote,
    so the tally is the challenger's wins whatever the voter saw.
    """

    promotion = models.ForeignKey(Promotion, on_delete=models.CASCADE, related_name="review_votes")
    task = models.CharField(max_length=100)
    row = models.PositiveIntegerField()
    voter = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    challenger_side = models.CharField(max_length=1, choices=[("a", "A"), ("b", "B")])
    vote = models.CharField(max_length=3, choices=Vote.choices)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["promotion", "task", "row", "at"]
        constraints = [
            models.UniqueConstraint(fields=["promotion", "task", "row", "voter"], name="one_vote_per_prompt")
        ]

    def __str__(self) -> str:
        return f"{self.voter} on {self.promotion_id}/{self.task}/{self.row}: {self.vote}"


class ModelCard(models.Model):
    """The card written when a promotion is approved: what was deployed and on what evidence.

    ``data`` is the card as JSON; ``markdown`` renders the same content. Both are written once.
    """

    promotion = models.OneToOneField(Promotion, on_delete=models.PROTECT, related_name="card")
    data = models.JSONField()
    markdown = models.TextField()
    digest = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"card of promotion {self.promotion_id}"


# --- gates: policy edits and PII acknowledgements (the gate service writes them) ------------------


class GatePolicyChange(models.Model):
    """Every edit of a gate policy, with who made it and the rules it set: the policy's audit trail."""

    policy = models.ForeignKey(GatePolicy, on_delete=models.CASCADE, related_name="changes")
    rules = models.JSONField()
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["policy", "at", "pk"]

    def __str__(self) -> str:
        return f"{self.policy} set by {self.actor} at {self.at}"


class PiiAcknowledgement(models.Model):
    """An approver's written acceptance of what one PII scan of a dataset version found.

    Tied to the scan: a later scan with its own findings needs its own acknowledgement.
    """

    operation = models.OneToOneField(
        "datasets.DatasetOperation", on_delete=models.CASCADE, related_name="pii_acknowledgement"
    )
    acknowledged_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    reason = models.TextField(max_length=2000)
    at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"PII scan {self.operation_id} acknowledged by {self.acknowledged_by}"
