"""libvirt's configuration files (golden) and the --listen edit of /etc/default/libvirtd."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest
from goldens import check_golden
from told import tell

from fjord.engine.resource import Context
from fjord.host import libvirt_conf

GOLDEN = Path(__file__).parent / "golden" / "host"

# Debian 12's /etc/default/libvirtd (libvirt-daemon-system 9.0.0), its settings part.
DEBIAN_DEFAULTS = """\
# Customizations for the libvirtd.service systemd unit

# Default behaviour is for libvirtd.service to start on boot
# so that VM autostart can be performed. We then want it to
# shutdown again if nothing was started and rely on systemd
# socket activation to start it again when some client app
# connects.
#LIBVIRTD_ARGS="--timeout 120"

# If systemd socket activation is disabled, then the following
# can be used to listen on TCP/TLS sockets
#LIBVIRTD_ARGS="--listen"
"""


def golden(name: str, text: str) -> None:
    check_golden(GOLDEN, name, text)


def test_client_conf_golden():
    text = libvirt_conf.render_client_conf()
    golden("libvirt.conf", text)
    assert 'uri_default = "lxc:///"' in text


def test_daemon_conf_golden():
    text = libvirt_conf.render_daemon_conf()
    golden("libvirtd.conf", text)
    assert "listen_tcp = 0\n" in text and "listen_tls = 0\n" in text


def test_debian_defaults_are_left_alone():
    assert libvirt_conf.drop_listen(DEBIAN_DEFAULTS) == DEBIAN_DEFAULTS


@pytest.mark.parametrize(("line", "expected"), [
    ('LIBVIRTD_ARGS="--listen"', 'LIBVIRTD_ARGS=""'),
    ('LIBVIRTD_ARGS="--timeout 120 --listen"', 'LIBVIRTD_ARGS="--timeout 120"'),
    ("LIBVIRTD_ARGS='-l --timeout 120'", 'LIBVIRTD_ARGS="--timeout 120"'),
    ('  LIBVIRTD_ARGS="--listen" # TCP for the old tools', '  LIBVIRTD_ARGS=""'),
])
def test_listen_is_removed(line: str, expected: str):
    edited = libvirt_conf.drop_listen(DEBIAN_DEFAULTS + line + "\n")
    assert edited == DEBIAN_DEFAULTS + libvirt_conf.EDIT_NOTE + expected + "\n"
    assert libvirt_conf.drop_listen(edited) == edited


def test_unparsable_line_is_left_for_the_operator():
    text = 'LIBVIRTD_ARGS="--listen\n'
    assert libvirt_conf.drop_listen(text) == text


@pytest.fixture
def ctx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Context:
    tell(monkeypatch, FJORD_STATE_DIR=str(tmp_path / "state"))
    me = pwd.getpwuid(os.getuid())
    monkeypatch.setattr("fjord.host.files.pwd.getpwnam", lambda name: me)
    return Context(desired=None)  # type: ignore[arg-type]


def test_edited_file(tmp_path: Path, ctx: Context):
    _, _, defaults = libvirt_conf.files(tmp_path)
    assert defaults.changes(ctx) == [] and defaults.content is None  # not installed yet
    defaults.path.parent.mkdir(parents=True)
    defaults.path.write_text(DEBIAN_DEFAULTS + 'LIBVIRTD_ARGS="--listen"\n')
    os.chmod(defaults.path, 0o640)
    (change,) = defaults.changes(ctx)
    assert change.action == "update" and '-LIBVIRTD_ARGS="--listen"' in (change.diff or "")
    change.run(ctx)
    assert defaults.changes(ctx) == []
    assert defaults.path.stat().st_mode & 0o777 == 0o640  # the package's mode is kept
    assert defaults.content == defaults.path.read_bytes()


def test_files_are_under_root(tmp_path: Path):
    paths = [f.path for f in libvirt_conf.files(tmp_path)]
    assert paths == [tmp_path / "etc/libvirt/libvirt.conf", tmp_path / "etc/libvirt/libvirtd.conf",
                     tmp_path / "etc/default/libvirtd"]
