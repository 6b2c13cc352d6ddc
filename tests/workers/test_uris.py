"""The rule of base-model URIs (workers.uris), and a worker's download, which applies it again.

``HOSTILE`` is the table the API's tests use too: each URI, with the rule it
breaks. ``{root}`` is the one model root, ``{foreign_run}`` a run of project
"other" and ``{stray_run}`` a run in an experiment of no project.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from workers.tracking import download
from workers.uris import (
    HubModel,
    LocalModel,
    MlflowModel,
    StoreModel,
    UriRefused,
    UriRule,
    UriScope,
    local_tree_check,
    model_uri_check,
    roots_parse,
)

R = UriRule

HOSTILE: list[tuple[str, UriRule]] = [
    # Schemes nothing is loaded from (no object-store root is configured here).
    ("file:///etc/passwd", R.UNDER_ROOT),
    ("http://169.254.169.254/latest/meta-data/", R.KNOWN_FORM),
    ("https://attacker.example/model", R.KNOWN_FORM),
    ("gopher://127.0.0.1:6379/_FLUSHALL", R.KNOWN_FORM),
    ("javascript:alert(1)", R.KNOWN_FORM),
    ("ftp://127.0.0.1/model", R.KNOWN_FORM),
    ("dict://127.0.0.1:11211/stats", R.KNOWN_FORM),
    ("s3://bucket/model", R.KNOWN_FORM),
    ("mlflow-artifacts:/0/model", R.KNOWN_FORM),
    ("hf://org/model", R.KNOWN_FORM),
    ("localhost:6379/model", R.KNOWN_FORM),
    ("file://attacker.example/srv/model", R.UNDER_ROOT),
    # IP addresses, in every form a URL parser takes.
    ("http://2130706433/", R.KNOWN_FORM),
    ("http://[::1]/model", R.KNOWN_FORM),
    ("127.0.0.1/model", R.HUB_ID),
    ("127.1/model", R.HUB_ID),
    ("0x7f.0.0.1/model", R.HUB_ID),
    ("0x7f000001/model", R.HUB_ID),
    ("2130706433/model", R.HUB_ID),
    ("017700000001/model", R.HUB_ID),
    ("169.254.169.254/latest", R.HUB_ID),
    ("[::1]/model", R.HUB_ID),
    # Traversal, relative paths and other non-ids.
    ("/etc/passwd", R.UNDER_ROOT),
    ("//attacker.example/model", R.UNDER_ROOT),
    ("{root}/../../etc/passwd", R.UNDER_ROOT),
    ("{root}-sibling/model", R.UNDER_ROOT),
    ("file://{root}/../../etc", R.UNDER_ROOT),
    ("file://{root}/%2e%2e/%2e%2e/etc", R.UNDER_ROOT),
    ("file:relative/model", R.UNDER_ROOT),
    ("org/../name", R.HUB_ID),
    ("org/..name", R.HUB_ID),
    ("../org/name", R.HUB_ID),
    ("./model", R.HUB_ID),
    ("~/.ssh", R.HUB_ID),
    ("model", R.HUB_ID),
    ("org--x/name", R.HUB_ID),
    ("org/name.git", R.HUB_ID),
    ("org/nam\u00e9", R.HUB_ID),
    ("org/name@", R.HUB_ID),
    ("org/name@../../main", R.HUB_ID),
    ("org/name@main@v2", R.HUB_ID),
    ("C:\\models\\tiny", R.KNOWN_FORM),
    # Whitespace and control characters (NUL is refused before any rule, by the API's middleware).
    ("not a url", R.PLAIN_TEXT),
    (" org/name", R.PLAIN_TEXT),
    ("org/name\n", R.PLAIN_TEXT),
    ("org/\tname", R.PLAIN_TEXT),
    ("org/name\u200b", R.PLAIN_TEXT),
    ("org/name\x1b[2J", R.PLAIN_TEXT),
    ("org/name\x7f", R.PLAIN_TEXT),
    ("{root}/model\r\n/etc", R.PLAIN_TEXT),
    ("file://{root}/model%0a", R.PLAIN_TEXT),
    # Another project's runs and models, and runs of no project.
    ("runs:/{foreign_run}/model", R.PROJECT_RUN),
    ("runs:/{stray_run}/model", R.PROJECT_RUN),
    ("runs:/0123456789abcdef0123456789abcdef/model", R.PROJECT_RUN),
    ("runs:/{foreign_run}/../model", R.PROJECT_RUN),
    ("runs:/{foreign_run}", R.PROJECT_RUN),
    ("models:/other.tiny/1", R.PROJECT_MODEL),
    ("models:/other.tiny@champion", R.PROJECT_MODEL),
    ("models:/tiny/1", R.PROJECT_MODEL),
    ("models:/demo-x.tiny/1", R.PROJECT_MODEL),
    ("models:/demo.tiny", R.PROJECT_MODEL),
    ("models:/demo.tiny/1/../../other.tiny/1", R.PROJECT_MODEL),
]


def hostile(template: str, *, root: Path, foreign_run: str, stray_run: str) -> str:
    return template.format(root=root, foreign_run=foreign_run, stray_run=stray_run)


# --- the rule, with a lookup of runs' experiments as MLflow would answer it -----------

FOREIGN_RUN, STRAY_RUN, OWN_RUN = "f" * 32, "5" * 32, "0" * 31 + "1"
EXPERIMENTS = {
    FOREIGN_RUN: "tuneyard/other/base-models",
    STRAY_RUN: "tests/base-models",
    OWN_RUN: "tuneyard/demo/base-models",
}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "root" / "model").mkdir(parents=True)
    return (tmp_path / "root").resolve()


@pytest.fixture
def scope(root: Path) -> UriScope:
    return UriScope.of_project("demo", [str(root)])


@pytest.mark.parametrize(("template", "rule"), HOSTILE)
def test_a_hostile_uri_is_refused_naming_the_rule_it_breaks(template: str, rule: UriRule, root, scope):
    uri = hostile(template, root=root, foreign_run=FOREIGN_RUN, stray_run=STRAY_RUN)

    with pytest.raises(UriRefused) as refused:
        model_uri_check(uri, scope, EXPERIMENTS.get)

    assert refused.value.rule is rule
    assert f"breaks the rule '{rule}'" in str(refused.value)


@pytest.mark.parametrize("uri", ["org/na\x00me", "", "{root}/\x00", "file://{root}/model%00"])
def test_nul_and_empty_are_refused_as_text(uri: str, root, scope):
    with pytest.raises(UriRefused) as refused:
        model_uri_check(uri.format(root=root), scope, EXPERIMENTS.get)

    assert refused.value.rule is R.PLAIN_TEXT


def test_each_admitted_form_says_what_it_names(root, scope):
    def check(uri: str) -> object:
        return model_uri_check(uri, scope, EXPERIMENTS.get)

    assert check("meta-llama/Llama-3.1-8B") == HubModel("meta-llama/Llama-3.1-8B")
    assert check("org/model@v1.0") == HubModel("org/model", "v1.0")
    assert check("org/model@refs/pr/3") == HubModel("org/model", "refs/pr/3")
    assert check(f"runs:/{OWN_RUN}/model") == MlflowModel(f"runs:/{OWN_RUN}/model", OWN_RUN, "model")
    assert check("models:/demo.tiny/3") == MlflowModel("models:/demo.tiny/3")
    assert check("models:/demo.tiny@champion") == MlflowModel("models:/demo.tiny@champion")
    assert check(f"{root}/model") == LocalModel(root / "model")
    assert check(f"{root}/model/../model") == LocalModel(root / "model")
    assert check(f"file://{root}/model") == LocalModel(root / "model")
    assert check(f"file://localhost{root}/mod%65l") == LocalModel(root / "model")


def test_a_run_of_the_projects_own_experiment_or_one_below_it_passes(scope):
    names = {OWN_RUN: "tuneyard/demo", FOREIGN_RUN: "tuneyard/demo/datasets", STRAY_RUN: "tuneyard/demo2"}

    assert model_uri_check(f"runs:/{OWN_RUN}/m", scope, names.get)
    assert model_uri_check(f"runs:/{FOREIGN_RUN}/m", scope, names.get)
    with pytest.raises(UriRefused, match="no run of project demo"):
        model_uri_check(f"runs:/{STRAY_RUN}/m", scope, names.get)  # "demo2" is another project


def test_a_symlink_cannot_lead_out_of_a_root(root, scope, tmp_path: Path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "config.json").write_text("{}")
    (root / "escape").symlink_to(outside)
    (root / "model" / "config.json").symlink_to(outside / "config.json")
    (root / "inside").symlink_to(root / "model")

    with pytest.raises(UriRefused) as refused:
        model_uri_check(f"{root}/escape", scope, EXPERIMENTS.get)
    assert refused.value.rule is R.UNDER_ROOT
    # A link inside a model folder: from_pretrained would follow it.
    with pytest.raises(UriRefused, match="links to a file outside"):
        local_tree_check(root / "model", scope)
    # Through a link that stays inside, the folder it leads to is checked all the same.
    assert model_uri_check(f"{root}/inside", scope, EXPERIMENTS.get) == LocalModel(root / "model")
    with pytest.raises(UriRefused, match="links to a file outside"):
        local_tree_check(root / "inside", scope)


def test_an_object_store_root_admits_only_what_lies_under_it(scope):
    stores = UriScope.of_project("demo", [*scope.roots, "s3://models-bucket/approved/"])

    def check(uri: str) -> object:
        return model_uri_check(uri, stores, EXPERIMENTS.get)

    assert check("s3://models-bucket/approved/llama-3") == StoreModel("s3://models-bucket/approved/llama-3")
    for uri, rule in [
        ("s3://models-bucket/approved-not/llama", R.UNDER_ROOT),
        ("s3://models-bucket/approved/../private/llama", R.UNDER_ROOT),
        ("s3://models-bucket/approved/%2e%2e/private", R.UNDER_ROOT),
        ("s3://models-bucket/approved//llama", R.UNDER_ROOT),
        ("s3://other-bucket/approved/llama", R.UNDER_ROOT),
        ("s3://user@models-bucket/approved/llama", R.UNDER_ROOT),
        ("s3://models-bucket/approved/llama?versionId=1", R.UNDER_ROOT),
        ("gs://models-bucket/approved/llama", R.KNOWN_FORM),
    ]:
        with pytest.raises(UriRefused) as refused:
            check(uri)
        assert refused.value.rule is rule, uri


def test_roots_are_absolute_paths_or_storage_uris():
    assert roots_parse(" /srv/models , s3://bucket/models,") == ("/srv/models", "s3://bucket/models")
    for bad in ["models", "./models", "file:models", "runs:/abc", "s3://user@bucket/x"]:
        with pytest.raises(ValueError, match="MODEL_URI_ROOTS"):
            roots_parse(bad)


def test_a_workers_roots_come_from_its_environment(monkeypatch: pytest.MonkeyPatch, root: Path):
    monkeypatch.setenv("MODEL_URI_ROOTS", f"{root},s3://bucket/models")

    scope = UriScope.from_env(project="demo", experiment="tuneyard/demo")

    assert scope.roots == (str(root), "s3://bucket/models")
    monkeypatch.delenv("MODEL_URI_ROOTS")
    with pytest.raises(UriRefused):
        model_uri_check(f"{root}/model", UriScope.from_env(project="demo", experiment="x"), EXPERIMENTS.get)


# --- a worker's download, on a real MLflow store --------------------------------------


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A SQLite MLflow store holding a small model in project demo's experiment, one in other's
    and one in an experiment of no project: the store's folder and the run ids by owner."""
    base = tmp_path_factory.mktemp("uris-mlflow")
    model = base / "files"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "llama"}')
    runs = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(base)  # a SQLite store keeps its artifacts in ./mlruns
        client = MlflowClient(tracking_uri=f"sqlite:///{base / 'mlflow.db'}")
        for owner, experiment in [
            ("own", "tuneyard/demo/base-models"),
            ("foreign", "tuneyard/other/base-models"),
            ("stray", "tests/base-models"),
        ]:
            run = client.create_run(client.create_experiment(experiment))
            client.log_artifacts(run.info.run_id, str(model), "model")
            runs[owner] = run.info.run_id
    return base, runs


@pytest.fixture
def tracking(store: tuple[Path, dict[str, str]], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The store, as a worker's MLflow (its tracking server); the run ids by owner."""
    base, runs = store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{base / 'mlflow.db'}")
    monkeypatch.chdir(base)
    return runs


@pytest.mark.parametrize(("template", "rule"), HOSTILE)
def test_a_worker_downloads_nothing_from_a_hostile_uri(
    template: str, rule: UriRule, tracking: dict[str, str], root: Path, scope: UriScope, tmp_path: Path
):
    uri = hostile(template, root=root, foreign_run=tracking["foreign"], stray_run=tracking["stray"])
    dst = tmp_path / "download"

    with pytest.raises(UriRefused) as refused:
        download(uri, dst, scope=scope)

    assert refused.value.rule is rule
    assert not dst.exists()


def test_a_worker_downloads_its_projects_run_and_reads_its_roots_in_place(
    tracking: dict[str, str], root: Path, scope: UriScope, tmp_path: Path
):
    fetched = download(f"runs:/{tracking['own']}/model", tmp_path / "own", scope=scope)

    assert isinstance(fetched, Path) and (fetched / "config.json").is_file()
    assert download(f"file://{root}/model", tmp_path / "unused", scope=scope) == root / "model"
    assert download("org/model", tmp_path / "unused", scope=scope) == "org/model"
    assert not (tmp_path / "unused").exists()


def test_a_hub_id_that_names_a_folder_here_is_refused(scope: UriScope, tmp_path: Path, monkeypatch):
    # from_pretrained("org/model") reads ./org/model when it exists, and never asks the hub.
    (tmp_path / "org" / "model").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)

    with pytest.raises(UriRefused) as refused:
        download("org/model", tmp_path / "dst", scope=scope)

    assert refused.value.rule is R.HUB_ID


def test_a_hub_revision_is_fetched_as_that_revisions_snapshot(scope: UriScope, tmp_path: Path, monkeypatch):
    # The hub cannot be reached from the tests: its client is the one stand-in here.
    import huggingface_hub

    asked = []

    def snapshot_download(repo_id: str, *, revision: str) -> str:
        asked.append((repo_id, revision))
        return str(tmp_path / "snapshot")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)

    assert download("org/model@v1.0", tmp_path / "dst", scope=scope) == tmp_path / "snapshot"
    assert asked == [("org/model", "v1.0")]
