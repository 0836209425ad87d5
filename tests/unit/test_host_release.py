"""host.apt.suite left out is the release the host runs, read from its os-release (issue
15): a trixie server gets trixie and trixie-security, a bookworm one bookworm; a suite
named in the file wins; a release fjord does not know (Debian testing/unstable naming the
next one, another distribution, no file) is never guessed: the APT layer stops with a
problem at host.apt.suite (exit 2) before anything is planned, while `validate` (a file
that may be for another server) only notes it."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest
from hosts import BOOKWORM, OS_RELEASES, TRIXIE, on

from fjord.config.desired import NOTHING, HostRelease, Known, load, resolve
from fjord.config.loader import parse
from fjord.config.problems import ConfigError
from fjord.config.validate import check
from fjord.engine.plan import make_plan
from fjord.engine.resource import Context
from fjord.environment import OS_RELEASE, Environment
from fjord.host import apt
from fjord.state import known

ROOT = Path(__file__).resolve().parents[2]
LAB = str(ROOT / "examples" / "lab.yaml")
HOST = """\
host:
  fqdn: h.example.net
  ipv4: {address: 192.0.2.5/24, gateway: 192.0.2.1}
  dns: [192.0.2.53]
  capacity: {memory: 8GiB, cpus: 2}
"""


def desired(apt_section: str = "", release: HostRelease | None = BOOKWORM,
            host_known: Known | None = None):
    doc = parse(HOST + apt_section)
    return resolve(doc, check(doc), host_known if host_known is not None else on(release))


def sources(d) -> str:
    (debian, *_) = apt.resources(d, Path("/nonexistent-root"))
    assert isinstance(debian, apt.SourcesFile)
    assert debian.content is not None
    return debian.content.decode()


def read(name: str) -> HostRelease:
    return known.host_release([OS_RELEASES / name])


# -- reading os-release ----------------------------------------------------------------


@pytest.mark.parametrize(("name", "codename"), [("bookworm", "bookworm"), ("trixie", "trixie")])
def test_a_debian_release_is_its_version_codename(name: str, codename: str):
    release = read(name)
    assert release.codename == codename
    assert release.said == f"VERSION_CODENAME={codename}"
    assert release.path == str(OS_RELEASES / name)


@pytest.mark.parametrize(("name", "said"), [
    # Debian testing/unstable after trixie: the next release's codename, not supported yet
    ("forky-sid", 'ID=debian, VERSION_CODENAME=forky, PRETTY_NAME="Debian GNU/Linux forky/sid"'),
    # an older testing/unstable: no codename, "sid" only in PRETTY_NAME: not guessed
    ("sid-no-codename", 'ID=debian, no VERSION_CODENAME, PRETTY_NAME="Debian GNU/Linux '
                        'trixie/sid"'),
    # another distribution, even one "like" Debian
    ("ubuntu", 'ID=ubuntu, VERSION_CODENAME=noble, PRETTY_NAME="Ubuntu 24.04.1 LTS"'),
])
def test_a_release_fjord_does_not_know_is_not_guessed(name: str, said: str):
    release = read(name)
    assert release.codename is None
    assert release.said == said


def test_a_derivative_naming_a_debian_codename_is_not_debian(tmp_path: Path):
    path = tmp_path / "os-release"
    path.write_text("ID=raspbian\nID_LIKE=debian\nVERSION_CODENAME=bookworm\n")
    assert known.host_release([path]).codename is None


def test_etc_takes_precedence_then_usr_lib_then_nothing(tmp_path: Path):
    etc, usr = tmp_path / "etc-os-release", tmp_path / "usr-os-release"
    usr.write_text("ID=debian\nVERSION_CODENAME=trixie\n")
    assert known.host_release([etc, usr]).codename == "trixie"     # no /etc/os-release
    etc.write_text("ID=debian\nVERSION_CODENAME=bookworm\n")
    assert known.host_release([etc, usr]).codename == "bookworm"   # /etc's wins
    missing = known.host_release([tmp_path / "a", tmp_path / "b"])
    assert (missing.codename, missing.said, missing.path) == (None, "no such file",
                                                              str(tmp_path / "a"))


def test_quoting_comments_and_junk_lines(tmp_path: Path):
    path = tmp_path / "os-release"
    path.write_text("# a comment\n\nID='debian'\nnot an assignment\nVERSION_CODENAME=\"trixie\"\n"
                    'PRETTY_NAME="unbalanced\n')
    assert known.host_release([path]).codename == "trixie"
    assert known.parse_os_release('A="x y"\nB=\'z\'\n=no key\n') == {"A": "x y", "B": "z"}


def test_the_environment_says_where_and_unit_tests_pin_bookworm(monkeypatch):
    env = Environment.from_system({OS_RELEASE: "/srv/os-release"})
    assert env.os_release == (Path("/srv/os-release"),)
    assert Environment.from_system({}).os_release == (Path("/etc/os-release"),
                                                      Path("/usr/lib/os-release"))
    # tests/unit/conftest.py: whatever this machine runs, the unit tests' host is bookworm
    assert known.known().host_release == HostRelease(
        "bookworm", "VERSION_CODENAME=bookworm", str(OS_RELEASES / "bookworm"))


# -- resolving host.apt.suite ----------------------------------------------------------


def test_a_trixie_host_gets_trixie_sources_and_trixie_security():
    d = desired(release=TRIXIE)
    assert d.host.apt.suite == "trixie" and d.apt_suite_from == TRIXIE
    text = sources(d)
    assert "Suites: trixie trixie-updates\n" in text
    assert "URIs: http://security.debian.org/debian-security\nSuites: trixie-security\n" in text
    assert "bookworm" not in text


def test_a_bookworm_host_gets_bookworm_sources():
    d = desired(release=BOOKWORM)
    assert d.host.apt.suite == "bookworm"
    text = sources(d)
    assert "Suites: bookworm bookworm-updates\n" in text and "Suites: bookworm-security\n" in text
    assert "trixie" not in text


@pytest.mark.parametrize("release", [TRIXIE, None, HostRelease(None, "ID=ubuntu")])
def test_a_suite_named_in_the_file_wins(release: HostRelease | None):
    d = desired("  apt: {suite: bookworm}\n", host_known=Known(host_release=release))
    assert d.host.apt.suite == "bookworm" and d.apt_suite_from is None
    assert d.suite_unknown() is None
    assert "Suites: bookworm bookworm-updates\n" in sources(d)
    (debian, *_) = apt.resources(d, Path("/nonexistent-root"))
    assert isinstance(debian, apt.SourcesFile)
    assert debian.reason == "the Debian mirror and security archive"  # no note: the file's


def test_the_plan_says_the_suite_came_from_the_host(tmp_path: Path, monkeypatch):
    me = pwd.getpwuid(os.getuid())
    monkeypatch.setattr("fjord.host.files.pwd.getpwnam", lambda name: me)
    release = HostRelease("trixie", "VERSION_CODENAME=trixie", "/etc/os-release")
    d = desired(release=release)
    ctx = Context(d)
    (debian, *_) = apt.resources(d, tmp_path)
    (change,) = debian.changes(ctx)
    assert change.detail.endswith(
        "(the Debian mirror and security archive, suite trixie: the host's release "
        "(/etc/os-release: VERSION_CODENAME=trixie), host.apt.suite not given)")
    change.run(ctx)
    assert debian.changes(ctx) == []
    assert "suite trixie: the host's release (/etc/os-release: VERSION_CODENAME=trixie)" \
        in debian.unchanged_reason(ctx)                                   # plan -v
    assert make_plan([debian], ctx).changes == []


@pytest.mark.parametrize("name", ["forky-sid", "sid-no-codename", "ubuntu"])
def test_an_unknown_release_stops_the_apt_layer_with_a_problem_at_the_key(name: str):
    release = read(name)
    d = desired(release=release)               # the file itself is valid: load succeeds
    assert d.host.apt.suite is None and d.apt_suite_from is None
    with pytest.raises(ConfigError) as caught:
        apt.resources(d, Path("/nonexistent-root"))
    (problem,) = caught.value.problems
    assert problem.path == ("host", "apt", "suite")
    assert caught.value.exit_code == 2
    text = str(caught.value)
    assert text.startswith("host.apt.suite: not given, and the host's release is not one "
                           f"fjord knows ({OS_RELEASES / name}: {release.said})")
    assert "name the release this server runs (bookworm, trixie, sid or unstable)" in text
    assert "host.apt.manage: false" in text


def test_an_unknown_release_needs_no_suite_when_apt_is_not_managed():
    d = desired("  apt: {manage: false}\n", release=HostRelease(None, "ID=ubuntu"))
    assert d.suite_unknown() is None and apt.resources(d, Path("/nonexistent-root")) == []


def test_nothing_known_resolves_no_suite_and_the_apt_layer_refuses():
    """The pure load (a library caller, a test) has read no host: nothing is guessed,
    bookworm no more than trixie."""
    d = load(LAB)
    assert NOTHING.host_release is None
    assert d.host.apt.suite is None and d.host_release is None
    with pytest.raises(ConfigError, match=r"^host\.apt\.suite: not given, and the host's "
                       r"release was not read: fjord does not guess"):
        apt.resources(d)


# -- the command line ------------------------------------------------------------------


def fjord(*args: str, release: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FJORD_STATE_DIR": "/nonexistent-fjord-state",
           OS_RELEASE: str(OS_RELEASES / release)}
    return subprocess.run([sys.executable, "-m", "fjord", *args], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=60, check=False)


def test_validate_on_a_machine_of_another_release_notes_it_and_passes():
    out = fjord("validate", "-c", "examples/lab.yaml", release="ubuntu")
    assert out.returncode == 0, out.stderr
    assert "valid (1 container)" in out.stdout
    assert out.stderr.startswith("note: host.apt.suite: not given, and the host's release is "
                                 "not one fjord knows")
    assert "plan and apply on this machine stop there" in out.stderr


def test_validate_json_names_the_suite_taken():
    out = fjord("validate", "--json", "-c", "examples/lab.yaml", release="trixie")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["apt_suite"] == "trixie" and out.stderr == ""


def test_plan_on_an_unknown_release_is_exit_2_and_changes_nothing():
    out = fjord("plan", "--only", "host", "-c", "examples/lab.yaml", release="forky-sid")
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("host.apt.suite: not given, and the host's release is not "
                                 "one fjord knows")
    assert "VERSION_CODENAME=forky" in out.stderr and "nothing was changed" in out.stderr
    assert "Traceback" not in out.stderr
