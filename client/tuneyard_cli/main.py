"""tuneyard: drive Tuneyard from a shell or a CI pipeline, over the REST API (a thin layer on the
``tuneyard`` Python client).

The server and credentials come from ``--url`` / ``TUNEYARD_URL`` and
``--token`` / ``TUNEYARD_TOKEN`` (``tuneyard token`` prints one). Exit codes:
0 done, 1 the job ended other than succeeded, 2 refused (a sentence says why),
3 the server could not be reached.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import shlex
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

from tuneyard import Client, JobFailed, TuneyardError, Unreachable
from tuneyard.models import Model
from tuneyard_cli.config_file import config_file_read

EXIT_JOB_FAILED, EXIT_REFUSED, EXIT_UNREACHABLE = 1, 2, 3

# The columns `--output table` shows for each kind of row (JSON shows everything).
COLUMNS = {
    "projects": ["slug", "name", "role"],
    "base-models": ["id", "name", "uri"],
    "datasets": ["id", "name", "version", "format", "row_count", "size_bytes", "created_by"],
    "jobs": ["id", "name", "kind", "status", "progress", "created_by", "created_at"],
    "model-versions": ["id", "name", "mlflow_version", "job", "mlflow_uri"],
    "promotions": ["id", "model_name", "mlflow_version", "target", "status", "requested_by", "decided_by"],
    "deployments": [
        "project",
        "target",
        "model_name",
        "mlflow_version",
        "model_version",
        "approved_by",
        "approved_at",
    ],
    "sweeps": ["id", "name", "status", "trials_launched", "n_trials", "objective_metric"],
    "webhooks": ["id", "url", "event_types", "enabled"],
    "suites": ["id", "model_name", "name", "version", "digest"],
    "deliveries": ["id", "event_type", "status", "attempts", "response_status", "last_error"],
}


class Output:
    def __init__(self, kind: str) -> None:
        self.kind = kind

    def one(self, data: Any) -> None:
        data = data.raw if isinstance(data, Model) else data
        if self.kind == "table" and isinstance(data, dict):
            width = max((len(k) for k in data), default=0)
            for key, value in data.items():
                text = value if isinstance(value, str) else json.dumps(value)
                print(f"{key:<{width}}  {text}")
        else:
            print(json.dumps(data, indent=2, sort_keys=True))

    def rows(self, rows: Iterable[Any], columns: list[str]) -> None:
        raws = [row.raw if isinstance(row, Model) else row for row in rows]
        if self.kind == "json":
            print(json.dumps(raws, indent=2, sort_keys=True))
            return
        cells = [[_cell(row.get(c)) for c in columns] for row in raws]
        widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
        print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
        for row in cells:
            print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
        if not cells:
            print("(none)", file=sys.stderr)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, list | dict):
        return ",".join(map(str, value)) if isinstance(value, list) else json.dumps(value)
    return str(value)


def _config(path: str | None) -> Any:
    """A config file's data (YAML or JSON, plain data only); a bad file is a one-sentence ValueError."""
    return {} if path is None else config_file_read(path)


def _mapping(text: str | None) -> dict[str, str] | None:
    if not text:
        return None
    try:
        mapping = json.loads(text)
    except ValueError:
        # name=column pairs, as a shell makes them easy: "output=answer,input=question"
        pairs = [part.split("=", 1) for part in text.split(",") if part.strip()]
        if not all(len(pair) == 2 for pair in pairs):
            raise ValueError(f"--mapping {text!r}: give JSON or name=column pairs") from None
        mapping = {k.strip(): v.strip() for k, v in pairs}
    if not isinstance(mapping, dict):
        raise ValueError("--mapping must map the schema's field names to your file's column names")
    return mapping


def _bar(job: dict[str, Any], started: float) -> None:
    done = int(job["progress"] * 30)
    eta = ""
    if 0 < job["progress"] < 1:
        left = (time.monotonic() - started) * (1 - job["progress"]) / job["progress"]
        eta = f"  ETA {int(left) // 60}m{int(left) % 60:02d}s"
    bar = f"[{'#' * done}{'.' * (30 - done)}] {job['progress']:6.1%}"
    print(f"\rjob {job['id']} {job['status']:<10} {bar}{eta}", end="", file=sys.stderr, flush=True)


def _job_wait(client: Client, job_id: int, out: Output) -> int:
    started = time.monotonic()
    try:
        job = client.jobs.wait(job_id, progress=lambda j: _bar(j, started))
    except JobFailed as exc:
        print(file=sys.stderr)
        out.one(exc.result)
        return EXIT_JOB_FAILED
    print(file=sys.stderr)
    out.one(job)
    return 0


def _upload_progress(step: dict[str, Any]) -> None:
    if step["stage"] == "upload":
        percent = step["done"] / step["total"] * 100
        note = f"(upload {step['upload']}: --resume {step['upload']} continues it)"
        print(f"\rupload {percent:5.1f}%  {note}", end="", file=sys.stderr, flush=True)
    else:
        print(f"\ringest {step['done'] * 100:5.1f}%", end="", file=sys.stderr, flush=True)


def run(args: argparse.Namespace, client: Client) -> int:  # noqa: C901 - one branch per command
    command, out = args.command, Output(args.output)
    if command == "token":
        password = os.environ.get("TUNEYARD_PASSWORD") or getpass.getpass(f"password for {args.username}: ")
        print(client.token_obtain(args.username, password))
    elif command == "projects":
        projects = client.projects.list()
        if args.output == "table":
            out.rows(projects, COLUMNS["projects"])
        else:
            out.one({"results": [p.raw for p in projects]})
    elif command == "upload":
        version = client.datasets.upload(
            args.file,
            project=args.project,
            name=args.name,
            schema=args.schema,
            mapping=_mapping(args.mapping),
            tokenizer=args.tokenizer,
            max_tokens=args.max_tokens,
            piece_bytes=int(args.piece_mib * 1024 * 1024),
            resume=args.resume,
            progress=_upload_progress,
        )
        print(file=sys.stderr)
        out.one(version)
    elif command == "submit":
        job = client.jobs.submit(
            project=args.project,
            base_model=args.base_model,
            dataset_version=args.dataset_version,
            config=_config(args.config),
            name=args.name or "",
        )
        if args.wait:
            return _job_wait(client, job.id, out)
        out.one(job)
    elif command == "evaluate":
        job = client.jobs.evaluate(_evaluate_body(args))
        if args.wait:
            return _job_wait(client, job.id, out)
        out.one(job)
    elif command == "get":
        out.one(client.jobs.get(args.job))
    elif command in ("cancel", "retry", "clone"):
        out.one(getattr(client.jobs, command)(args.job))
    elif command == "wait":
        return _job_wait(client, args.job, out)
    elif command == "logs":
        for line in client.jobs.logs(args.job, follow=args.follow):
            print(line, flush=True)
    elif command == "metrics":
        out.one(client.jobs.metrics(args.job))
    elif command == "register":
        out.one(client.model_versions.register(job=args.job, name=args.name))
    elif command == "promote":
        out.one(
            client.promotions.request(
                model_version=args.model_version, target=args.target, comment=args.comment
            )
        )
    elif command == "approve":
        out.one(
            client.promotions.approve(
                args.promotion, comment=args.comment, override_reason=args.override_reason
            )
        )
    elif command == "reject":
        out.one(client.promotions.reject(args.promotion, comment=args.comment))
    elif command == "withdraw":
        out.one(client.promotions.withdraw(args.promotion))
    elif command == "comment":
        out.one(client.promotions.comment(args.promotion, args.text))
    elif command == "rollback":
        rollback = client.promotions.rollback(
            model_version=args.model_version,
            target=args.target,
            comment=args.comment,
            emergency=args.emergency,
            reason=args.reason,
        )
        out.one(rollback)
    elif command == "gates":
        report = client.promotions.gates(args.promotion)
        out.one(report)
        return 0 if report.get("passed") else EXIT_JOB_FAILED
    elif command == "card":
        if args.promotion is not None:
            card = client.promotions.card(args.promotion, markdown=args.markdown)
        else:
            card = client.deployments.card(
                args.target, project=args.project, model=args.model, markdown=args.markdown
            )
        if args.markdown:
            print(card)
        else:
            out.one(card)
    elif command == "history":
        out.one({"results": client.deployments.history(args.target, project=args.project, model=args.model)})
    elif command == "votes":
        print(client.promotions.votes_csv(args.promotion), end="")
    elif command == "suite-run":
        run = client.suites.run(project=args.project, suite=args.suite, model_version=args.model_version)
        if args.wait:
            run = client.suites.run_wait(run.id)
        out.one(run)
        return EXIT_JOB_FAILED if run.status == "failed" else 0
    elif command == "sweep":
        return _sweep(args, client, out)
    elif command in ("pause", "resume"):
        out.one(getattr(client.projects, command)(args.project))
    elif command == "deployed":
        deployments = client.deployments.list(args.target, project=args.project, model=args.model)
        if args.format == "env":
            print(_deployment_env(deployments, args.target))
        elif args.output == "table":
            out.rows(deployments, COLUMNS["deployments"])
        else:
            out.one({"results": [d.raw for d in deployments]})
    elif command == "completion":
        import shtab

        print(shtab.complete(parser_build(), shell=args.shell))
    else:
        return _resource(args, client, out)
    return 0


def _resource(args: argparse.Namespace, client: Client, out: Output) -> int:
    """``tuneyard RESOURCE list|show``: the same for every resource."""
    kind, action = args.command, args.action
    if action == "show":
        shows: dict[str, Callable[[], Any]] = {
            "datasets": lambda: client.datasets.get(client.datasets.resolve(args.project or "", args.ref)),
            "jobs": lambda: client.jobs.get(int(args.ref)),
            "model-versions": lambda: client.model_versions.get(int(args.ref)),
            "promotions": lambda: client.promotions.get(int(args.ref)),
            "sweeps": lambda: client.sweeps.get(int(args.ref)),
            "webhooks": lambda: client.webhooks.get(int(args.ref)),
            "suites": lambda: client.suites.get(int(args.ref)),
            "base-models": lambda: next(
                m
                for m in client.base_models.list(args.project)
                if m.name == args.ref or str(m.id) == args.ref
            ),
        }
        out.one(shows[kind]())
        return 0
    listed: Iterable[Any]
    if kind == "jobs":
        filters = {k: v for k, v in (("status", args.status), ("kind", args.kind), ("q", args.search)) if v}
        jobs = client.jobs.list(args.project, **filters)
        listed = [job for _, job in zip(range(args.limit), jobs, strict=False)]
    elif kind == "deliveries":
        listed = [
            d for _, d in zip(range(args.limit), client.webhooks.deliveries(int(args.webhook)), strict=False)
        ]
    else:
        lists: dict[str, Callable[[str], Iterable[Any]]] = {
            "base-models": client.base_models.list,
            "datasets": client.datasets.list,
            "model-versions": client.model_versions.list,
            "promotions": client.promotions.list,
            "sweeps": client.sweeps.list,
            "webhooks": client.webhooks.list,
            "suites": client.suites.list,
        }
        listed = lists[kind](args.project)
    out.rows(listed, COLUMNS[kind])
    return 0


def _deployment_env(deployments: list[Any], target: str) -> str:
    """One deployment as shell variables, for a CD step to source (or GitHub's $GITHUB_ENV)."""
    if len(deployments) != 1:
        found = ", ".join(f"{d.project}/{d.model_name}" for d in deployments) or "nothing"
        raise ValueError(
            f"--format env needs exactly one deployment on {target}; found {found}: add --project / --model"
        )
    d = deployments[0]
    values = {
        "TUNEYARD_PROJECT": d.project,
        "TUNEYARD_TARGET": d.target,
        "TUNEYARD_MODEL_NAME": d.model_name,
        "TUNEYARD_MODEL_URI": d.mlflow_model_uri,
        "TUNEYARD_MLFLOW_VERSION": d.mlflow_version,
        "TUNEYARD_MODEL_VERSION_ID": d.model_version,
        "TUNEYARD_APPROVED_BY": d.approved_by,
        "TUNEYARD_APPROVED_AT": d.approved_at,
    }
    # Values are ids, names and URIs; quoted all the same, so a sourced file cannot run anything.
    return "\n".join(f"{key}={shlex.quote(str(value))}" for key, value in values.items())


def _evaluate_body(args: argparse.Namespace) -> dict[str, Any]:
    """An evaluate job's body: the config file's evaluation and resources, with the flags' metrics on top."""
    config = _config(args.config)
    if not isinstance(config, dict):
        raise ValueError(f"{args.config} must hold a mapping (evaluation, resources)")
    evaluation = config.setdefault("evaluation", {})
    if not isinstance(evaluation, dict):
        raise ValueError(f"{args.config}: 'evaluation' must be a mapping")
    if args.metric:
        evaluation["metrics"] = args.metric
    if args.num_fewshot is not None:
        evaluation["num_fewshot"] = args.num_fewshot
    body = {
        "project": args.project,
        "dataset_version": args.dataset_version,
        "config": config,
        "name": args.name or "",
    }
    optional = (
        ("base_model", args.base_model),
        ("source_job", args.job),
        ("fewshot_dataset_version", args.fewshot_dataset_version),
    )
    return body | {key: value for key, value in optional if value is not None}


def _sweep(args: argparse.Namespace, client: Client, out: Output) -> int:
    """``tuneyard sweep create FILE`` (YAML or JSON), ``get``, and the steering actions."""
    action = args.sweep_command
    if action == "create":
        body = _config(args.file)
        if not isinstance(body, dict):
            raise ValueError(f"{args.file} must hold a mapping of sweep settings")
        if args.project:
            body["project"] = args.project
        sweep = client.sweeps.create(body)
        if not args.wait:
            out.one(sweep)
            return 0
        return _sweep_ended(_sweep_wait(client, sweep.id), out)
    if action == "get":
        out.one(client.sweeps.get(args.sweep))
    elif action == "wait":
        return _sweep_ended(_sweep_wait(client, args.sweep), out)
    elif action == "add-trials":
        out.one(client.sweeps.act(args.sweep, "add-trials", {"count": args.count}))
    else:
        out.one(client.sweeps.act(args.sweep, action))
    return 0


def _sweep_progress(sweep: dict[str, Any]) -> None:
    ended = sum(trial["state"] != "running" for trial in sweep["trials"])
    best = sweep["best_trial"]["value"] if sweep["best_trial"] else None
    status = f"{sweep['status']:<9} {ended}/{sweep['n_trials']} trials ended, best {best}"
    print(f"\rsweep {sweep['id']} {status}", end="", file=sys.stderr, flush=True)


def _sweep_wait(client: Client, sweep_id: int) -> Any:
    sweep = client.sweeps.wait(sweep_id, progress=_sweep_progress)
    print(file=sys.stderr)
    return sweep


def _sweep_ended(sweep: Any, out: Output) -> int:
    out.one(sweep)
    return 0 if sweep.status == "finished" and sweep.best_trial else EXIT_JOB_FAILED


def parser_build() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tuneyard", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("TUNEYARD_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--token", default=os.environ.get("TUNEYARD_TOKEN"))
    parser.add_argument(
        "--output", "-o", choices=["json", "table"], default=os.environ.get("TUNEYARD_OUTPUT", "json"),
        help="json (the default, for pipelines) or table (for people)",
    )  # fmt: skip
    commands = parser.add_subparsers(dest="command", required=True)

    token = commands.add_parser(
        "token", help="print an API token (password from TUNEYARD_PASSWORD or a prompt)"
    )
    token.add_argument("username")
    commands.add_parser("projects", help="the projects you belong to")
    upload = commands.add_parser(
        "upload", help="upload a dataset (JSONL, JSON, CSV, Parquet, a zipped saved dataset; gzip or zstd)"
    )
    upload.add_argument("file")
    upload.add_argument("--project", required=True)
    upload.add_argument("--name", required=True)
    upload.add_argument(
        "--schema", help="text, instruction, chat, preference or multiple_choice (default: detect)"
    )
    upload.add_argument(
        "--mapping", help='your columns for the schema\'s fields: \'{"output": "answer"}\' or output=answer'
    )
    upload.add_argument(
        "--tokenizer", help="a base model (name or id) whose tokenizer counts the rows' tokens"
    )
    upload.add_argument("--max-tokens", type=int, help="refuse rows longer than this (needs --tokenizer)")
    upload.add_argument(
        "--piece-mib", type=float, default=32, help="a larger file goes up in resumable pieces of this size"
    )
    upload.add_argument("--resume", metavar="ID", help="continue an earlier resumable upload")
    submit = commands.add_parser("submit", help="launch a fine-tune")
    submit.add_argument("--project", required=True)
    submit.add_argument("--base-model", required=True, help="a base model's name or id")
    submit.add_argument(
        "--dataset-version", required=True, help="an id, or name / name:v3 (newest when no v)"
    )
    submit.add_argument("--config", help="a JSON or YAML file: method, hyperparameters, resources")
    submit.add_argument("--name")
    submit.add_argument("--wait", action="store_true", help="wait for the end; exit 1 unless it succeeded")
    evaluate = commands.add_parser(
        "evaluate", help="evaluate a base model, or what a succeeded finetune trained, on a dataset version"
    )
    evaluate.add_argument("--project", required=True)
    evaluate.add_argument("--dataset-version", required=True, help="an id, or name / name:v3")
    evaluate.add_argument("--base-model", help="the base model as it is (name or id; default the job's own)")
    evaluate.add_argument("--job", type=int, help="a succeeded finetune: its adapter or model is evaluated")
    evaluate.add_argument(
        "--metric",
        action="append",
        help="perplexity, bleu, rouge, exact_match or multiple_choice; repeat for several",
    )
    evaluate.add_argument("--num-fewshot", type=int, help="solved examples before each question")
    evaluate.add_argument("--fewshot-dataset-version", type=int, help="where few-shot examples come from")
    evaluate.add_argument("--config", help="a JSON or YAML file: evaluation, resources")
    evaluate.add_argument("--name")
    evaluate.add_argument("--wait", action="store_true", help="wait for the end; exit 1 unless it succeeded")
    for name, text in (
        ("get", "show a job"),
        ("wait", "wait for a job to end, with a progress bar; exit 1 unless it succeeded"),
        ("cancel", "cancel a job (idempotent)"),
        ("retry", "run a failed or cancelled job again (idempotent)"),
        ("clone", "launch a new job like this one"),
        ("metrics", "a job's metric series (loss, eval loss, learning rate ...)"),
    ):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("job", type=int)
    logs = commands.add_parser("logs", help="print a job's log")
    logs.add_argument("job", type=int)
    logs.add_argument("--follow", "-f", action="store_true")
    register = commands.add_parser("register", help="register a succeeded job's result as a model version")
    register.add_argument("job", type=int)
    register.add_argument("--name", required=True)
    promote = commands.add_parser("promote", help="ask for a model version's promotion")
    promote.add_argument("model_version", type=int)
    promote.add_argument("--target", default="production")
    promote.add_argument("--comment", default="")
    for name in ("approve", "reject"):
        decide = commands.add_parser(name, help=f"{name} a promotion request (approvers)")
        decide.add_argument("promotion", type=int)
        decide.add_argument("--comment", default="")
        if name == "approve":
            decide.add_argument(
                "--override-reason", default="", help="approve past a failing gate (admins only)"
            )
    commands.add_parser("withdraw", help="take back your own open request").add_argument(
        "promotion", type=int
    )
    comment = commands.add_parser("comment", help="comment on a promotion request")
    comment.add_argument("promotion", type=int)
    comment.add_argument("text")
    rollback = commands.add_parser(
        "rollback", help="ask to put a target back on a version it ran before (or, admins, --emergency)"
    )
    rollback.add_argument("model_version", type=int)
    rollback.add_argument("--target", default="production")
    rollback.add_argument("--comment", default="")
    rollback.add_argument("--emergency", action="store_true", help="at once, without a second approver")
    rollback.add_argument("--reason", default="", help="why: required with --emergency")
    gates = commands.add_parser(
        "gates", help="a promotion's gate rules, pass / fail / pending (exit 1 unless all pass)"
    )
    gates.add_argument("promotion", type=int)
    card = commands.add_parser("card", help="the model card of what a target runs, or of a promotion")
    card.add_argument("target", nargs="?", default="production")
    card.add_argument("--project")
    card.add_argument("--model")
    card.add_argument("--promotion", type=int, help="this approved promotion's card instead")
    card.add_argument("--markdown", action="store_true", help="Markdown instead of JSON")
    history = commands.add_parser("history", help="what a target ran, approval by approval")
    history.add_argument("target", nargs="?", default="production")
    history.add_argument("--project", required=True)
    history.add_argument("--model", required=True)
    commands.add_parser("votes", help="a promotion's blind-review votes, as CSV").add_argument(
        "promotion", type=int
    )
    suite_run = commands.add_parser(
        "suite-run", help="run an evaluation suite on a model version (cached: no job starts twice)"
    )
    suite_run.add_argument("--project", required=True)
    suite_run.add_argument("--suite", type=int, required=True)
    suite_run.add_argument("--model-version", type=int, required=True)
    suite_run.add_argument("--wait", action="store_true", help="until it ends; exit 1 if it failed")
    sweep = commands.add_parser("sweep", help="hyper-parameter sweeps")
    sweeps = sweep.add_subparsers(dest="sweep_command", required=True)
    create = sweeps.add_parser("create", help="start a sweep from a YAML or JSON file of its settings")
    create.add_argument("file")
    create.add_argument("--project", help="overrides the file's project")
    create.add_argument("--wait", action="store_true", help="wait for it to end; exit 1 unless it finished")
    for name, text in (
        ("get", "a sweep, its trials and its best trial"),
        ("wait", "wait for a sweep to end"),
        ("pause", "launch no new trial; running ones go on"),
        ("resume", "launch trials again"),
        ("stop", "stop a sweep and cancel its running trials"),
        ("rerun-failed", "run each failed trial's parameters again"),
    ):
        sweeps.add_parser(name, help=text).add_argument("sweep", type=int)
    add = sweeps.add_parser("add-trials", help="raise a sweep's trial budget")
    add.add_argument("sweep", type=int)
    add.add_argument("--count", type=int, required=True)
    for name, text in (
        ("pause", "hold a project's queued jobs; running jobs go on (admins)"),
        ("resume", "send a paused project's queued jobs again (admins)"),
    ):
        commands.add_parser(name, help=text).add_argument("--project", required=True)
    deployed = commands.add_parser("deployed", help="what is deployed to a target")
    deployed.add_argument("target", nargs="?", default="production")
    deployed.add_argument("--project")
    deployed.add_argument("--model")
    deployed.add_argument(
        "--format", choices=["json", "env"], default="json",
        help="env: KEY=value lines for a CD step (exactly one deployment must match)",
    )  # fmt: skip
    _resource_commands(commands)
    completion = commands.add_parser("completion", help="print a shell completion script")
    completion.add_argument("shell", choices=["bash", "zsh", "tcsh"])
    return parser


def _resource_commands(commands: Any) -> None:
    """``list`` and ``show`` for every resource, one shape for all."""
    for kind, text, shows in (
        ("base-models", "a project's base models", "a base model, by name or id"),
        ("datasets", "a project's dataset versions", "a dataset version: id, name or name:v3"),
        ("jobs", "jobs, newest first (one project's or all yours)", "a job"),
        ("model-versions", "a project's model versions", "a model version"),
        ("promotions", "a project's promotion requests", "a promotion request"),
        ("sweeps", "a project's sweeps", "a sweep"),
        ("webhooks", "a project's webhook subscriptions (admins)", "a webhook subscription"),
        ("suites", "a project's evaluation suites", "an evaluation suite (one version)"),
    ):
        resource = commands.add_parser(kind, help=text)
        actions = resource.add_subparsers(dest="action", required=True)
        listing = actions.add_parser("list", help=text)
        listing.add_argument("--project", required=kind != "jobs")
        if kind == "jobs":
            listing.add_argument("--status", help="queued, running, succeeded, failed, cancelled")
            listing.add_argument("--kind", help="finetune, evaluate, ...")
            listing.add_argument("--search", help="in names and notes")
            listing.add_argument("--limit", type=int, default=50, help="at most this many rows (default 50)")
        show = actions.add_parser("show", help=shows)
        show.add_argument("ref")
        show.add_argument("--project", required=kind in ("base-models",), help="where a name is looked up")
    deliveries = commands.add_parser("deliveries", help="a webhook's deliveries, newest first")
    deliveries_actions = deliveries.add_subparsers(dest="action", required=True)
    listing = deliveries_actions.add_parser("list")
    listing.add_argument("webhook")
    listing.add_argument("--limit", type=int, default=50)


def main(argv: list[str] | None = None) -> int:
    args = parser_build().parse_args(argv)
    if args.command not in ("token", "completion") and not args.token:
        print(
            "tuneyard: no token; set TUNEYARD_TOKEN or pass --token (tuneyard token USER prints one)",
            file=sys.stderr,
        )
        return EXIT_REFUSED
    try:
        with Client(args.url, args.token or "", retries=2) as client:
            return run(args, client)
    except Unreachable as exc:
        print(f"tuneyard: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except TuneyardError as exc:
        print(f"tuneyard: refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except StopIteration:
        print("tuneyard: refused: not found", file=sys.stderr)
        return EXIT_REFUSED
    except (OSError, ValueError) as exc:
        print(f"tuneyard: {exc}", file=sys.stderr)
        return EXIT_REFUSED
