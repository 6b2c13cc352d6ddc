"""The training subprocess: ``python -m workers.engine SPEC_JSON_PATH WORKDIR``.

It reads a JobSpec, trains, records the attempt as one MLflow run and reports
to its parent over stdout (see ``protocol``). Torch is imported only inside
this process, never by the package itself: the runner imports
``workers.engine.protocol`` in the Celery worker's parent, which must stay
torch-free.
"""

from __future__ import annotations


class JobInputError(Exception):
    """The job itself is wrong (its data, its base model, its spec): retrying cannot help.

    ``str(exc)`` is the sentence shown to the person who launched the job.
    """
