"""Debian packages: what the host needs, read from dpkg, planned with APT, installed
non-interactively.

Two package managers, held by the environment like the service manager (the command
line chooses one from FJORD_PACKAGE_MANAGER; fjord.environment):

- ``apt`` (default): the real thing.
- ``simulate``: for the lab, which shares /usr with the machine it runs on, so that
  nothing may ever be installed. Installation is planned with `apt-get -s` (so unknown
  or uninstallable packages still fail the way they would on a server) and what would
  have been installed is recorded in /var/lib/fjord/simulated-packages.json; `apt-get
  update` is skipped (the lab has no route to the archive) and the machine's package
  lists are read, never written.

Every read-only query runs with APT's binary caches disabled, so that `plan` writes
nothing, not even /var/cache/apt/*.bin.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from fjord import runner
from fjord.engine.change import Change
from fjord.engine.plan import StateUnreadable
from fjord.engine.resource import Context, DriverKey, Reference, Resource
from fjord.environment import PACKAGE_MANAGER, Environment
from fjord.errors import FjordError
from fjord.state import read_json, state_dir, write_json

if TYPE_CHECKING:
    from fjord.config.desired import Desired

log = logging.getLogger("fjord.host.packages")

ENV = PACKAGE_MANAGER
DRIVER = "package-manager"
SIMULATED = "simulated-packages.json"

# What every fjord host needs, and why (shown in the plan).
REQUIRED: tuple[tuple[str, str], ...] = (
    ("openvswitch-switch", "the bridges, and ifupdown's OVS stanzas"),
    ("libvirt-daemon-system", "libvirtd, which runs the containers"),
    ("libvirt-daemon-driver-lxc", "libvirt's LXC driver"),
    ("libvirt-clients", "virsh, for the operator"),
    ("mmdebstrap", "builds the containers' root filesystems"),
    ("lxcfs", "the containers' /proc/meminfo, cpuinfo, stat, uptime: free, top, ps see "
              "their own limits"),
    ("nftables", "the firewall and NAT"),
    ("ifupdown", "brings the network up at boot from /etc/network/interfaces"),
    ("iproute2", "ip, for the operator and ifupdown"),
)
# What a configuration choice adds, and why: shown in the plan, since the package is
# there because of that key. ifupdown knows `bridge_ports` only through bridge-utils'
# hook (/etc/network/if-pre-up.d/bridge): without it the Linux bridges of
# /etc/network/interfaces are not made at boot, and the server comes back unreachable.
BY_SWITCH_KIND: dict[str, tuple[tuple[str, str], ...]] = {
    "linux-bridge": (("bridge-utils", "host.switch.kind is linux-bridge: ifupdown's "
                                      "bridge_ports, which make the bridges at boot"),),
}
# Not dnsmasq-base: containers get static addresses and the host's DNS servers, and
# fjord defines no libvirt network that would start a dnsmasq.
# Not lxc: fjord runs containers with libvirt's own LXC driver and uses nothing of the
# LXC tools, and the package enables and starts lxc-net on every host: a bridge lxcbr0
# (10.0.3.1/24 and a ULA /64) with its own dnsmasq serving DHCP and router
# advertisements (measured on Debian 13). A host where lxc-net is enabled or running
# (lxc installed by an earlier fjord, or by hand) is told so in the plan, unless
# host.packages names lxc.
UNWANTED_SERVICES: tuple[tuple[str, str, str], ...] = (
    ("lxc", "lxc-net.service",
     "a second bridge, lxcbr0 (10.0.3.1/24), with a dnsmasq serving DHCP and router "
     "advertisements; fjord needs neither it nor the lxc package. Remove it (apt-get purge "
     "lxc) or stop it for good (systemctl mask --now lxc-net), or name lxc in "
     "host.packages to keep it"),
)

DPKG_FORMAT = "${Package} ${Status}\n"
READ_ONLY = ["-o", "Dir::Cache::pkgcache=", "-o", "Dir::Cache::srcpkgcache="]
NONINTERACTIVE = {
    "DEBIAN_FRONTEND": "noninteractive",
    "APT_LISTCHANGES_FRONTEND": "none",
    # needrestart, where installed, would restart daemons behind fjord's back (restarting
    # Open vSwitch drops the network): list only.
    "NEEDRESTART_MODE": "l",
}
KEEP_CONFFILES = ["-o", "Dpkg::Options::=--force-confdef",
                  "-o", "Dpkg::Options::=--force-confold"]
INSTALL_TIMEOUT = 1800.0
UPDATE_TIMEOUT = 600.0

Run = Callable[..., runner.Result]


def base_name(package: str) -> str:
    """dpkg-query's ${Package} has no architecture: `foo:i386` is looked up as `foo`."""
    return package.partition(":")[0]


def parse_dpkg_status(text: str) -> dict[str, str]:
    """``dpkg-query -W -f='${Package} ${Status}\\n'`` → package → its state word
    (installed, config-files, half-configured, …). A multi-arch package listed once per
    architecture counts as installed when any of them is."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) != 4:
            continue
        name, state = fields[0], fields[3]
        if out.get(name) != "installed":
            out[name] = state
    return out


def parse_simulation(text: str) -> list[str]:
    """``apt-get -s install`` → the packages it would unpack, in its order."""
    return [line.split()[1] for line in text.splitlines() if line.startswith("Inst ")]


_UNKNOWN = (re.compile(r"^E: Unable to locate package (\S+)$", re.M),
            re.compile(r"^E: Package '([^']+)' has no installation candidate$", re.M))


def parse_unknown(text: str) -> list[str]:
    """The packages a failed ``apt-get -s install`` says APT does not know or cannot
    pick (virtual packages with several providers, no candidate)."""
    return [m.group(1) for pattern in _UNKNOWN for m in pattern.finditer(text)]


class UnknownPackages(FjordError):
    """APT knows no installable version of these packages."""

    def __init__(self, names: Sequence[str], message: str) -> None:
        super().__init__(message)
        self.names = list(names)


def apt_errors(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.startswith(("E:", " ")) or "Depends:" in ln]
    return "\n".join(lines) or text.strip()


class PackageManager(Protocol):
    name: str

    def installed(self) -> dict[str, str]: ...

    def simulate(self, names: Sequence[str]) -> list[str]:
        """What installing ``names`` would unpack; raises UnknownPackages for packages
        APT does not know, FjordError if it cannot install them."""
        ...

    def install(self, names: Sequence[str]) -> None: ...

    def update(self) -> None: ...


class AptManager:
    """dpkg-query, apt-cache and apt-get. ``run`` is injectable for tests.

    What dpkg says is installed is read once and kept until :meth:`forget` (apply drops
    every driver's cache after a change; installing forgets by itself)."""

    name = "apt"

    def __init__(self, run: Run = runner.run) -> None:
        self._run = run
        self._installed: dict[str, str] | None = None

    def forget(self) -> None:
        self._installed = None

    def installed(self) -> dict[str, str]:
        if self._installed is None:
            self._installed = self._read_installed()
        return dict(self._installed)

    def _read_installed(self) -> dict[str, str]:
        try:
            res = self._run(["dpkg-query", "-W", f"-f={DPKG_FORMAT}"])
        except FjordError as exc:
            raise StateUnreadable(f"cannot list installed packages: {exc.message}",
                                  hint="fjord manages Debian hosts (dpkg)") from exc
        return parse_dpkg_status(res.stdout)

    def simulate(self, names: Sequence[str]) -> list[str]:
        res = self._run(["apt-get", "-s", *READ_ONLY, "install", "--no-install-recommends",
                         *names], check=False, env=NONINTERACTIVE)
        if res.returncode != 0:
            unknown = parse_unknown(res.stdout + res.stderr)
            if unknown:
                raise UnknownPackages(unknown, f"APT does not know {', '.join(unknown)}:\n"
                                      f"{apt_errors(res.stdout + res.stderr)}")
            raise FjordError(
                f"APT cannot install {', '.join(names)}:\n{apt_errors(res.stdout + res.stderr)}",
                hint="check host.packages and host.apt (suites, pins); "
                "`apt-get -s install PACKAGE` shows the same",
            )
        return parse_simulation(res.stdout)

    def install(self, names: Sequence[str]) -> None:
        self.forget()
        try:
            self._run(["apt-get", "install", "-y", "-q", "--no-install-recommends",
                       *KEEP_CONFFILES, *names], env=NONINTERACTIVE, timeout=INSTALL_TIMEOUT)
        finally:
            self.forget()

    def update(self) -> None:
        # --error-on=any: a repository that cannot be fetched is an error, not a warning
        # followed by stale lists.
        self._run(["apt-get", "update", "-q", "--error-on=any"], env=NONINTERACTIVE,
                  timeout=UPDATE_TIMEOUT, hint="check the mirror and repositories in host.apt")


class SimulatedManager(AptManager):
    """Plans with APT, installs nothing: what would be installed is recorded."""

    name = "simulate"

    def __init__(self, run: Run = runner.run, record: Path | None = None) -> None:
        super().__init__(run)
        self.record = record or state_dir() / SIMULATED

    def _recorded(self) -> dict[str, list[str]]:
        data = read_json(self.record) or {}
        installed = data.get("installed", {})
        return installed if isinstance(installed, dict) else {}

    def _read_installed(self) -> dict[str, str]:
        out = super()._read_installed()
        for name in self._recorded():
            out[name] = "installed"
        return out

    def install(self, names: Sequence[str]) -> None:
        unpacked = self.simulate(names)
        installed = self._recorded()
        for name in names:
            installed[base_name(name)] = unpacked
        self.forget()
        write_json(self.record, {"version": 1, "installed": installed})
        log.info("simulated: would install %s", " ".join(unpacked) or "nothing")

    def update(self) -> None:
        log.info("simulated: apt-get update skipped; the machine's package lists are read")


def open_manager(env: Environment) -> PackageManager:
    """The package manager ``env`` names: APT, or the simulation of the lab."""
    if env.package_manager is not None:
        return env.package_manager()
    return SimulatedManager() if env.package_manager_name == "simulate" else AptManager()


PACKAGES: DriverKey[PackageManager] = DriverKey(DRIVER, open_manager)


def manager(ctx: Context) -> PackageManager:
    """The environment's package manager (one per plan or apply)."""
    return ctx.open(PACKAGES)


class ListsPending(Protocol):
    """The apt-get update resource, asked whether the package lists are about to change."""

    def pending(self) -> bool: ...


class Packages(Resource):
    """The host's packages, installed in one APT transaction."""

    kind = "packages"

    def __init__(self, wanted: dict[str, str], *, lists: ListsPending | None = None,
                 after: Sequence[Reference] = ()) -> None:
        super().__init__("host")
        self.wanted = wanted  # package → why
        self.lists = lists
        self.after = tuple(after)

    def missing(self, ctx: Context,
                installed: dict[str, str] | None = None) -> list[tuple[str, str]]:
        """Wanted packages not installed, each with its dpkg state ("absent" if unknown)."""
        if installed is None:
            installed = manager(ctx).installed()
        out = []
        for name in self.wanted:
            state = installed.get(base_name(name), "absent")
            if state != "installed":
                out.append((name, state))
        return out

    def unwanted(self, ctx: Context, installed: dict[str, str]) -> list[str]:
        """Services of installed packages fjord does not need that change the host on
        their own (and nothing asked for the package in host.packages): one warning
        each, when the service is enabled or running."""
        from fjord.host.services import manager as services

        wanted = {base_name(n) for n in self.wanted}
        out = []
        for package, unit, what in UNWANTED_SERVICES:
            if installed.get(package) != "installed" or package in wanted:
                continue
            try:
                st = services(ctx).state(unit)
            except FjordError:
                continue  # no service manager to ask (said elsewhere)
            if st.at_boot or st.running:
                out.append(f"packages: {unit} (from the {package} package) is "
                           f"{st.enabled} and {st.active}: it runs {what}")
        return out

    def changes(self, ctx: Context) -> list[Change]:
        installed = manager(ctx).installed()
        for warning in self.unwanted(ctx, installed):
            ctx.warn(warning)
        missing = self.missing(ctx, installed)
        if not missing:
            return []
        names = [name for name, _ in missing]
        shown = ", ".join(self._shown(n, s) for n, s in missing)
        detail = f"install {shown}{self._check(ctx, names)}"
        return [Change(self.id, "create", detail, lambda ctx: manager(ctx).install(names))]

    def _shown(self, name: str, state: str) -> str:
        """A missing package as the plan names it: with its state when dpkg has it half
        there, and with its reason when a configuration key (not host.packages) asks
        for it."""
        notes = []
        why = self.wanted.get(name, "")
        if why.startswith("host.") and not why.startswith("host.packages"):
            notes.append(f"for {why}")
        if state not in ("absent", "not-installed", "config-files"):
            notes.append(f"is {state}")
        return f"{name} ({'; '.join(notes)})" if notes else name

    def _check(self, ctx: Context, names: list[str]) -> str:
        """Fail now, not half-way, for packages APT does not know or cannot install: one
        ``apt-get -s install`` answers both (APT's own simulation, nothing written).

        While sources are about to change (apt-get update pending), what the old lists
        do not know is only noted: apply re-reads this resource right before installing,
        after the update, and fails there if APT still does not know it."""
        pending = self.lists is not None and self.lists.pending()
        try:
            unpacked = manager(ctx).simulate(names)
        except UnknownPackages as exc:
            if pending:
                return f" ({', '.join(exc.names)}: not in the package lists yet, checked " \
                       "after apt-get update)"
            why = "; ".join(f"{n} ({self._why(n)})" for n in exc.names)
            raise FjordError(
                f"not installable from the configured APT sources: {why}",
                hint="check the names with `apt-cache policy NAME`; a package from another "
                "repository needs it under host.apt.repositories",
            ) from None
        except FjordError:
            if pending:
                return " (APT cannot install it with the current lists: checked again after " \
                       "apt-get update)"
            raise
        wanted = {base_name(n) for n in names}
        extra = [p for p in unpacked if p not in wanted]
        return f" (+{len(extra)} dependencies)" if extra else ""

    def _why(self, name: str) -> str:
        return self.wanted.get(name) or next(
            (why for n, why in self.wanted.items() if base_name(n) == name), "wanted")

    def unchanged_reason(self, ctx: Context) -> str:
        return f"{len(self.wanted)} packages installed"


def wanted(desired: Desired) -> dict[str, str]:
    out = dict(REQUIRED)
    for name, why in BY_SWITCH_KIND.get(desired.host.switch.kind, ()):
        out.setdefault(name, why)
    for name in desired.host.packages:
        out.setdefault(name, "host.packages")
    return out


def resources(desired: Desired, *, lists: ListsPending | None = None,
              after: Iterable[Reference] = ()) -> list[Resource]:
    return [Packages(wanted(desired), lists=lists, after=tuple(after))]
