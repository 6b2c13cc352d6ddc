"""Signed webhooks, delivered to a real HTTP receiver in this process, verified by the Standard
Webhooks reference library; retries, redelivery, rotation, and the addresses never contacted."""

from __future__ import annotations

import socket
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.utils import timezone
from standardwebhooks import Webhook

from controlplane.accounts.models import Role
from controlplane.accounts.services import member_add
from controlplane.registry.services import promotion_reject
from controlplane.training.models import JobStatus
from controlplane.training.services import job_transition
from controlplane.webhooks import listeners, network, services
from controlplane.webhooks.models import Delivery, DeliveryStatus, Endpoint, Event
from tests.conftest import PASSWORD
from tests.factories import job_make, model_version_make, promotion_make

pytestmark = pytest.mark.django_db


class Receiver:
    """A real HTTP server on loopback that records what it is sent and answers as told."""

    def __init__(self, port: int = 0) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.answers: list[int] = []
        self.location = ""
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                code = receiver.answers.pop(0) if receiver.answers else 200
                self.send_response(code)
                if receiver.location:
                    self.send_header("Location", receiver.location)
                self.end_headers()
                self.wfile.write(b"thanks")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hooks/tuneyard"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.server.shutdown()


@pytest.fixture
def loopback_allowed(settings):
    settings.WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.1/32"]


@pytest.fixture
def adam(people):
    """The demo project's admin."""
    people["adam"] = member_add(project=people["demo"], username="adam", role=Role.ADMIN, password=PASSWORD)
    return people["adam"]


def subscribe(api_for, receiver, *, event_types=None) -> dict:
    answer = api_for("adam").post(
        "/api/v1/webhooks?project=demo",
        {"url": receiver.url, "event_types": event_types or []},
        format="json",
    )
    assert answer.status_code == 201, answer.json()
    return answer.json()


def job_succeed(job, django_capture_on_commit_callbacks) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        assert job_transition(job_id=job.pk, attempt=1, to=JobStatus.RUNNING, actor_label="w")
        assert job_transition(
            job_id=job.pk, attempt=1, to=JobStatus.SUCCEEDED, actor_label="w", metrics={"loss": 0.5}
        )


def send_all() -> None:
    for pk in (
        Delivery.objects.filter(status=DeliveryStatus.PENDING).order_by("pk").values_list("pk", flat=True)
    ):
        services.delivery_send(delivery_id=pk)


def test_a_finished_job_is_posted_signed_and_the_reference_library_verifies_it(
    people, adam, api_for, receiver, loopback_allowed, django_capture_on_commit_callbacks
):
    endpoint = subscribe(api_for, receiver)
    assert endpoint["secret"].startswith("whsec_")
    job = job_make(people["demo"], people["alice"])
    job_succeed(job, django_capture_on_commit_callbacks)
    send_all()

    [(headers, body)] = receiver.received
    payload = Webhook(endpoint["secret"]).verify(body, headers)
    assert payload["type"] == "job.succeeded"
    assert payload["data"]["job"]["id"] == job.pk
    assert payload["data"]["job"]["metrics"] == {"loss": 0.5}
    assert headers["host"] == f"127.0.0.1:{receiver.port}"
    # Signed with another secret, the same message is refused by the library.
    with pytest.raises(Exception, match="signature"):
        Webhook(services.secret_new()).verify(body, headers)
    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.response_status) == ("succeeded", 1, 200)


def test_a_failed_attempt_is_tried_again_after_its_backoff_with_the_same_message_id(
    people, adam, api_for, receiver, loopback_allowed, django_capture_on_commit_callbacks
):
    subscribe(api_for, receiver)
    receiver.answers = [500]
    job_succeed(job_make(people["demo"], people["alice"]), django_capture_on_commit_callbacks)
    send_all()
    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.response_status) == ("pending", 1, 500)
    assert delivery.next_attempt_at > timezone.now() + timedelta(seconds=3)
    # Not due yet: no second request.
    assert services.delivery_send(delivery_id=delivery.pk) is False
    Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
    assert services.delivery_send(delivery_id=delivery.pk) is True
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("succeeded", 2)
    first, second = receiver.received
    assert first[0]["webhook-id"] == second[0]["webhook-id"] == delivery.message_id
    assert delivery.attempt_log.count() == 2


def test_past_the_last_retry_it_fails_and_redeliver_sends_the_same_message_again(
    people, adam, api_for, receiver, loopback_allowed, settings, django_capture_on_commit_callbacks
):
    settings.WEBHOOK_RETRY_SECONDS = [0]
    subscribe(api_for, receiver)
    receiver.answers = [503, 503]
    job_succeed(job_make(people["demo"], people["alice"]), django_capture_on_commit_callbacks)
    send_all()
    send_all()
    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.attempts) == ("failed", 2)
    assert services.delivery_send(delivery_id=delivery.pk) is False

    answer = api_for("adam").post(f"/api/v1/webhook-deliveries/{delivery.pk}/redeliver")
    assert answer.status_code == 200, answer.json()
    body = answer.json()
    assert (body["status"], body["attempts"], body["message_id"]) == ("succeeded", 3, delivery.message_id)
    assert body["attempt_log"][0]["requested_by"] == "adam"
    assert len(receiver.received) == 3


@pytest.mark.parametrize(
    "url, why",
    [
        ("http://127.0.0.1:9/x", "loopback"),
        ("http://localhost/x", "loopback"),
        ("http://[::1]/x", "loopback"),
        ("http://[::ffff:127.0.0.1]/x", "loopback"),
        ("http://10.1.2.3/x", "private"),
        ("http://192.168.0.10/x", "private"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://0.0.0.0/x", "not a public address"),
        ("ftp://example.com/x", "https://"),
        ("https://user:pw@example.com/x", "user name or password"),
        ("https:///x", "name a host"),
    ],
)
def test_inside_addresses_and_odd_urls_are_refused_with_a_reason(people, adam, api_for, url, why):
    answer = api_for("adam").post("/api/v1/webhooks?project=demo", {"url": url}, format="json")
    assert answer.status_code == 400
    assert why in answer.json()["message"]
    assert not Endpoint.objects.exists()


def test_the_request_goes_to_the_address_that_was_checked_not_to_a_second_lookup(
    people, adam, api_for, receiver, loopback_allowed, monkeypatch, django_capture_on_commit_callbacks
):
    """DNS rebinding: a name that answers public at the check and loopback later cannot get in,
    and a name is connected to at the address checked, with its own Host header."""
    lookups: list[str] = []
    answers = {"hooks.example.test": "127.0.0.1"}

    def resolve(host, port, *args, **kwargs):
        lookups.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers.get(host, host), port))]

    monkeypatch.setattr(network.socket, "getaddrinfo", resolve)
    api_for("adam").post(
        "/api/v1/webhooks?project=demo",
        {"url": f"http://hooks.example.test:{receiver.port}/in"},
        format="json",
    )
    job_succeed(job_make(people["demo"], people["alice"]), django_capture_on_commit_callbacks)
    send_all()
    [(headers, _)] = receiver.received
    assert headers["host"] == f"hooks.example.test:{receiver.port}"

    # Now the name turns to an address no one allowed: nothing is sent, the log says why.
    answers["hooks.example.test"] = "10.0.0.7"
    job_succeed(job_make(people["demo"], people["alice"]), django_capture_on_commit_callbacks)
    send_all()
    assert len(receiver.received) == 1
    latest = Delivery.objects.order_by("-pk").first()
    assert latest.status == "pending" and "private address" in latest.last_error


def test_a_redirect_is_not_followed(
    people, adam, api_for, receiver, loopback_allowed, django_capture_on_commit_callbacks
):
    other = Receiver()
    try:
        receiver.answers = [302]
        receiver.location = other.url
        subscribe(api_for, receiver)
        job_succeed(job_make(people["demo"], people["alice"]), django_capture_on_commit_callbacks)
        send_all()
        assert other.received == []
        assert Delivery.objects.get().response_status == 302
    finally:
        other.server.shutdown()


def test_a_rotated_secret_signs_beside_the_new_one_until_it_expires(
    people, adam, api_for, receiver, loopback_allowed, django_capture_on_commit_callbacks
):
    old = subscribe(api_for, receiver)
    rotated = api_for("adam").post(f"/api/v1/webhooks/{old['id']}/rotate-secret").json()
    assert rotated["secret"] != old["secret"] and rotated["previous_secret_expires_at"]
    job_succeed(job_make(people["demo"], people["alice"]), django_capture_on_commit_callbacks)
    send_all()
    [(headers, body)] = receiver.received
    assert Webhook(old["secret"]).verify(body, headers)["type"] == "job.succeeded"
    assert Webhook(rotated["secret"]).verify(body, headers)["type"] == "job.succeeded"

    Endpoint.objects.update(previous_secret_expires_at=timezone.now() - timedelta(seconds=1))
    job_succeed(job_make(people["demo"], people["alice"]), django_capture_on_commit_callbacks)
    send_all()
    headers, body = receiver.received[-1]
    assert len(headers["webhook-signature"].split(" ")) == 1
    with pytest.raises(Exception, match="signature"):
        Webhook(old["secret"]).verify(body, headers)


def test_promotion_events_commit_with_the_decision_and_only_subscribed_types_are_sent(
    people, adam, api_for, receiver, loopback_allowed, django_capture_on_commit_callbacks
):
    subscribe(api_for, receiver, event_types=["promotion.requested", "promotion.rejected"])
    job = job_make(people["demo"], people["alice"])
    job_succeed(job, django_capture_on_commit_callbacks)
    version = model_version_make(job, people["alice"])
    with django_capture_on_commit_callbacks(execute=True):
        promotion = promotion_make(version, people["alice"])
        promotion_reject(promotion=promotion, user=people["carol"], comment="not yet")
    send_all()
    types = [Webhook_type(body) for _, body in receiver.received]
    assert types == ["promotion.requested", "promotion.rejected"]
    rejected = Event.objects.get(type="promotion.rejected").data["promotion"]
    assert rejected["decided_by"] == "carol" and rejected["model_version"]["mlflow_version"] == 1


def Webhook_type(body: bytes) -> str:  # noqa: N802
    import json

    return json.loads(body)["type"]


def test_the_same_news_heard_twice_is_one_event_and_the_reconciler_finds_what_was_missed(
    people, adam, api_for, receiver, loopback_allowed, django_capture_on_commit_callbacks
):
    job = job_make(people["demo"], people["alice"])
    # The job finishes before anyone subscribes, as if its hook had been lost in a crash.
    job_succeed(job, django_capture_on_commit_callbacks)
    assert not Event.objects.exists()
    subscribe(api_for, receiver)
    assert listeners.events_reconcile() == 1
    listeners.job_finished(job.pk)
    assert listeners.events_reconcile() == 0
    assert Event.objects.count() == 1 and Delivery.objects.count() == 1


def test_only_a_projects_admins_see_its_webhooks(people, adam, api_for, receiver, loopback_allowed, client):
    endpoint = subscribe(api_for, receiver)
    assert api_for("charlie").get(f"/api/v1/webhooks/{endpoint['id']}").status_code == 404
    assert api_for("alice").get(f"/api/v1/webhooks/{endpoint['id']}").status_code == 403
    assert api_for("alice").get("/api/v1/webhooks?project=demo").status_code == 403
    assert api_for("charlie").get("/api/v1/webhooks?project=demo").status_code == 404
    client.force_login(people["charlie"])
    assert client.get("/p/demo/webhooks").status_code == 404
    client.force_login(people["alice"])
    assert client.get("/p/demo/webhooks").status_code == 403


@pytest.mark.parametrize(
    "body, field",
    [
        ({"url": "https://example.com/h", "event_types": ["job.exploded"]}, "event_types"),
        ({"url": "https://example.com/h", "secret": "mine"}, "secret"),
        ({"url": 7}, "url"),
    ],
)
def test_a_bad_subscription_is_a_400_naming_its_field(people, adam, api_for, body, field):
    answer = api_for("adam").post("/api/v1/webhooks?project=demo", body, format="json")
    assert answer.status_code == 400
    assert field in answer.json()["message"]
    assert not Endpoint.objects.exists()


def test_an_admin_subscribes_and_redelivers_on_the_page(
    people, adam, receiver, loopback_allowed, client, django_capture_on_commit_callbacks
):
    client.force_login(adam)
    answer = client.post(
        "/p/demo/webhooks", {"url": receiver.url, "event_types": ["job.failed"]}, follow=True
    )
    assert b"copy its secret" in answer.content
    job = job_make(people["demo"], people["alice"])
    with django_capture_on_commit_callbacks(execute=True):
        assert job_transition(job_id=job.pk, attempt=1, to=JobStatus.RUNNING, actor_label="w")
        assert job_transition(job_id=job.pk, attempt=1, to=JobStatus.FAILED, actor_label="w", error="boom")
    delivery = Delivery.objects.get()
    page = client.post(f"/webhook-deliveries/{delivery.pk}/redeliver", follow=True)
    assert b"delivered" in page.content
    assert f'data-delivery="{delivery.pk}"'.encode() in page.content
    assert len(receiver.received) == 1
    # A refused URL is a message on the page, and nothing is made.
    page = client.post("/p/demo/webhooks", {"url": "http://10.0.0.1/"}, follow=True)
    assert b"private address" in page.content
    assert Endpoint.objects.count() == 1


def test_a_receiver_that_is_down_for_a_while_gets_each_message_once_when_it_is_back(
    people, adam, api_for, receiver, loopback_allowed, settings, django_capture_on_commit_callbacks
):
    settings.WEBHOOK_RETRY_SECONDS = [0, 0, 0, 0]
    endpoint = subscribe(api_for, receiver)
    port = receiver.port
    receiver.server.shutdown()
    receiver.server.server_close()
    for _ in range(3):
        job_succeed(job_make(people["demo"], people["alice"]), django_capture_on_commit_callbacks)
    send_all()
    send_all()
    assert set(Delivery.objects.values_list("status", "attempts")) == {("pending", 2)}
    assert "ConnectError" in Delivery.objects.first().last_error

    back = Receiver(port)  # up again, where it was
    try:
        send_all()
        send_all()  # nothing is due twice: each message arrives once
        ids = [headers["webhook-id"] for headers, _ in back.received]
        assert sorted(ids) == sorted(Delivery.objects.values_list("message_id", flat=True)) and len(ids) == 3
        for headers, body in back.received:
            Webhook(endpoint["secret"]).verify(body, headers)
        assert set(Delivery.objects.values_list("status", "attempts")) == {("succeeded", 3)}
    finally:
        back.server.shutdown()
