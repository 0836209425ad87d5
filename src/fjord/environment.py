"""Where fjord works and what it talks to: one frozen :class:`Environment`, built once at
the command-line edge (``fjord.cli``) from the process's variables and handed down.

Nothing below the command line reads ``os.environ``: drivers and state paths ask the
environment (``Context.env``, or :func:`current` for helpers that have no context).
The ``FJORD_*`` variables stay the way a *process* is told (``fjord lab exec`` sets
them for the fjord it runs, libvirt's hook and the switchover guard get them from
fjord); :meth:`Environment.from_system` is the one place that reads them, and
:meth:`Environment.variables` says what a fjord child process must be given.

Standard library only: every layer imports it (``fjord --help`` stays fast).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fjord.errors import FjordError

DEFAULT_STATE_DIR = Path("/var/lib/fjord")
DEFAULT_OVSDB = "/run/openvswitch/db.sock"
DEFAULT_LIBVIRT_URI = "lxc:///"
# The host's os-release: the first that exists (os-release(5): /etc's takes precedence).
DEFAULT_OS_RELEASE = (Path("/etc/os-release"), Path("/usr/lib/os-release"))

# The variables a process of fjord is told by.
STATE_DIR = "FJORD_STATE_DIR"          # fjord's state (/var/lib/fjord)
IMAGES_DIR = "FJORD_IMAGES_DIR"        # the image cache (default <state>/images)
OVSDB = "FJORD_OVSDB"                  # ovsdb-server's socket
LIBVIRT_URI = "FJORD_LIBVIRT_URI"      # libvirt's LXC driver
SERVICE_MANAGER = "FJORD_SERVICE_MANAGER"  # systemd; lab (read by the CLI: fjord.lab)
PACKAGE_MANAGER = "FJORD_PACKAGE_MANAGER"  # apt; simulate
CONFIG = "FJORD_CONFIG"                # the configuration file when -c is not given
SSH = "FJORD_SSH"                      # the ssh command of --host
OS_RELEASE = "FJORD_OS_RELEASE"        # the host's os-release (tests name a file of theirs)

# Factories of a fjord.host.services.ServiceManager / fjord.host.packages.PackageManager
# (typed there: this module imports no layer, every layer imports it).
ServiceManagerFactory = Callable[[], Any]
PackageManagerFactory = Callable[[], Any]


# The managers fjord's host layer knows by name (fjord.host.services, fjord.host.packages
# open them: this module imports no layer); the lab's CLI hands in a factory of its own.
SERVICE_MANAGER_NAMES = ("systemd",)
PACKAGE_MANAGER_NAMES = ("apt", "simulate")


@dataclass(frozen=True)
class Environment:
    """What a run of fjord works on. The defaults are a real server's."""

    state_dir: Path = DEFAULT_STATE_DIR
    images_override: Path | None = None  # else <state_dir>/images
    ovsdb_socket: str = DEFAULT_OVSDB
    libvirt_uri: str = DEFAULT_LIBVIRT_URI
    # The init system and the package manager: protocols of fjord.host.services and
    # fjord.host.packages; the lab's CLI hands in its own (fjord.lab.environment).
    service_manager_name: str = "systemd"
    service_manager: ServiceManagerFactory | None = field(default=None, compare=False)
    package_manager_name: str = "apt"
    package_manager: PackageManagerFactory | None = field(default=None, compare=False)
    config: str | None = None   # $FJORD_CONFIG: the file when -c is not given
    ssh: str | None = None      # $FJORD_SSH: the ssh command of --host
    term: str = "xterm"         # the operator's terminal type (container exec/console)
    # where the release the host runs is read, the first that exists (host.apt.suite's
    # default; $FJORD_OS_RELEASE names one: unit tests; a lab's is the machine's)
    os_release: tuple[Path, ...] = DEFAULT_OS_RELEASE

    @property
    def images_dir(self) -> Path:
        """``<state>/images``, unless moved (labs share one cache, and an image built on
        the machine serves every lab: the key does not depend on the path)."""
        return self.images_override or self.state_dir / "images"

    @classmethod
    def from_system(cls, environ: Mapping[str, str], *,
                    service_managers: Mapping[str, ServiceManagerFactory] | None = None
                    ) -> Environment:
        """The environment the process was told by its variables. ``service_managers``:
        more init systems by name than systemd (the CLI adds the lab's)."""
        extra = dict(service_managers or {})
        managers = [*SERVICE_MANAGER_NAMES, *extra]
        services = environ.get(SERVICE_MANAGER) or "systemd"
        if services not in managers:
            raise FjordError(f"{SERVICE_MANAGER}={services!r} is not a service manager",
                             hint="use " + " or ".join(sorted(managers)))
        packages = environ.get(PACKAGE_MANAGER) or "apt"
        if packages not in PACKAGE_MANAGER_NAMES:
            raise FjordError(f"{PACKAGE_MANAGER}={packages!r} is not a package manager",
                             hint="use apt (real servers) or simulate (the lab)")
        images = environ.get(IMAGES_DIR)
        os_release = environ.get(OS_RELEASE)
        return cls(
            state_dir=Path(environ.get(STATE_DIR) or DEFAULT_STATE_DIR),
            images_override=Path(images) if images else None,
            ovsdb_socket=environ.get(OVSDB) or DEFAULT_OVSDB,
            libvirt_uri=environ.get(LIBVIRT_URI) or DEFAULT_LIBVIRT_URI,
            service_manager_name=services,
            service_manager=extra.get(services),
            package_manager_name=packages,
            config=environ.get(CONFIG) or None,
            ssh=environ.get(SSH) or None,
            term=environ.get("TERM") or "xterm",
            os_release=(Path(os_release),) if os_release else DEFAULT_OS_RELEASE,
        )

    def variables(self) -> dict[str, str]:
        """The variables that tell a child fjord (the switchover guard, a hook) this
        environment."""
        out = {STATE_DIR: str(self.state_dir), OVSDB: self.ovsdb_socket,
               LIBVIRT_URI: self.libvirt_uri}
        if self.images_override is not None:
            out[IMAGES_DIR] = str(self.images_override)
        return out


_current = Environment()


def current() -> Environment:
    """The environment the command line installed (a real server's by default), for
    helpers that are not handed a Context."""
    return _current


def use(env: Environment) -> Environment:
    """Install ``env`` for this process (the command line does, once); returns the
    previous one."""
    global _current
    previous, _current = _current, env
    return previous
