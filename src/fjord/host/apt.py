"""APT sources and pinning, as files fjord owns, and `apt-get update` when they changed.

    /etc/apt/sources.list.d/fjord-debian.sources  the mirror (suite, -updates, -backports,
                                                  extra suites) and the security archive
    /etc/apt/sources.list.d/fjord-NAME.sources    one per host.apt.repositories entry
    /etc/apt/keyrings/NAME.asc                    its key, named by Signed-By (never apt-key)
    /etc/apt/preferences.d/fjord                  host.apt.pins

The suite is host.apt.suite, else the release the host runs (fjord.config.desired:
read from its os-release; the plan says so); a host whose release fjord does not know
stops the plan with a problem at host.apt.suite before anything changes.

Other sources (/etc/apt/sources.list, other files in sources.list.d) are left alone. An
entry that duplicates one of fjord's is reported in the plan (APT itself only warns
"configured multiple times"); one that names the same archive with another Signed-By
stops the plan, because APT would then refuse to read any source at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from fjord.config.desired import Desired
from fjord.config.models import Apt, AptPin, AptRepository
from fjord.config.problems import ConfigError
from fjord.engine.change import Change
from fjord.engine.resource import Context, Reference, Resource
from fjord.errors import FjordError
from fjord.host.files import File
from fjord.host.packages import manager as package_manager
from fjord.host.services import Trigger

ROOT = Path("/")
SOURCES_DIR = "etc/apt/sources.list.d"
SOURCES_LIST = "etc/apt/sources.list"
KEYRINGS_DIR = "etc/apt/keyrings"
PREFERENCES = "etc/apt/preferences.d/fjord"
PREFIX = "fjord-"
DEBIAN_FILE = "fjord-debian.sources"

SECURITY_MIRROR = "http://security.debian.org/debian-security"
DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
# Suites without -security, -updates and -backports companions.
ROLLING = frozenset({"sid", "unstable", "experimental", "rc-buggy"})
# Archive names (a=…): they move from one release to the next. Anything else is a
# codename (n=…), which a pin should prefer: "bookworm" stays bookworm.
ARCHIVES = frozenset({"stable", "oldstable", "oldoldstable", "testing", "unstable",
                      "experimental", "proposed-updates"})
# An extra suite without a pin of its own gets this one, so that adding `testing` does
# not silently upgrade the whole host on the next `apt upgrade` (APT's default 500
# would let testing's newer versions win).
EXTRA_SUITE_PRIORITY = 100

HEADER = ("# Managed by fjord (`fjord apply`): edit the fjord configuration, not this file.\n"
          "# The previous version is kept under /var/lib/fjord/backups.\n")


# -- rendering -------------------------------------------------------------------------


@dataclass(frozen=True)
class Stanza:
    """One deb822 paragraph of a .sources file."""

    comment: str
    uris: tuple[str, ...]
    suites: tuple[str, ...]
    components: tuple[str, ...]
    signed_by: str

    def render(self) -> str:
        lines = [f"# {self.comment}", "Types: deb", f"URIs: {' '.join(self.uris)}",
                 f"Suites: {' '.join(self.suites)}"]
        if self.components:
            lines.append(f"Components: {' '.join(self.components)}")
        lines.append(f"Signed-By: {self.signed_by}")
        return "\n".join(lines) + "\n"


def render_sources(stanzas: Sequence[Stanza]) -> str:
    return HEADER + "".join("\n" + s.render() for s in stanzas)


def debian_stanzas(apt: Apt) -> list[Stanza]:
    """The mirror's and the security archive's stanzas (``apt.suite`` resolved: the
    file's, or the host's release, fjord.config.desired)."""
    suite, comps = apt.suite, tuple(apt.components)
    if suite is None:
        raise ValueError("host.apt.suite is not resolved")
    rolling = suite in ROLLING
    suites = [suite]
    if apt.updates and not rolling:
        suites.append(f"{suite}-updates")
    if apt.backports and not rolling:
        suites.append(f"{suite}-backports")
    out = [Stanza("the Debian mirror: the host's suite", (apt.mirror,), tuple(suites), comps,
                  DEBIAN_KEYRING)]
    if apt.security and not rolling:
        out.append(Stanza("security updates, from the security archive (never a mirror)",
                          (SECURITY_MIRROR,), (f"{suite}-security",), comps, DEBIAN_KEYRING))
    extra = [s for s in apt.extra_suites if s != suite]
    if extra:
        out.append(Stanza("further suites (see the pins in /etc/apt/preferences.d/fjord)",
                          (apt.mirror,), tuple(extra), comps, DEBIAN_KEYRING))
    return out


def key_path(root: Path, name: str) -> Path:
    return root / KEYRINGS_DIR / f"{name}.asc"


def signed_by(name: str) -> str:
    """The key's path as APT sees it on the host (tests write under another root)."""
    return f"/{KEYRINGS_DIR}/{name}.asc"


def repository_stanzas(repo: AptRepository) -> list[Stanza]:
    return [Stanza(f"host.apt.repositories: {repo.name}", tuple(repo.uris),
                   tuple(repo.suites), tuple(repo.components), signed_by(repo.name))]


def key_text(repo: AptRepository) -> str:
    """The key file's content (the configuration checked the armour: types.ArmouredKey)."""
    return repo.key.strip() + "\n"


def pin_release(release: str) -> str:
    """`testing` → ``a=testing``; `bookworm`, `bookworm-backports` → ``n=…``."""
    head = release.split("-", 1)[0]
    key = "a" if release in ARCHIVES or head in ARCHIVES else "n"
    return f"{key}={release}"


def effective_pins(apt: Apt) -> list[tuple[AptPin, str]]:
    """The declared pins, then the implicit low pin of each unpinned extra suite."""
    out = [(pin, "host.apt.pins") for pin in apt.pins]
    general = {p.release for p in apt.pins if p.packages == ["*"]}
    for suite in apt.extra_suites:
        if suite != apt.suite and suite not in general:
            out.append((AptPin(packages=["*"], release=suite, priority=EXTRA_SUITE_PRIORITY),
                        f"fjord's default for the extra suite {suite}: only what is pinned "
                        "higher comes from it"))
    return out


def render_preferences(apt: Apt) -> str | None:
    pins = effective_pins(apt)
    if not pins:
        return None
    parts = [HEADER]
    for pin, why in pins:
        parts.append(f"\n# {why}\nPackage: {' '.join(pin.packages)}\n"
                     f"Pin: release {pin_release(pin.release)}\nPin-Priority: {pin.priority}\n")
    return "".join(parts)


# -- what else is configured -----------------------------------------------------------


@dataclass(frozen=True)
class SourceEntry:
    """One (URI, suite) of an existing source, wherever it is written."""

    origin: str
    uri: str
    suite: str
    components: tuple[str, ...]
    signed_by: str | None


def _norm(uri: str) -> str:
    return uri.rstrip("/")


def parse_one_line(text: str, origin: str) -> list[SourceEntry]:
    """The classic format: ``deb [opt=val …] URI SUITE [COMPONENT…]``."""
    out = []
    for number, raw in enumerate(text.splitlines(), 1):
        tokens = raw.split("#", 1)[0].split()
        if not tokens or tokens[0] != "deb":
            continue
        rest = tokens[1:]
        options: dict[str, str] = {}
        if rest and rest[0].startswith("["):
            joined = " ".join(rest)
            inside, _, after = joined[1:].partition("]")
            for opt in inside.split():
                key, _, value = opt.partition("=")
                options[key.lower()] = value
            rest = after.split()
        if len(rest) < 2:
            continue
        out.append(SourceEntry(f"{origin}:{number}", _norm(rest[0]), rest[1], tuple(rest[2:]),
                               options.get("signed-by")))
    return out


def _paragraphs(text: str) -> Iterable[tuple[int, dict[str, str]]]:
    fields: dict[str, str] = {}
    start, key = 0, None
    for number, line in enumerate([*text.splitlines(), ""], 1):
        if line.startswith("#"):
            continue
        if not line.strip():
            if fields:
                yield start, fields
            fields, key = {}, None
            continue
        if line[0] in " \t" and key is not None:
            fields[key] += "\n" + line.strip()
            continue
        name, _, value = line.partition(":")
        key = name.strip().lower()
        fields[key] = value.strip()
        if len(fields) == 1:
            start = number


def parse_deb822(text: str, origin: str) -> list[SourceEntry]:
    out = []
    for start, f in _paragraphs(text):
        if "deb" not in f.get("types", "").split():
            continue
        if f.get("enabled", "yes").strip().lower() == "no":
            continue
        for uri in f.get("uris", "").split():
            for suite in f.get("suites", "").split():
                out.append(SourceEntry(f"{origin}:{start}", _norm(uri), suite,
                                       tuple(f.get("components", "").split()),
                                       f.get("signed-by")))
    return out


def existing_sources(root: Path) -> list[SourceEntry]:
    """Every enabled `deb` source on the host that fjord did not write."""
    out: list[SourceEntry] = []
    main = root / SOURCES_LIST
    if main.is_file():
        out += parse_one_line(main.read_text(errors="replace"), "/" + SOURCES_LIST)
    directory = root / SOURCES_DIR
    if directory.is_dir():
        for path in sorted(directory.iterdir()):
            shown = "/" + str(path.relative_to(root)).lstrip("/")
            if path.name.startswith(PREFIX) or not path.is_file():
                continue
            if path.suffix == ".list":
                out += parse_one_line(path.read_text(errors="replace"), shown)
            elif path.suffix == ".sources":
                out += parse_deb822(path.read_text(errors="replace"), shown)
    return out


@dataclass(frozen=True)
class Overlap:
    ours: Stanza
    theirs: SourceEntry

    @property
    def conflicting(self) -> bool:
        """APT stops ("Conflicting values set for option Signed-By") when both name a
        keyring and the keyrings differ; without one on their side it only warns."""
        return self.theirs.signed_by is not None and \
            self.theirs.signed_by.strip() != self.ours.signed_by


def overlaps(ours: Sequence[Stanza], theirs: Sequence[SourceEntry]) -> list[Overlap]:
    mine = {(_norm(u), s): st for st in ours for u in st.uris for s in st.suites}
    return [Overlap(mine[(e.uri, e.suite)], e) for e in theirs if (e.uri, e.suite) in mine]


# -- resources -------------------------------------------------------------------------


class SourcesFile(File):
    """A .sources file fjord owns, checked against the host's other sources."""

    def __init__(self, path: Path, stanzas: Sequence[Stanza], root: Path, reason: str,
                 after: tuple[Reference, ...] = (), note: str = "") -> None:
        super().__init__(path, render_sources(stanzas), reason=reason, after=after)
        self.stanzas = list(stanzas)
        self.root = root
        self.note = note  # shown by `plan -v` when unchanged (where the suite came from)

    def changes(self, ctx: Context) -> list[Change]:
        found = overlaps(self.stanzas, existing_sources(self.root))
        conflicts = [o for o in found if o.conflicting]
        if conflicts:
            o = conflicts[0]
            raise FjordError(
                f"{o.theirs.origin} lists {o.theirs.uri} {o.theirs.suite} signed by "
                f"{o.theirs.signed_by}, {self.path.name} by {o.ours.signed_by}: APT refuses "
                "conflicting Signed-By values and would then read no source at all",
                hint=f"remove that entry ({self.path.name} replaces it), or set "
                "host.apt.manage: false to keep your own sources",
            )
        grouped: dict[tuple[str, str], list[str]] = {}
        for o in found:
            grouped.setdefault((o.theirs.origin, o.theirs.uri), []).append(o.theirs.suite)
        for (origin, uri), suites in grouped.items():
            ctx.warn(f"{origin} also lists {uri} {' '.join(suites)}: APT will say it is "
                     f"configured multiple times; fjord leaves that file alone (remove the "
                     f"entry, {self.path.name} has it)")
        return super().changes(ctx)

    def unchanged_reason(self, ctx: Context) -> str:
        said = super().unchanged_reason(ctx)
        return f"{said} ({self.note})" if self.note else said


def suite_reason(desired: Desired) -> str:
    """Which suite fjord-debian.sources names, and why, when the file does not say."""
    release = desired.apt_suite_from
    if release is None:
        return ""
    return f"{release.codename}: the host's release ({release.shown()}), host.apt.suite not given"


class StaleSources(Resource):
    """fjord-*.sources files of repositories no longer declared, and their keys."""

    kind = "apt-sources"

    def __init__(self, root: Path, keep: Iterable[str], after: tuple[Reference, ...] = ()) -> None:
        super().__init__("leftovers")
        self.root = root
        self.keep = set(keep)
        self.after = after

    def stale(self) -> list[File]:
        directory = self.root / SOURCES_DIR
        if not directory.is_dir():
            return []
        out = []
        for path in sorted(directory.glob(f"{PREFIX}*.sources")):
            if path.name in self.keep:
                continue
            out.append(File(path, None, ensure="absent"))
            name = path.name[len(PREFIX):-len(".sources")]
            key = key_path(self.root, name)
            if key.exists() and f"Signed-By: {signed_by(name)}" in path.read_text(errors="replace"):
                out.append(File(key, None, ensure="absent"))
        return out

    def changes(self, ctx: Context) -> list[Change]:
        return [c for f in self.stale() for c in f.changes(ctx)]

    def unchanged_reason(self, ctx: Context) -> str:
        return "no sources of removed repositories"


class AptUpdate(Trigger):
    """`apt-get update` when a sources or key file changed since the last update.

    Pins are not inputs: APT reads preferences on every run, and an update only fetches
    indexes, which pins do not change."""

    kind = "apt-update"
    what = "apt-get update"

    def action(self, ctx: Context) -> None:
        package_manager(ctx).update()


def resources(desired: Desired, root: Path = ROOT) -> list[Resource]:
    apt = desired.host.apt
    if not apt.manage:
        return []
    problem = desired.suite_unknown()
    if problem is not None:
        raise ConfigError([problem], desired.filename)
    sources_dir = root / SOURCES_DIR
    why = suite_reason(desired)
    reason = "the Debian mirror and security archive" + (f", suite {why}" if why else "")
    inputs: list[File] = [SourcesFile(sources_dir / DEBIAN_FILE, debian_stanzas(apt), root,
                                      reason, note=f"suite {why}" if why else "")]
    for repo in apt.repositories:
        if PREFIX + repo.name + ".sources" == DEBIAN_FILE:
            raise FjordError("host.apt.repositories: the name `debian` is fjord's own mirror "
                             "file", hint="give the repository another name")
        key = File(key_path(root, repo.name), key_text(repo),
                   reason=f"signing key of {repo.name}")
        inputs += [key, SourcesFile(sources_dir / f"{PREFIX}{repo.name}.sources",
                                    repository_stanzas(repo), root,
                                    f"repository {repo.name}", after=(key,))]
    prefs_text = render_preferences(apt)
    prefs = File(root / PREFERENCES, prefs_text, reason="APT pins") if prefs_text is not None \
        else File(root / PREFERENCES, None, ensure="absent")
    keep = {f.path.name for f in inputs if f.path.parent == sources_dir}
    stale = StaleSources(root, keep, after=tuple(inputs))
    update = AptUpdate("lists", inputs, after=(*inputs, prefs, stale))
    return [*inputs, prefs, stale, update]
