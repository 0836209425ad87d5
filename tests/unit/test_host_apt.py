"""APT sources, keys and pins: rendering (golden files), pin decisions, the host's other
sources, and the files + apt-get update cycle under a temporary root."""

from __future__ import annotations

import os
import pwd
from pathlib import Path
from typing import Any

import pytest
from goldens import check_golden
from hosts import ON_BOOKWORM
from told import tell

from fjord.config.desired import Desired, load
from fjord.config.models import Apt, AptPin, AptRepository
from fjord.engine.plan import make_plan
from fjord.engine.resource import Context
from fjord.errors import FjordError
from fjord.host import apt

GOLDEN = Path(__file__).parent / "golden" / "host"
KEY = "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmQINBGTestKey\n-----END PGP PUBLIC KEY BLOCK-----"


def golden(name: str, text: str) -> None:
    check_golden(GOLDEN, name, text)


def desired_with(**apt_settings: Any) -> Desired:
    d = load("examples/lab.yaml", ON_BOOKWORM)
    host = d.config.host.model_copy(update={"apt": Apt(**{"suite": "bookworm",
                                                          **apt_settings})})
    return Desired(d.config.model_copy(update={"host": host}), d.containers, d.allocations)


def repo(name: str = "puppet", **kw: Any) -> AptRepository:
    return AptRepository(name=name, uris=kw.get("uris", ["https://apt.example.org/debian"]),
                         suites=kw.get("suites", ["bookworm"]),
                         components=kw.get("components", ["puppet8"]), key=kw.get("key", KEY))


# -- rendering -------------------------------------------------------------------------


def test_seed_sources_and_pins_golden():
    d = load("examples/seed.yaml", ON_BOOKWORM)
    golden("fjord-debian.seed.sources", apt.render_sources(apt.debian_stanzas(d.host.apt)))
    text = apt.render_preferences(d.host.apt)
    assert text is not None
    golden("preferences.seed", text)


def test_default_sources_golden():
    d = load("examples/lab.yaml", ON_BOOKWORM)
    golden("fjord-debian.default.sources", apt.render_sources(apt.debian_stanzas(d.host.apt)))
    assert apt.render_preferences(d.host.apt) is None


def test_backports_and_components_golden():
    settings = Apt(suite="bookworm", components=["main", "contrib", "non-free-firmware"],
                   backports=True, mirror="http://ftp.de.debian.org/debian/")
    golden("fjord-debian.backports.sources", apt.render_sources(apt.debian_stanzas(settings)))


def test_repository_sources_golden():
    golden("fjord-puppet.sources", apt.render_sources(apt.repository_stanzas(repo())))
    flat = repo("local", uris=["file:///srv/repo"], suites=["./"], components=[])
    text = apt.render_sources(apt.repository_stanzas(flat))
    assert "Suites: ./\n" in text and "Components" not in text


def test_rolling_suite_has_no_security_updates_or_backports():
    stanzas = apt.debian_stanzas(Apt(suite="sid", backports=True))
    assert [s.suites for s in stanzas] == [("sid",)]


def test_security_comes_from_the_security_archive():
    (_, security) = apt.debian_stanzas(Apt(suite="bookworm", updates=False,
                                           mirror="http://mirror.example/debian"))
    assert security.uris == (apt.SECURITY_MIRROR,) and security.suites == ("bookworm-security",)


# -- pins ------------------------------------------------------------------------------


@pytest.mark.parametrize(("release", "expected"), [
    ("testing", "a=testing"), ("unstable", "a=unstable"),
    ("stable-backports", "a=stable-backports"),
    ("bookworm", "n=bookworm"), ("bookworm-backports", "n=bookworm-backports"), ("sid", "n=sid"),
    ("trixie", "n=trixie"),
])
def test_pin_release_prefers_codenames(release: str, expected: str):
    assert apt.pin_release(release) == expected


def test_unpinned_extra_suite_gets_a_low_pin():
    pins = apt.effective_pins(Apt(extra_suites=["testing"],
                                  pins=[AptPin(packages=["lxc"], release="testing", priority=600)]))
    assert [(p.packages, p.release, p.priority) for p, _ in pins] == [
        (["lxc"], "testing", 600), (["*"], "testing", apt.EXTRA_SUITE_PRIORITY)]


def test_pinned_extra_suite_keeps_its_declared_pin():
    d = load("examples/seed.yaml", ON_BOOKWORM)
    pins = apt.effective_pins(d.host.apt)
    assert [(p.release, p.priority) for p, _ in pins] == [
        ("bookworm", 500), ("testing", 100), ("testing", 600)]
    text = apt.render_preferences(d.host.apt) or ""
    assert "Package: lxc\nPin: release a=testing\nPin-Priority: 600" in text
    assert "Package: *\nPin: release n=bookworm\nPin-Priority: 500" in text


# -- the host's other sources ----------------------------------------------------------

DEBIAN_SOURCES = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""


def test_parse_deb822_as_debian_images_ship_it():
    entries = apt.parse_deb822(DEBIAN_SOURCES, "/etc/apt/sources.list.d/debian.sources")
    assert [(e.uri, e.suite) for e in entries] == [
        ("http://deb.debian.org/debian", "bookworm"),
        ("http://deb.debian.org/debian", "bookworm-updates"),
        ("http://deb.debian.org/debian-security", "bookworm-security")]
    assert entries[0].origin.endswith("debian.sources:1")
    assert entries[2].origin.endswith("debian.sources:8")


def test_parse_deb822_skips_disabled_and_source_only():
    text = ("Types: deb-src\nURIs: http://x/debian\nSuites: bookworm\n\n"
            "Enabled: no\nTypes: deb\nURIs: http://y/debian\nSuites: bookworm\n\n"
            "Types: deb\nURIs: http://z/debian/\nSuites: bookworm\nSigned-By:\n"
            " -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n -----END PGP PUBLIC KEY BLOCK-----\n")
    (entry,) = apt.parse_deb822(text, "f")
    assert entry.uri == "http://z/debian" and entry.signed_by is not None
    assert entry.signed_by.startswith("\n-----BEGIN")


def test_parse_one_line_with_options_and_comments():
    text = ("# deb http://old/debian bookworm main\n"
            "deb [arch=amd64 signed-by=/etc/apt/keyrings/x.gpg] http://deb.debian.org/debian/ "
            "bookworm main contrib # trailing\n"
            "deb-src http://deb.debian.org/debian bookworm main\n"
            "deb [ trusted=yes ] file:///srv/repo ./\n")
    a, b = apt.parse_one_line(text, "/etc/apt/sources.list")
    assert (a.uri, a.suite, a.components, a.signed_by, a.origin) == (
        "http://deb.debian.org/debian", "bookworm", ("main", "contrib"),
        "/etc/apt/keyrings/x.gpg", "/etc/apt/sources.list:2")
    assert (b.uri, b.suite, b.signed_by) == ("file:///srv/repo", "./", None)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def ctx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Context:
    tell(monkeypatch, FJORD_STATE_DIR=str(tmp_path / "state"))
    # Files are written as the test's own user (fjord writes them as root).
    me = pwd.getpwuid(os.getuid())
    monkeypatch.setattr("fjord.host.files.pwd.getpwnam", lambda name: me)
    return Context(desired=None)  # type: ignore[arg-type]


def debian_file(root: Path) -> apt.SourcesFile:
    (resource, *_) = apt.resources(load("examples/lab.yaml", ON_BOOKWORM), root)
    assert isinstance(resource, apt.SourcesFile)
    return resource


def test_duplicate_in_sources_list_is_a_warning(tmp_path: Path, ctx: Context):
    write(tmp_path / "etc/apt/sources.list", "deb http://deb.debian.org/debian bookworm main\n")
    write(tmp_path / "etc/apt/sources.list.d/debian.sources", DEBIAN_SOURCES)
    (change,) = debian_file(tmp_path).changes(ctx)
    assert change.action == "create"
    # one warning per entry, whatever its suites; the other security archive is not one
    assert len(ctx.warnings) == 2
    assert ctx.warnings[0].startswith("/etc/apt/sources.list:1 also lists "
                                      "http://deb.debian.org/debian bookworm: ")
    assert ctx.warnings[1].startswith("/etc/apt/sources.list.d/debian.sources:1 also lists "
                                      "http://deb.debian.org/debian bookworm bookworm-updates: ")


def test_conflicting_signed_by_stops_the_plan(tmp_path: Path, ctx: Context):
    write(tmp_path / "etc/apt/sources.list.d/mirror.list",
          "deb [signed-by=/etc/apt/keyrings/other.gpg] http://deb.debian.org/debian "
          "bookworm main\n")
    with pytest.raises(FjordError, match="conflicting Signed-By") as err:
        debian_file(tmp_path).changes(ctx)
    assert "/etc/apt/sources.list.d/mirror.list:1" in err.value.message
    assert err.value.hint and "manage: false" in err.value.hint


def test_own_files_and_unrelated_files_are_ignored(tmp_path: Path, ctx: Context):
    write(tmp_path / "etc/apt/sources.list.d/fjord-debian.sources", "garbage")
    write(tmp_path / "etc/apt/sources.list.d/nodesource.sources.disabled-by-farm", DEBIAN_SOURCES)
    debian_file(tmp_path).changes(ctx)
    assert ctx.warnings == []


# -- the resources, applied under a temporary root --------------------------------------


class FakePackages:
    name = "fake"

    def __init__(self) -> None:
        self.updates = 0

    def update(self) -> None:
        self.updates += 1


def converge(resources: list[Any], ctx: Context) -> list[str]:
    from fjord.engine.apply import apply

    class Quiet:
        def started(self, change: Any) -> None: ...
        def finished(self, change: Any, seconds: float) -> None: ...
        def failed(self, change: Any, error: BaseException) -> None: ...

    return [f"{c.resource}: {c.detail}" for c in apply(resources, ctx, Quiet())]


def test_files_then_one_update_then_nothing(tmp_path: Path, ctx: Context):
    pm = FakePackages()
    ctx.drivers["package-manager"] = pm
    d = desired_with(extra_suites=["testing"], repositories=[repo()])
    done = converge(apt.resources(d, tmp_path), ctx)
    assert [line.split(":")[0] for line in done] == [
        f"file {tmp_path}/etc/apt/sources.list.d/fjord-debian.sources",
        f"file {tmp_path}/etc/apt/keyrings/puppet.asc",
        f"file {tmp_path}/etc/apt/sources.list.d/fjord-puppet.sources",
        f"file {tmp_path}/etc/apt/preferences.d/fjord",
        "apt-update lists"]
    assert pm.updates == 1
    assert (tmp_path / "etc/apt/keyrings/puppet.asc").read_text() == KEY + "\n"
    assert "Signed-By: /etc/apt/keyrings/puppet.asc\n" in \
        (tmp_path / "etc/apt/sources.list.d/fjord-puppet.sources").read_text()
    assert make_plan(apt.resources(d, tmp_path), ctx).empty

    # A pin alone needs no update; a new source does.
    pinned = desired_with(extra_suites=["testing"], repositories=[repo()],
                          pins=[AptPin(release="testing", priority=50)])
    assert converge(apt.resources(pinned, tmp_path), ctx) == [
        f"file {tmp_path}/etc/apt/preferences.d/fjord: rewrite {tmp_path}/etc/apt/preferences.d/"
        "fjord (APT pins)"]
    assert pm.updates == 1

    # The repository goes away: its file and key are removed, and the lists refreshed.
    bare = desired_with(extra_suites=["testing"], pins=[AptPin(release="testing", priority=50)])
    done = converge(apt.resources(bare, tmp_path), ctx)
    assert sorted(line.split(":")[0] for line in done) == sorted([
        f"file {tmp_path}/etc/apt/sources.list.d/fjord-puppet.sources",
        f"file {tmp_path}/etc/apt/keyrings/puppet.asc", "apt-update lists"])
    assert not (tmp_path / "etc/apt/keyrings/puppet.asc").exists()
    assert pm.updates == 2
    assert make_plan(apt.resources(bare, tmp_path), ctx).empty


def test_update_that_fails_is_retried(tmp_path: Path, ctx: Context):
    class Broken(FakePackages):
        def update(self) -> None:
            raise FjordError("mirror unreachable")

    ctx.drivers["package-manager"] = Broken()
    d = load("examples/lab.yaml", ON_BOOKWORM)
    with pytest.raises(FjordError, match="mirror unreachable"):
        converge(apt.resources(d, tmp_path), ctx)
    ctx.drivers["package-manager"] = FakePackages()
    plan = make_plan(apt.resources(d, tmp_path), ctx)
    assert [c.resource for c in plan.changes] == ["apt-update lists"]


def test_pins_removed_when_none_declared(tmp_path: Path, ctx: Context):
    prefs = write(tmp_path / apt.PREFERENCES, "old\n")
    d = load("examples/lab.yaml", ON_BOOKWORM)
    plan = make_plan(apt.resources(d, tmp_path), ctx)
    assert any(c.resource == f"file {prefs}" and c.action == "delete" for c in plan.changes)


def test_unmanaged_apt_has_no_resources(tmp_path: Path):
    assert apt.resources(desired_with(manage=False), tmp_path) == []


@pytest.mark.parametrize("key", ["mQINBGTestKey", KEY.replace("Key", "K\u0435y"),
                                 KEY.rstrip().rsplit("\n", 1)[0]])
def test_key_must_be_armoured_and_is_checked_by_validate(key: str):
    """Refused by the configuration's own checks (validate, exit 2), not first by plan."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="armour"):
        repo(key=key)


def test_repository_cannot_take_the_mirrors_file_name(tmp_path: Path):
    with pytest.raises(FjordError, match="debian"):
        apt.resources(desired_with(repositories=[repo("debian")]), tmp_path)
