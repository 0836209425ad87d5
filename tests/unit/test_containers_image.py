"""Images without building one: keys, specs, the mmdebstrap command, progress from a
captured build, the cache's bookkeeping, failure messages, streaming and signals."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from fjord.config.desired import load
from fjord.containers import image as im
from fjord.containers.image import ImageCache, make_spec, prune, spec_for
from fjord.containers.progress import STAGES, BuildProgress
from fjord.errors import CommandError, FjordError
from fjord.runner import Terminated, sigterm_raises, stream

GOLDEN = Path(__file__).parent / "golden" / "containers"
MIRROR = "http://deb.debian.org/debian"


def spec(**kw):
    args = {"suite": "bookworm", "mirror": MIRROR, "architecture": "amd64"}
    args.update(kw)
    return make_spec(**args)


# --- keys ---------------------------------------------------------------------------


def test_same_inputs_same_key():
    a = spec(packages=["vim", "less"])
    b = spec(packages=["less", "vim", "less"])
    assert a == b and a.key == b.key
    assert a.key.startswith("bookworm-amd64-") and len(a.key) == len("bookworm-amd64-") + 16


def test_base_packages_are_always_in():
    assert set(im.BASE_PACKAGES) <= set(spec().packages)
    assert spec(packages=["openssh-server"]).key == spec().key


@pytest.mark.parametrize("change", [
    {"suite": "trixie"},
    {"mirror": "http://ftp.de.debian.org/debian"},
    {"architecture": "arm64"},
    {"packages": ["vim"]},
    {"locales": ["en_US.UTF-8"]},
    {"components": ["main", "contrib"]},
    {"security": False},
    {"updates": False},
])
def test_any_input_change_makes_a_new_key(change):
    assert spec(**change).key != spec().key


def test_recipe_version_is_in_the_key(monkeypatch):
    before = spec().key
    monkeypatch.setattr(im, "RECIPE", im.RECIPE + 1)
    assert spec().key != before


def test_builtin_locales_need_no_generation():
    assert spec(locales=["C.UTF-8"]).key == spec().key
    assert spec(locales=["de_DE.UTF-8"]).locales == ("de_DE.UTF-8",)


def test_sources_follow_the_apt_settings():
    s = spec()
    assert s.sources == (f"deb {MIRROR} bookworm main", f"deb {MIRROR} bookworm-updates main",
                         "deb http://deb.debian.org/debian-security bookworm-security main")
    assert spec(suite="sid").sources == (f"deb {MIRROR} sid main",)
    other = spec(mirror="http://mirror.example.net/debian/")
    assert other.sources[0] == "deb http://mirror.example.net/debian bookworm main"
    assert other.sources[2].startswith("deb http://security.debian.org/debian-security ")


def test_spec_for_a_container(tmp_path):
    cfg = tmp_path / "f.yaml"
    cfg.write_text("""
version: 1
host:
  fqdn: oslo.example.net
  ipv4: {address: 192.0.2.5/27, gateway: 192.0.2.1}
  dns: [192.0.2.53]
containers:
  a: {packages: [nginx]}
  b: {packages: [nginx], puppet: {server: tromso.example.net}}
  c: {packages: [nginx], locale: en_US.UTF-8}
  d: {packages: [nginx], cpu_shares: 10, memory: 1GiB}
""")
    d = load(str(cfg))
    keys = {c.name: spec_for(c, d, architecture="amd64") for c in d.containers}
    assert "nginx" in keys["a"].packages and "puppet-agent" in keys["b"].packages
    assert keys["c"].locales == ("en_US.UTF-8",)
    assert keys["a"].key == keys["d"].key  # limits are not the image's business
    assert len({keys[n].key for n in "abc"}) == 3


def test_puppet_package_by_suite():
    assert im.puppet_packages("bullseye") == ("puppet",)
    assert im.puppet_packages("bookworm") == ("puppet-agent",)
    assert im.puppet_packages("trixie") == ("puppet-agent",)


# --- the command ---------------------------------------------------------------------


def test_mmdebstrap_runs_in_a_private_mount_namespace_without_a_shell(tmp_path):
    argv = im.mmdebstrap_argv(spec(packages=["vim"]), tmp_path / "rootfs")
    assert argv[:5] == ["unshare", "--mount", "--propagation", "private", "--"]
    assert argv[5] == "mmdebstrap" and "--variant=minbase" in argv
    assert "--format=directory" in argv and "--architectures=amd64" in argv
    include = next(a for a in argv if a.startswith("--include="))
    assert "vim" in include and "systemd-sysv" in include
    s = spec(packages=["vim"])
    assert argv[-5:] == ["bookworm", str(tmp_path / "rootfs"), *s.sources]


# --- progress --------------------------------------------------------------------------


def test_progress_from_a_captured_build_is_monotonic_and_complete():
    p = BuildProgress()
    seen = []
    for line in (GOLDEN / "mmdebstrap-bookworm-verbose.log").read_text().splitlines():
        before = p.fraction
        if p.feed(line):
            seen.append(p.stage)
        assert p.fraction >= before
    assert p.fraction == 1.0 and p.stage == "done"
    assert [s for s, _ in itertools.groupby(seen)] == [name for _, name, _ in STAGES]


def test_progress_moves_within_a_stage():
    p = BuildProgress()
    p.feed("I: downloading packages with apt...")
    p.feed("0 upgraded, 4 newly installed, 0 to remove and 0 not upgraded.")
    start = p.fraction
    p.feed("Get:1 http://deb.debian.org/debian bookworm/main amd64 a amd64 1 [1 kB]")
    p.feed("Get:2 http://deb.debian.org/debian bookworm/main amd64 b amd64 1 [1 kB]")
    assert start < p.fraction < STAGES[2][2]


# --- the cache's bookkeeping ----------------------------------------------------------


def fake_image(cache: ImageCache, key: str, size: int = 1000) -> None:
    path = cache.path(key)
    (path / "rootfs/etc").mkdir(parents=True)
    (path / im.META).write_text(json.dumps({"key": key, "size": size, "created": time.time(),
                                            "inputs": {"suite": "bookworm"}}))


def test_get_is_cheap_and_ignores_unfinished_directories(tmp_path):
    cache = ImageCache(tmp_path)
    assert cache.get("k1") is None
    (tmp_path / "k1/rootfs").mkdir(parents=True)  # no meta.json: never finished
    assert cache.get("k1") is None
    fake_image(cache, "k2")
    img = cache.get("k2")
    assert img is not None and img.rootfs == tmp_path / "k2/rootfs" and img.size == 1000
    start = time.perf_counter()
    for _ in range(100):
        cache.get("k2")
    assert (time.perf_counter() - start) / 100 < 0.01


def test_cache_hit_does_not_build(tmp_path, monkeypatch):
    cache = ImageCache(tmp_path)
    s = spec()
    fake_image(cache, s.key)
    monkeypatch.setattr(ImageCache, "build", lambda *a, **k: pytest.fail("built"))
    img, built = cache.ensure(s)
    assert img.key == s.key and not built


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_builds_of_dead_processes_are_removed(tmp_path):
    cache = ImageCache(tmp_path)
    stale = tmp_path / f".building-k-{dead_pid()}"
    running = tmp_path / f".building-k-{os.getpid()}"
    for d in (stale, running):
        (d / "rootfs/etc").mkdir(parents=True)
    assert cache.clean_stale() == [stale]
    assert not stale.exists() and running.exists()


def test_images_and_prune(tmp_path):
    cache = ImageCache(tmp_path)
    for key in ("a", "b", "c"):
        fake_image(cache, key)
    (tmp_path / f".building-d-{dead_pid()}").mkdir()
    assert [i.key for i in cache.images()] == ["a", "b", "c"]
    assert [i.key for i in prune(cache, {"b"}, dry_run=True)] == ["a", "c"]
    assert len(cache.images()) == 3
    assert [i.key for i in prune(cache, {"b"})] == ["a", "c"]
    assert [i.key for i in cache.images()] == ["b"] and cache.in_progress() == []


def test_used_images():
    records = [{"name": "web", "image": "a"}, {"name": "db", "image": "a"},
               {"name": "x", "image": "b"}, {"name": "broken"}]
    assert im.used_images(records) == {"a": ["web", "db"], "b": ["x"]}


def test_a_failed_build_leaves_nothing(tmp_path, monkeypatch):
    cache = ImageCache(tmp_path)

    def failing(argv, on_line, **kw):
        target = Path(argv[argv.index("bookworm") + 1])
        (target / "etc").mkdir(parents=True)  # half a tree
        on_line("I: running apt-get update...")
        raise CommandError(argv, 1, "E: Failed to fetch http://x/debian/dists/bookworm/InRelease")

    monkeypatch.setattr(im, "stream", failing)
    monkeypatch.setattr(im, "mmdebstrap_version", lambda: "1.3.5")
    with pytest.raises(FjordError, match="cannot download from the Debian mirror"):
        cache.build(spec())
    assert [p.name for p in tmp_path.iterdir()] == [".locks"]


# --- failure messages ------------------------------------------------------------------


def test_mirror_faults_are_named():
    err = im.build_error(spec(), CommandError(["mmdebstrap"], 1, (
        "I: running apt-get update...\n"
        "Err:1 http://127.0.0.1:1/debian bookworm InRelease\n"
        "  Could not connect to 127.0.0.1:1 (127.0.0.1). - connect (111: Connection refused)\n"
        "E: apt-get update -oAPT::Status-Fd=<$fd> -oDpkg::Use-Pty=false failed\n")))
    assert "cannot download from the Debian mirror http://deb.debian.org/debian" in str(err)
    assert "Connection refused" in str(err) and "host.apt.mirror" in (err.hint or "")


def test_other_faults_show_the_end_of_the_output():
    err = im.build_error(spec(), CommandError(["mmdebstrap"], 1,
                                              "E: Unable to locate package nosuch"))
    assert "exited with status 1" in str(err) and "nosuch" in str(err)
    killed = im.build_error(spec(), CommandError(["mmdebstrap"], -9, ""))
    assert "killed by signal 9" in str(killed)
    timeout = im.build_error(spec(), CommandError(["mmdebstrap"], None, ""))
    assert "took too long" in str(timeout)


# --- streaming ----------------------------------------------------------------------


def test_stream_passes_lines_and_fails_with_the_output():
    lines: list[str] = []
    code = "import sys; print('one'); print('two', file=sys.stderr); sys.exit(3)"
    with pytest.raises(CommandError) as exc:
        stream([sys.executable, "-c", code], lines.append, timeout=30)
    assert lines == ["one", "two"] and exc.value.returncode == 3 and "two" in exc.value.stderr


def test_stream_timeout_ends_the_whole_process_group(tmp_path):
    pidfile = tmp_path / "child"
    code = ("import subprocess, sys, time; "
            "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
            f"open({str(pidfile)!r}, 'w').write(str(p.pid)); print('ready', flush=True); "
            "time.sleep(60)")
    start = time.monotonic()
    with pytest.raises(CommandError) as exc:
        stream([sys.executable, "-c", code], lambda line: None, timeout=2)
    assert exc.value.returncode is None and time.monotonic() - start < 20
    child = int(pidfile.read_text())
    time.sleep(0.2)
    assert not Path(f"/proc/{child}").exists() or \
        Path(f"/proc/{child}/stat").read_text().split()[2] == "Z"


def test_sigterm_becomes_an_exception_and_the_handler_is_restored():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated), sigterm_raises():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
    assert signal.getsignal(signal.SIGTERM) == before


def test_spec_is_hashable_and_immutable():
    s = spec()
    with pytest.raises(AttributeError):
        s.suite = "trixie"  # type: ignore[misc]
    assert replace(s, suite="trixie").key != s.key


def fake_mmdebstrap(calls: list[str], delay: float = 0.0):
    def run(argv, on_line, **kw):
        calls.append(argv[-4])
        target = Path(argv[argv.index("bookworm") + 1])
        (target / "etc/ssh").mkdir(parents=True)
        (target / "etc/ssh/ssh_host_ed25519_key").write_text("shared secret")
        (target / "etc/resolv.conf").write_text("nameserver 10.0.0.1\n")
        time.sleep(delay)
        on_line("I: success in 0.1 seconds")
    return run


def test_build_finishes_a_neutral_image(tmp_path, monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(im, "stream", fake_mmdebstrap(calls))
    monkeypatch.setattr(im, "mmdebstrap_version", lambda: "1.3.5")
    seen = []
    img = ImageCache(tmp_path).build(spec(), lambda p: seen.append(p.fraction))
    assert seen == [1.0]
    assert not (img.rootfs / "etc/ssh/ssh_host_ed25519_key").exists()
    assert not (img.rootfs / "etc/resolv.conf").exists()
    assert (img.rootfs / "etc/machine-id").read_text() == ""
    assert img.meta["inputs"] == spec().inputs() and img.meta["mmdebstrap"] == "1.3.5"


def test_two_builds_of_one_key_build_once(tmp_path, monkeypatch):
    import threading

    calls: list[str] = []
    monkeypatch.setattr(im, "stream", fake_mmdebstrap(calls, delay=0.5))
    monkeypatch.setattr(im, "mmdebstrap_version", lambda: "1.3.5")
    results = []

    def build() -> None:
        results.append(ImageCache(tmp_path).build(spec()))

    threads = [threading.Thread(target=build) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(results) == 2 and results[0] == results[1]


def test_documentation_is_pruned_like_dpkg_would(tmp_path):
    root = tmp_path / "rootfs"
    files = ["usr/share/doc/bash/copyright", "usr/share/doc/bash/changelog.gz",
             "usr/share/man/man1/bash.1.gz", "usr/share/locale/locale.alias",
             "usr/share/locale/de/LC_MESSAGES/bash.mo", "usr/share/info/dir",
             "usr/share/zoneinfo/UTC"]
    for f in files:
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        (root / f).write_text("x")
    (root / "usr/share/doc/libfoo").symlink_to("bash")
    im.prune_documentation(root)
    left = sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() or p.is_symlink())
    assert left == ["etc/dpkg/dpkg.cfg.d/fjord-excludes", "usr/share/doc/bash/copyright",
                    "usr/share/locale/locale.alias", "usr/share/zoneinfo/UTC"]
    rules = (root / "etc/dpkg/dpkg.cfg.d/fjord-excludes").read_text()
    assert "path-exclude=/usr/share/doc/*\n" in rules
    assert "path-include=/usr/share/doc/*/copyright\n" in rules


def test_an_image_built_by_apply_reports_its_progress_to_the_apply_not_a_console():
    """The image resource opens no console of its own: how far the build is goes to
    ctx.progress, which the command's reporter shows (fjord apply's spinner line)."""
    from fjord.containers.resources import ImageResource
    from fjord.engine.resource import Context

    seen: list[tuple[str, float, str]] = []

    class Cache:
        def get(self, key):
            return None

        def build(self, s, progress=None, **kw):
            progress(BuildProgress(stage="downloading", fraction=0.5))

    ctx = Context(desired=None, drivers={"images": Cache()})  # type: ignore[arg-type]
    ctx.progress = lambda what, fraction, stage: seen.append((what, fraction, stage))
    resource = ImageResource(spec(), ["web"])
    (change,) = resource.changes(ctx)
    change.run(ctx)
    assert seen == [(resource.id, 0.5, "downloading")]
