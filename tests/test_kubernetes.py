"""deploy/kubernetes.yaml agrees with the bot it deploys: the probes hit endpoints the bot
serves on the port it listens on, the grace period covers the bot's shutdown, the pod runs as
the image's user, and secrets come from a Secret, never from the manifest."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from bot.ops.server import build_web_app
from bot.ops.workers import STOP_GRACE
from tests.strict_yaml import read_manifest

ROOT = Path(__file__).resolve().parent.parent
SECRET_SETTINGS = re.compile(r"^(SLACK_|CLOUD_SDK_)|^REDIS_URL$")


@pytest.fixture(scope="module")
def deployment() -> dict[str, Any]:
    doc = read_manifest((ROOT / "deploy" / "kubernetes.yaml").read_text(encoding="utf-8"))
    assert doc["kind"] == "Deployment" and doc["apiVersion"] == "apps/v1"
    return doc


def pod(deployment: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    [bot] = pod(deployment)["containers"]
    return dict(bot)


def served_paths() -> set[str]:
    # The routes exist without running anything: handlers touch the runtime per request.
    fake = SimpleNamespace(redis=None, lookups=None, budget=None)
    app = build_web_app(None, fake)  # type: ignore[arg-type]
    return {route.resource.canonical for route in app.router.routes() if route.resource}


def test_the_selector_picks_the_pods_it_creates(deployment: dict[str, Any]) -> None:
    selector = deployment["spec"]["selector"]["matchLabels"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector and selector.items() <= labels.items()
    assert deployment["spec"]["replicas"] >= 2


def test_the_container_runs_the_bot(deployment: dict[str, Any]) -> None:
    bot = container(deployment)
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert 'ENTRYPOINT ["hss-sync-bot"]' in dockerfile
    assert bot["args"] == ["run"]
    assert "command" not in bot  # keep the image's entry point


def test_probes_hit_served_endpoints_on_the_bots_port(deployment: dict[str, Any]) -> None:
    bot = container(deployment)
    port = int(next(e["value"] for e in bot["env"] if e["name"] == "PORT"))
    [named] = [p for p in bot["ports"] if p["containerPort"] == port]
    ready, alive = bot["readinessProbe"]["httpGet"], bot["livenessProbe"]["httpGet"]

    assert (ready["path"], alive["path"]) == ("/readyz", "/healthz")
    assert {ready["path"], alive["path"]} <= served_paths()
    assert ready["port"] == alive["port"] == named["name"]


def test_the_grace_period_covers_the_bots_shutdown(deployment: dict[str, Any]) -> None:
    assert pod(deployment)["terminationGracePeriodSeconds"] >= STOP_GRACE + 5


def test_the_pod_runs_as_the_images_user_without_privileges(deployment: dict[str, Any]) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    users = re.findall(r"^USER (\d+):(\d+)$", dockerfile, re.MULTILINE)
    uid, gid = (int(x) for x in users[-1])
    context = pod(deployment)["securityContext"]
    assert context["runAsNonRoot"] is True
    assert (context["runAsUser"], context["runAsGroup"]) == (uid, gid)
    bot = container(deployment)
    assert bot["securityContext"]["allowPrivilegeEscalation"] is False
    assert bot["securityContext"]["capabilities"]["drop"] == ["ALL"]
    # A read-only root needs a writable /tmp for anything that asks for a temporary file.
    assert bot["securityContext"]["readOnlyRootFilesystem"] is True
    assert {m["mountPath"] for m in bot["volumeMounts"]} == {"/tmp"}


def test_settings_with_secrets_come_from_a_secret(deployment: dict[str, Any]) -> None:
    bot = container(deployment)
    assert [source["secretRef"]["name"] for source in bot["envFrom"]] == ["hss-sync-bot"]
    plain = {e["name"] for e in bot["env"]}
    assert not {name for name in plain if SECRET_SETTINGS.search(name)}
