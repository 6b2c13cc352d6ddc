"""The first load of a chart page (a job's, with Plotly) in Chromium, served as production serves it
(gunicorn, DEBUG off): plain static files against hashed, compressed, long-cached ones, side by side.

Makes a scratch PostgreSQL database with a person and two jobs, runs ``collectstatic`` and a web
process for each way of serving, and opens one job page with an empty cache (the first load) then
the other (the next page, with what the first left in the cache), ``--runs`` times, alternating.
Prints the medians: the load event, the HTML, and Plotly's bytes on the wire and download time.

Run from the repository root (needs Debian's chromium):
    .venv/bin/python -m bench.page_load [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.seed import database_create, project_seed  # noqa: E402
from infra import processes  # noqa: E402

PASSWORD = "bench-page-load"
TIMING = """() => {
  const n = performance.getEntriesByType("navigation")[0];
  const plotly = performance.getEntriesByType("resource").find((r) => r.name.includes("plotly"));
  return {
    load_s: n.loadEventEnd / 1000,
    html_s: n.responseEnd / 1000,
    plotly_bytes: plotly ? plotly.transferSize : null,
    plotly_s: plotly ? (plotly.responseEnd - plotly.startTime) / 1000 : null,
  };
}"""


def _serve(tmp: Path, env: dict[str, str], *, manifest: bool) -> tuple[subprocess.Popen, str]:
    env = env | {"TUNEYARD_VAR_DIR": str(tmp), "STATIC_MANIFEST": "true" if manifest else "false"}
    subprocess.run(
        [str(processes.BIN / "python"), "manage.py", "collectstatic", "--no-input", "-v", "0"],
        cwd=ROOT, env=env, check=True,
    )  # fmt: skip
    port = processes.free_port()
    web = subprocess.Popen(
        processes.web_command(port=port), cwd=ROOT, env=env,
        stdout=(tmp / "web.log").open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    processes.wait_for_http(f"http://127.0.0.1:{port}/login/", process=web)
    return web, f"http://127.0.0.1:{port}"


def _one_run(browser, base: str, paths: list[str]) -> dict[str, dict]:  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    page.goto(f"{base}/login/")
    page.get_by_label("Username").fill("pages")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_load_state()
    # A fresh context with only the session cookie: an empty cache.
    fresh = browser.new_context(
        viewport={"width": 1440, "height": 900}, storage_state=context.storage_state()
    )
    context.close()
    page = fresh.new_page()
    timings = {}
    for key, path in zip(("first", "next"), paths, strict=True):
        page.goto(f"{base}{path}", wait_until="load")
        timings[key] = page.evaluate(TIMING)
    fresh.close()
    return timings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/tuneyard_bench_pages")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tuneyard-pages-"))
    env = dict(
        os.environ,
        DATABASE_URL=args.database_url,
        DJANGO_SETTINGS_MODULE="controlplane.settings",
        SECRET_KEY=secrets.token_urlsafe(32),
        WORKER_TOKEN=secrets.token_urlsafe(32),
        DEBUG="false",
    )
    os.environ.update(env)
    database_create(args.database_url)
    seeded = project_seed(tmp, slug="pages", rows=8)
    from controlplane.training.models import Job
    from workers.spec import TrainingConfig

    seeded["user"].set_password(PASSWORD)
    seeded["user"].save()
    config = TrainingConfig().model_dump(mode="json")
    jobs = [
        Job.objects.create(
            project=seeded["project"],
            name=f"page {i}",
            created_by=seeded["user"],
            base_model=seeded["base"],
            dataset_version=seeded["version"],
            config=config,
            queue="none",
            mlflow_experiment="x",
        )  # fmt: skip
        for i in range(2)
    ]
    paths = [f"/jobs/{job.pk}/" for job in jobs]
    chromium = os.environ.get("TUNEYARD_CHROMIUM", "/usr/bin/chromium")
    if not shutil.which(chromium):
        raise SystemExit(f"{chromium} is missing: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    ways = {"plain names, uncompressed": False, "hashed + gzip + immutable": True}
    servers = {label: _serve(tmp / str(manifest), env, manifest=manifest) for label, manifest in ways.items()}
    samples: dict[str, list[dict]] = {label: [] for label in ways}
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=chromium,
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"],
            )
            for _ in range(args.runs):
                for label, (_, base) in servers.items():
                    samples[label].append(_one_run(browser, base, paths))
            browser.close()
    finally:
        for web, _ in servers.values():
            os.killpg(web.pid, 15)
    report = {
        label: {
            visit: {
                name: statistics.median(run[visit][name] for run in runs)
                if runs[0][visit][name] is not None
                else None
                for name in runs[0][visit]
            }
            for visit in ("first", "next")
        }
        for label, runs in samples.items()
    }
    for label, visits in report.items():
        first, following = visits["first"], visits["next"]
        print(
            f"{label:<28} first load {first['load_s']:.2f} s (Plotly {first['plotly_bytes'] or 0:,} bytes, "
            f"{first['plotly_s'] or 0:.2f} s)   next page {following['load_s']:.2f} s"
        )
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
