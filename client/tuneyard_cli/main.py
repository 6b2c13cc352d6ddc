"""tuneyard: drive Tuneyard from a shell or a CI pipeline, over the REST API.

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
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tuneyard_cli.config_file import config_file_read

EXIT_JOB_FAILED, EXIT_REFUSED, EXIT_UNREACHABLE = 1, 2, 3
UPLOAD_RETRIES = 5  # tries of one piece before a resumable upload gives up
FINISHED = {"succeeded", "failed", "cancelled"}


class Refused(Exception):
    """The server said no; the message is its sentence."""


class Api:
    def __init__(self, url: str, token: str | None) -> None:
        headers = {"Authorization": f"Token {token}"} if token else {}
        self.http = httpx.Client(base_url=url.rstrip("/") + "/api/v1/", headers=headers, timeout=60)

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, path, **kwargs)
        if response.status_code >= 400:
            try:
                message = response.json().get("message") or response.text
            except ValueError:
                message = response.text[:300]
            raise Refused(f"{response.status_code}: {message}")
        return response.json()


def _print(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


def _ingest_wait(api: Api, operation: dict[str, Any]) -> dict[str, Any]:
    while operation["status"] not in FINISHED:
        print(f"\ringest {operation['progress'] * 100:5.1f}%", end="", file=sys.stderr, flush=True)
        time.sleep(1)
        operation = api.call("GET", f"dataset-operations/{operation['id']}")
    print(file=sys.stderr)
    if operation["status"] != "succeeded":
        raise Refused(operation["message"])
    return api.call("GET", f"datasets/{operation['dataset_version']}")


PIECE_HEADERS = {"Content-Type": "application/offset+octet-stream"}


def upload_resumable(
    api: Api, path: str, *, project: str, name: str, piece: int, upload_id: str | None = None
) -> dict[str, Any]:
    """Send a large file in pieces; after a broken connection, ask the server's offset and go on from it.

    The upload's id is printed first, so a run that gives up can be continued
    with ``--resume ID``.
    """
    size = os.path.getsize(path)
    if upload_id is None:
        body = {"project": project, "filename": Path(path).name, "size": size}
        upload_id = api.call("POST", "uploads", json=body)["id"]
    print(f"upload {upload_id} (continue it with --resume {upload_id})", file=sys.stderr)
    state = api.call("GET", f"uploads/{upload_id}")
    if state["size"] != size:
        raise Refused(f"upload {upload_id} is of a {state['size']}-byte file; {path} has {size} bytes")
    offset = first = state["offset"]
    failures, started = 0, time.monotonic()
    with open(path, "rb") as handle:
        while offset < size:
            handle.seek(offset)
            headers = PIECE_HEADERS | {"Upload-Offset": str(offset)}
            try:
                data = handle.read(piece)
                offset = api.call("PATCH", f"uploads/{upload_id}", content=data, headers=headers)["offset"]
            except (httpx.TransportError, Refused) as exc:
                # A dropped connection, a server error, or a piece the server did not take
                # whole (409 names its offset): ask where it stands and go on from there.
                failures += 1
                retryable = not isinstance(exc, Refused) or str(exc).startswith(("409", "5"))
                if failures > UPLOAD_RETRIES or not retryable:
                    raise
                time.sleep(min(2**failures, 30))
                offset = api.call("GET", f"uploads/{upload_id}")["offset"]
                continue
            rate = (offset - first) / max(time.monotonic() - started, 1e-6)
            eta = f"ETA {(size - offset) / rate:4.0f} s" if rate else ""
            print(f"\rupload {offset / size * 100:5.1f}%  {eta}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return api.call("POST", f"uploads/{upload_id}/finish", json={"name": name})


def _config(path: str | None) -> Any:
    """A config file's data (YAML or JSON, plain data only); a bad file is a one-sentence ValueError."""
    return {} if path is None else config_file_read(path)


def _bar(job: dict[str, Any]) -> str:
    done = int(job["progress"] * 30)
    return f"\rjob {job['id']} {job['status']:<10} [{'#' * done}{'.' * (30 - done)}] {job['progress']:6.1%}"


def job_wait(api: Api, job_id: int, *, interval: float = 2.0) -> dict[str, Any]:
    """Poll until the job ends, drawing a progress bar on stderr."""
    started = time.monotonic()
    while True:
        job = api.call("GET", f"jobs/{job_id}")
        eta = ""
        if 0 < job["progress"] < 1:
            left = (time.monotonic() - started) * (1 - job["progress"]) / job["progress"]
            eta = f"  ETA {int(left) // 60}m{int(left) % 60:02d}s"
        print(_bar(job) + eta, end="", file=sys.stderr, flush=True)
        if job["status"] in FINISHED:
            print(file=sys.stderr)
            return job
        time.sleep(interval)


def _ended(job: dict[str, Any]) -> int:
    _print(job)
    return 0 if job["status"] == "succeeded" else EXIT_JOB_FAILED


def run(args: argparse.Namespace, api: Api) -> int:  # noqa: C901 - one branch per command
    command = args.command
    if command == "token":
        password = os.environ.get("TUNEYARD_PASSWORD") or getpass.getpass(f"password for {args.username}: ")
        body = api.call("POST", "auth/token", data={"username": args.username, "password": password})
        print(body["token"])
    elif command == "projects":
        _print(api.call("GET", "projects"))
    elif command == "upload":
        piece = int(args.piece_mib * 1024 * 1024)
        if args.resume or os.path.getsize(args.file) > piece:
            body = upload_resumable(api, args.file, project=args.project, name=args.name, piece=piece,
                                    upload_id=args.resume)  # fmt: skip
        else:
            fields = {"project": args.project, "name": args.name}
            with open(args.file, "rb") as handle:
                body = api.call("POST", "datasets", data=fields, files={"file": handle})
        if "kind" in body:
            # A large file is ingested by the control worker: follow it to its version.
            body = _ingest_wait(api, body)
        _print(body)
    elif command == "submit":
        body = {
            "project": args.project,
            "base_model": args.base_model,
            "dataset_version": args.dataset_version,
            "config": _config(args.config),
            "name": args.name or "",
        }
        job = api.call("POST", "jobs", json=body)
        if not args.wait:
            _print(job)
            return 0
        return _ended(job_wait(api, job["id"]))
    elif command == "evaluate":
        job = api.call("POST", "jobs", json=_evaluate_body(args))
        if not args.wait:
            _print(job)
            return 0
        return _ended(job_wait(api, job["id"]))
    elif command in ("get", "cancel", "retry", "clone"):
        path = f"jobs/{args.job}" if command == "get" else f"jobs/{args.job}/{command}"
        _print(api.call("GET" if command == "get" else "POST", path))
    elif command == "wait":
        return _ended(job_wait(api, args.job))
    elif command == "logs":
        after = 0
        while True:
            page = api.call("GET", f"jobs/{args.job}/logs", params={"after": after})
            for line in page["lines"]:
                print(line)
            after = page["next"]
            if not args.follow or (page["finished"] and not page["lines"]):
                return 0
            time.sleep(1.0)
    elif command == "register":
        _print(api.call("POST", "model-versions", json={"job": args.job, "name": args.name}))
    elif command == "promote":
        body = {"model_version": args.model_version, "target": args.target, "comment": args.comment}
        _print(api.call("POST", "promotions", json=body))
    elif command in ("approve", "reject"):
        _print(api.call("POST", f"promotions/{args.promotion}/{command}", json={"comment": args.comment}))
    elif command == "sweep":
        return _sweep(args, api)
    elif command in ("pause", "resume"):
        _print(api.call("POST", f"projects/{args.project}/{command}"))
    elif command == "deployed":
        params = {key: value for key, value in (("project", args.project), ("model", args.model)) if value}
        _print(api.call("GET", f"deployments/{args.target}", params=params))
    return 0


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
        "kind": "evaluate",
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


def _sweep(args: argparse.Namespace, api: Api) -> int:
    """``tuneyard sweep create FILE`` (YAML or JSON), ``get``, and the steering actions."""
    action = args.sweep_command
    if action == "create":
        body = _config(args.file)
        if not isinstance(body, dict):
            raise ValueError(f"{args.file} must hold a mapping of sweep settings")
        if args.project:
            body["project"] = args.project
        sweep = api.call("POST", "sweeps", json=body)
        if not args.wait:
            _print(sweep)
            return 0
        return _sweep_ended(_sweep_wait(api, sweep["id"]))
    if action == "get":
        _print(api.call("GET", f"sweeps/{args.sweep}"))
    elif action == "wait":
        return _sweep_ended(_sweep_wait(api, args.sweep))
    elif action == "add-trials":
        _print(api.call("POST", f"sweeps/{args.sweep}/add-trials", json={"count": args.count}))
    else:
        _print(api.call("POST", f"sweeps/{args.sweep}/{action}"))
    return 0


def _sweep_wait(api: Api, sweep_id: int, *, interval: float = 3.0) -> dict[str, Any]:
    """Poll until the sweep ends, showing how many trials have ended on stderr."""
    while True:
        sweep = api.call("GET", f"sweeps/{sweep_id}")
        ended = sum(trial["state"] != "running" for trial in sweep["trials"])
        best = sweep["best_trial"]["value"] if sweep["best_trial"] else None
        status = f"{sweep['status']:<9} {ended}/{sweep['n_trials']} trials ended, best {best}"
        print(f"\rsweep {sweep_id} {status}", end="", file=sys.stderr, flush=True)
        if sweep["status"] not in ("running", "paused"):
            print(file=sys.stderr)
            return sweep
        time.sleep(interval)


def _sweep_ended(sweep: dict[str, Any]) -> int:
    _print(sweep)
    return 0 if sweep["status"] == "finished" and sweep["best_trial"] else EXIT_JOB_FAILED


def parser_build() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tuneyard", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("TUNEYARD_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--token", default=os.environ.get("TUNEYARD_TOKEN"))
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
        "--piece-mib", type=float, default=32, help="a larger file goes up in resumable pieces of this size"
    )
    upload.add_argument("--resume", metavar="ID", help="continue an earlier resumable upload")
    submit = commands.add_parser("submit", help="launch a fine-tune")
    submit.add_argument("--project", required=True)
    submit.add_argument("--base-model", type=int, required=True)
    submit.add_argument("--dataset-version", type=int, required=True)
    submit.add_argument("--config", help="a JSON or YAML file: method, hyperparameters, resources")
    submit.add_argument("--name")
    submit.add_argument("--wait", action="store_true", help="wait for the end; exit 1 unless it succeeded")
    evaluate = commands.add_parser(
        "evaluate", help="evaluate a base model, or what a succeeded finetune trained, on a dataset version"
    )
    evaluate.add_argument("--project", required=True)
    evaluate.add_argument("--dataset-version", type=int, required=True)
    evaluate.add_argument("--base-model", type=int, help="the base model as it is (or the job's own base)")
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser_build().parse_args(argv)
    if args.command != "token" and not args.token:
        print(
            "tuneyard: no token; set TUNEYARD_TOKEN or pass --token (tuneyard token USER prints one)",
            file=sys.stderr,
        )
        return EXIT_REFUSED
    try:
        return run(args, Api(args.url, args.token))
    except Refused as exc:
        print(f"tuneyard: refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except httpx.TransportError as exc:
        print(f"tuneyard: cannot reach {args.url}: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except (OSError, ValueError) as exc:
        print(f"tuneyard: {exc}", file=sys.stderr)
        return EXIT_REFUSED
