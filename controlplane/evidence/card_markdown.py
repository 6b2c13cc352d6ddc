"""The model card as Markdown, rendered from its JSON (``cards.model_card_data``): tables whose cells
are escaped, so nothing a person typed (a reason, a comment) can change the card's structure."""

from __future__ import annotations

import json
from typing import Any

from controlplane.datasets.models import OperationKind, OperationStatus


def _cell(value: Any) -> str:
    """A value as one Markdown table cell: pipes escaped, on one line."""
    if value is None:
        text = "–"
    elif isinstance(value, float):
        text = f"{value:.6g}"
    elif isinstance(value, dict | list):
        text = json.dumps(value, sort_keys=True, ensure_ascii=False)
    else:
        text = str(value)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]
    return [*lines, ""]


def _quoted(text: str) -> list[str]:
    return [f"> {line}" for line in text.splitlines()] + [""] if text else []


def check_summary(check: dict[str, Any]) -> str:
    """One line of what a dataset check found."""
    result = check.get("result") or {}
    if check.get("status") != OperationStatus.SUCCEEDED:
        return f"failed: {check.get('message') or 'no result'}"
    if check["kind"] == OperationKind.CONTAMINATION:
        return (
            f"{result.get('contaminated_rows', '?')} of {result.get('eval_rows', '?')} rows of "
            f"{check.get('of')} found in the training data "
            f"({result.get('n', (check.get('options') or {}).get('n', '?'))}-grams)"
        )
    if check["kind"] == OperationKind.PII_SCAN:
        kinds = result.get("kinds") or {}
        found = {kind: info.get("rows", 0) for kind, info in kinds.items() if isinstance(info, dict)}
        flagged = ", ".join(
            f"{kind} in {rows} row{'' if rows == 1 else 's'}" for kind, rows in sorted(found.items()) if rows
        )
        return f"{flagged} (of {result.get('rows', '?')} rows)" if flagged else "nothing found"
    if check["kind"] == OperationKind.DEDUP:
        removed = result.get("removed", result.get("removed_rows"))
        return f"{removed} rows removed" if removed is not None else "done"
    return "done"


def _run_words(run: dict[str, Any] | None) -> str:
    if run is None:
        return "no run"
    digest = f", digest `{run['digest'][:16]}`" if run["digest"] else ""
    return f"run {run['id']} ({run['status']}{digest})"


def suite_runs_line(suite: dict[str, Any]) -> str:
    """Which runs a suite's figures come from, in words."""
    return (
        f"this version's {_run_words(suite['challenger'])}, the champion's {_run_words(suite['champion'])}."
    )


def _figures(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False)


def gate_rules(gate: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The gate's rules as (rule, outcome, figures), whatever shape its kept results have."""
    if gate is None:
        return []
    results = gate["results"]
    if isinstance(results, dict):
        results = results.get("rules", [])
    rules = []
    for rule in results if isinstance(results, list) else []:
        if not isinstance(rule, dict):
            continue
        outcome = rule.get("status") or rule.get("outcome") or rule.get("state")
        if outcome is None and "passed" in rule:
            outcome = "pass" if rule["passed"] else "fail"
        rules.append(
            {
                "rule": rule.get("label")
                or rule.get("rule")
                or rule.get("name")
                or rule.get("kind")
                or "rule",
                "outcome": outcome or "–",
                "figures": _figures(rule.get("figures") or rule.get("detail") or rule.get("message") or ""),
            }
        )
    return rules


def model_card_markdown(data: dict[str, Any]) -> str:
    """The card as Markdown, from the card's data alone."""
    model, promotion, training = data["model"], data["promotion"], data["training"]
    lines = [
        f"# Model card: {model['name']} v{model['mlflow_version']}",
        "",
        f"Deployed to **{promotion['target']}** in project `{data['project']}` "
        f"({'a rollback' if promotion['kind'] == 'rollback' else 'a promotion'}, request {promotion['id']}).",
        "",
        "## Model",
        "",
        *_table(
            ["", ""],
            [
                ["MLflow model", f"{model['mlflow_name']} version {model['mlflow_version']}"],
                ["Model URI", model["mlflow_uri"]],
                ["Source", model["source_uri"]],
                ["Base model", f"{data['base_model']['name']} ({data['base_model']['uri']})"],
                [
                    "Replaces",
                    f"v{data['champion']['mlflow_version']}" if data["champion"] else "nothing (first here)",
                ],
            ],
        ),
        "## Training",
        "",
        f"Job {training['job']}, method **{training['method'] or 'unknown'}**"
        + (f", MLflow run `{training['mlflow_run_id']}`." if training["mlflow_run_id"] else "."),
        "",
        *_table(
            ["Hyperparameter", "Value"], [[k, v] for k, v in sorted(training["hyperparameters"].items())]
        ),
    ]
    if training["metrics"]:
        lines += _table(["Final metric", "Value"], [[k, v] for k, v in sorted(training["metrics"].items())])
    lines += ["## Data", ""]
    for dataset in data["datasets"]:
        lines += [
            f"**{dataset['name']} v{dataset['version']}** ({dataset['role']}, {dataset['format']}, "
            f"{dataset['rows']} rows), sha256 `{dataset['sha256']}`",
            "",
        ]
        if dataset["checks"]:
            lines += _table(
                ["Check", "Finding", "When", "Digest"],
                [
                    [c["kind"], check_summary(c), c["finished_at"], c["digest"][:16]]
                    for c in dataset["checks"]
                ],
            )
        else:
            lines += ["No contamination, PII or dedup check was run on it.", ""]
    lines += ["## Evaluation against the champion", ""]
    if not data["suites"]:
        lines += ["No evaluation suite was run.", ""]
    for suite in data["suites"]:
        lines += [
            f"**{suite['suite']} v{suite['version']}** (seed {suite['seed']}): {suite_runs_line(suite)}",
            "",
        ]
        if suite["comparison"]:
            lines += _table(
                ["Task", "Metric", "This version", "Champion", "Δ"],
                [
                    [r["task"], r["metric"], r["challenger"], r["champion"], r["delta"]]
                    for r in suite["comparison"]
                ],
            )
    review = data["review"]
    lines += ["## Blind review", ""]
    if review["votes"]:
        lines += _table(
            ["Votes", "This version won", "Champion won", "Ties", "Win rate", "Digest"],
            [
                [
                    review["votes"],
                    review["challenger_wins"],
                    review["champion_wins"],
                    review["ties"],
                    review["challenger_win_rate"],
                    review["digest"][:16],
                ]
            ],
        )
    else:
        lines += ["No review votes.", ""]
    gate = data["gate"]
    lines += ["## Gate", ""]
    if gate is None:
        lines += ["No gate policy applied.", ""]
    else:
        lines += [f"**{'Passed' if gate['passed'] else 'Failed'}** (digest `{gate['digest'][:16]}`).", ""]
        rules = gate_rules(gate)
        if rules:
            lines += _table(
                ["Rule", "Outcome", "Figures"], [[r["rule"], r["outcome"], r["figures"]] for r in rules]
            )
    if promotion["override_reason"]:
        lines += [
            "**Approved by an admin's override**, who wrote:",
            "",
            *_quoted(promotion["override_reason"]),
        ]
    lines += [
        "## Decision",
        "",
        *_table(
            ["", "Who", "When"],
            [
                ["Requested", promotion["requested_by"], promotion["requested_at"]],
                ["Approved", promotion["approved_by"], promotion["approved_at"]],
            ],
        ),
        *(["Request:", "", *_quoted(promotion["comment"])] if promotion["comment"] else []),
        *(
            ["Decision:", "", *_quoted(promotion["decision_comment"])]
            if promotion["decision_comment"]
            else []
        ),
        "## Libraries",
        "",
    ]
    libraries = data["libraries"]
    if isinstance(libraries, dict):
        lines += _table(["Library", "Version"], [[k, v] for k, v in sorted(libraries.items())])
    else:
        lines += [f"Library versions: {libraries}.", ""]
    return "\n".join(lines).rstrip() + "\n"
