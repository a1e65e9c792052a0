"""Settings → Model, "A server": address and model in settings, the token in the keyring,
the next conversation built for the remote backend, and a connection test that says
what a real `duetto serve` (tiny Moshi) runs, or why it refused.

The system keyring is an edge this machine lacks (no Secret Service): MemoryKeyring
stands in for it, and says so; the machine's own "no keyring" case is tested as it is.
"""

from __future__ import annotations

import json

import keyring
import pytest
import tiny_models
from duplex_server import ServerThread
from keyring.backend import KeyringBackend
from keyring.backends import fail

from app.config import personas as persona_store
from app.config import server_token
from app.config import settings as settings_store
from app.config.settings import Settings
from app.model.contract import ModelSource, Quant
from app.model.moshi.backend import MoshiBackend
from app.ui.options import LaunchOverrides, build_options
from app.ui.pages.model import ModelPage
from app.ui.tasks import TaskGroup

moshi_tiny_factory = tiny_models.moshi_tiny_factory


class MemoryKeyring(KeyringBackend):
    """A fake system keyring, in memory (the test machine has none)."""

    priority = 1

    def __init__(self) -> None:
        super().__init__()
        self.kept: dict[tuple[str, str], str] = {}

    def get_password(self, service, username):
        return self.kept.get((service, username))

    def set_password(self, service, username, password):
        self.kept[(service, username)] = password

    def delete_password(self, service, username):
        self.kept.pop((service, username), None)


@pytest.fixture
def ring():
    before = keyring.get_keyring()
    memory = MemoryKeyring()
    keyring.set_keyring(memory)
    yield memory
    keyring.set_keyring(before)
    server_token._this_run.clear()


@pytest.fixture
def no_ring():
    before = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())
    yield
    keyring.set_keyring(before)
    server_token._this_run.clear()


def test_the_token_goes_to_the_keyring_not_to_settings(ring, tmp_path):
    kept = server_token.save("ws://box:8099", "s3cret")
    assert kept.lasting and "system keyring" in kept.note
    assert ring.kept[("duetto", "ws://box:8099")] == "s3cret"
    assert server_token.load("ws://box:8099") == "s3cret"
    settings = Settings()
    settings.model.use_server = True
    settings.model.server_address = "ws://box:8099"
    path = settings_store.save(settings, tmp_path / "settings.json")
    assert "s3cret" not in path.read_text()
    assert json.loads(path.read_text())["model"]["server_address"] == "ws://box:8099"
    options = build_options(settings, persona_store.load_all().get("cooking-helper"),
                            LaunchOverrides(), camera_on=False)
    assert options.family == "remote"
    assert options.backend_options == {"address": "ws://box:8099", "model": "",
                                       "token": "s3cret"}
    # `--model DIR` on the command line still wins over the server.
    options = build_options(settings, persona_store.load_all().get("cooking-helper"),
                            LaunchOverrides(model_dir=tmp_path), camera_on=False)
    assert options.family != "remote" and options.model.local_dir == tmp_path


def test_without_a_keyring_the_token_lasts_this_run_and_says_so(no_ring):
    kept = server_token.save("ws://box:8099", "s3cret")
    assert not kept.lasting
    assert "no system keyring" in kept.note and "only until Duetto closes" in kept.note
    assert server_token.load("ws://box:8099") == "s3cret"


@pytest.fixture(scope="module")
def moshi(moshi_tiny_factory):
    backend = MoshiBackend(device="cpu")
    backend.load(ModelSource(local_dir=moshi_tiny_factory()), Quant.BF16, lambda *_: None)
    yield backend
    backend.close()


@pytest.mark.slow
def test_the_connection_test_says_what_the_server_runs_or_why_not(qtbot, ring, moshi):
    settings = Settings()
    tasks = TaskGroup()
    page = ModelPage(settings, None, tasks)
    qtbot.addWidget(page)
    with ServerThread(moshi, token="right") as server:
        page.server_radio.setChecked(True)
        assert page.server.isEnabled() and not page.folder.isEnabled()
        page.server.address.setText(server.address)
        page.server.token.setText("wrong")
        page.server.test()
        qtbot.waitUntil(lambda: "Not connected" in page.server.status.text(), timeout=20000)
        assert "refused the token" in page.server.status.text()
        page.server.token.setText("right")
        page.server.test()
        qtbot.waitUntil(lambda: "Connected:" in page.server.status.text(), timeout=20000)
        assert "moshi" in page.server.status.text()
        assert "native duplex" in page.server.status.text()
    result = Settings()
    page.apply_to(result)
    assert result.model.use_server and result.model.server_address == server.address
    assert server_token.load(server.address) == "right"
    assert "system keyring" in page.token_note.text()
    tasks.shutdown()


def test_the_side_panel_shows_the_network_only_for_a_server(qtbot):
    from app.ui.widgets.side_panel import SidePanel

    panel = SidePanel()
    qtbot.addWidget(panel)
    panel.show()
    assert not panel.network_value.isVisible()
    panel.set_network({"handshake_ms": 115.0, "hop_median_ms": 2.4, "hop_p90_ms": 6.8})
    assert panel.network_value.isVisible() and panel.network_value.text() == "2 ms"
    assert "p90 7 ms" in panel.network_value.toolTip()
    panel.set_network(None)  # a local model
    assert not panel.network_value.isVisible()


def test_remote_backend_network_figures(moshi):
    import numpy as np

    from app.model.contract import Control, Persona, Unit
    from app.model.remote.backend import RemoteBackend

    with ServerThread(moshi) as server:
        remote = RemoteBackend(address=server.address)
        remote.load(ModelSource(), Quant.BF16, lambda *_: None)
        remote.start(Persona("t", ""))
        assert set(remote.network_figures()) == {"handshake_ms"}
        for i in range(5):
            list(remote.step(Unit(i, i * 0.08, 0.08, 16000, np.zeros(1280, np.float32)),
                             Control()))
        figures = remote.network_figures()
        remote.close()
    assert len(remote.hops_ms) == 5
    assert 0 <= figures["hop_median_ms"] <= figures["hop_p90_ms"] < 1000
