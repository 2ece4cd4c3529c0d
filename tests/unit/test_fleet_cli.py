"""The operator's commands stay out of the device's way."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agent.errors import ConfigurationError
from agent.fleet.connection import broker_settings

REPO_ROOT = Path(__file__).resolve().parents[2]


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60)


def test_device_commands_never_import_the_operator_side() -> None:
    """Building the agent's CLI and daemon imports neither agent.fleet nor matplotlib, so
    a device installed without the [operator] extra runs as before. (rich is left out of
    the check: structlog imports it by itself whenever it is installed.)"""
    result = _python("""
        import sys
        import agent.cli, agent.daemon, agent.reporting.mqtt
        agent.cli._parser().parse_args(["status"])
        loaded = sorted(m for m in sys.modules if m.split(".")[0] == "matplotlib"
                        or m.startswith("agent.fleet"))
        print(loaded)
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_fleet_without_the_operator_extra_says_what_to_install() -> None:
    """Without rich installed, `fleet watch` exits 2 and names the extra to install."""
    result = _python("""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "rich":
                    raise ModuleNotFoundError("No module named 'rich'", name="rich")
        sys.meta_path.insert(0, Block())
        from agent.cli import main
        sys.exit(main(["fleet", "watch", "--endpoint", "127.0.0.1"]))
    """)
    assert result.returncode == 2, result.stderr
    assert "l4v-edge-agent[operator]" in result.stderr


def test_help_lists_fleet() -> None:
    """`python -m agent --help` shows the fleet command."""
    result = subprocess.run([sys.executable, "-m", "agent", "--help"], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "fleet" in result.stdout


@pytest.mark.parametrize(
    ("topics", "problem"),
    [
        ({"status": "fleet/status-{thingName}"}, "topics.status: {thingName} must be a whole topic level"),
        ({"health": "fleet/#/health"}, "without MQTT wildcards"),
    ],
)
def test_topic_layouts_the_watcher_cannot_subscribe_to_are_refused(
    tmp_path: Path, topics: dict[str, str], problem: str
) -> None:
    """--config with the fleet's topics: a thing name that is not a whole level (no `+`
    filter can match it) or a wildcard is a ConfigurationError naming the topic."""
    config = tmp_path / "agent.json"
    import json

    config.write_text(json.dumps({"reporting": {"topics": topics}}))
    with pytest.raises(ConfigurationError) as caught:
        broker_settings(endpoint="example.com", port=None, cert=None, key=None, ca=None,
                        region="eu-west-1", client_id=None, topics_file=config, env={})
    assert problem in caught.value.message


def test_sigv4_is_chosen_without_a_certificate_and_filters_follow_the_topics(tmp_path: Path) -> None:
    """No --cert: SigV4 over WebSocket on port 443; the filters put `+` for the thing."""
    config = tmp_path / "agent.json"
    config.write_text('{"reporting": {"topics": {"status": "plant-7/{thingName}/l4v/status"}}}')
    settings = broker_settings(endpoint="abc-ats.iot.eu-west-1.amazonaws.com", port=None, cert=None,
                               key=None, ca=None, region=None, client_id=None, topics_file=config,
                               env={"AWS_REGION": "eu-west-1"})
    assert (settings.auth, settings.port, settings.region) == ("sigv4", 443, "eu-west-1")
    assert settings.filters() == {
        "platform": "l4v-edge/+/platform",
        "status": "plant-7/+/l4v/status",
        "health": "l4v-edge/+/health",
    }


def test_sigv4_websocket_client_is_built_with_the_shared_options(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SigV4 variant hands the transport's common options (reconnect, callbacks,
    session) to awsiot's WebSocket builder, which accepts them; nothing connects yet."""
    import threading

    from agent.fleet.connection import SigV4WebSocketTransport
    from agent.reporting.mqtt import DirectMqttConfig

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    transport = SigV4WebSocketTransport(
        DirectMqttConfig(endpoint="abc-ats.iot.eu-west-1.amazonaws.com", client_id="op",
                         cert_path="", key_path="", ca_path="", port=443, session_expiry=0),
        "eu-west-1",
    )
    client = transport._build_client(1, threading.Event())
    assert type(client).__name__ == "Client"
    assert not transport.is_connected()
