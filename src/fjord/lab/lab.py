"""A lab: a whole rented server and its upstream, simulated in namespaces.

    lab = Lab("ci")
    lab.up(config="examples/lab.yaml", provider="routed")
    lab.exec(["ping", "-c1", lab.far_ipv4])      # runs on the simulated server
    lab.reboot()                                  # replays the boot from its files
    lab.down()                                    # leaves the machine as it was

Everything the lab creates on the machine carries its name (fjord.lab.names); its
state lives in /var/lib/fjord-labs/NAME (``FJORD_LABS_DIR`` moves it).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fjord.errors import FjordError
from fjord.lab import namespaces, netlink, preflight, provider, server
from fjord.lab.boot import Boot, BootReport
from fjord.lab.cgroups import LabCgroup
from fjord.lab.daemons import ServerDaemons
from fjord.lab.enter import enter_argv, nsenter_argv
from fjord.lab.mounts import LabLayout, reset_run
from fjord.lab.names import Names, labs_dir
from fjord.lab.procs import Proc, namespace_inode, read_json, write_json
from fjord.lab.spec import FAR_IPV4, FAR_IPV6, FAR_NAME, LabSpec, from_host
from fjord.lab.upstream import Upstream
from fjord.net import interfaces
from fjord.runner import Result, run

if TYPE_CHECKING:
    from fjord.config.models import Host

Progress = Callable[[str], None]
STATE_VERSION = 1


def _quiet(_: str) -> None:
    pass


class Lab:
    """One lab, by name. Methods that change it need root."""

    far_name = FAR_NAME
    far_ipv4 = str(FAR_IPV4.ip)
    far_ipv6 = str(FAR_IPV6.ip)

    def __init__(self, name: str = "lab") -> None:
        self.names = Names(name)
        self.layout = LabLayout(self.names.dir)
        self.daemons = ServerDaemons(
            self.layout.run, self._execute,
            libvirt_uri=f"lxc:///system?socket={self.layout.run}/libvirt/libvirt-sock",
            label=f"lab {name}")
        self.cgroup = LabCgroup(self.names.cgroup)

    @property
    def name(self) -> str:
        return self.names.lab

    def _execute(self, argv: list[str], env: Mapping[str, str] | None) -> None:
        run(self.exec_argv(argv), env=env, timeout=60)

    @property
    def dir(self) -> Path:
        return self.names.dir

    def __repr__(self) -> str:
        return f"Lab({self.name!r})"

    # --- state ----------------------------------------------------------------------------

    def _state(self) -> dict[str, Any] | None:
        return read_json(self.names.state_file)

    def _write_state(self, **changes: Any) -> None:
        state = self._state() or {"version": STATE_VERSION, "name": self.name}
        state.update(changes)
        write_json(self.names.state_file, state)

    @property
    def spec(self) -> LabSpec:
        state = self._state()
        if not state or "spec" not in state:
            raise FjordError(f"lab {self.name} does not exist",
                             hint=f"create it with `fjord lab up --name {self.name}`")
        return LabSpec.from_json(state["spec"])

    def exists(self) -> bool:
        return self.names.state_file.exists()

    def holder(self) -> Proc | None:
        data = read_json(self.dir / "holder.json") or {}
        proc = Proc.from_json(data.get("holder"))
        return proc if proc is not None and proc.alive() else None

    def _problems(self, state: dict[str, Any]) -> list[str]:
        """What is missing from a lab that should be up (empty: healthy)."""
        problems = []
        if state.get("phase") != "up":
            problems.append(f"its creation did not finish ({state.get('phase')})")
        for ns in self.names.all_netns:
            if not namespaces.is_mounted(ns):
                problems.append(f"network namespace {ns} is gone")
        if self.holder() is None:
            problems.append("the server's namespace holder is gone")
        return problems

    def _dns_pid(self) -> int | None:
        from fjord.lab.procs import daemon_alive

        return daemon_alive(self.dir / "upstream" / "dnsmasq.pid")

    # --- up -------------------------------------------------------------------------------

    def up(self, host: Host | None = None, *, config: str | None = None,
           provider: str = provider.DEFAULT_PROVIDER, progress: Progress = _quiet,
           owner: int | None = None) -> str:
        """Create the lab (or check an existing one). Returns what happened: ``created``,
        ``unchanged``, ``repaired`` (the upstream's DNS server restarted) or ``provider
        changed``. A lab whose holder or namespaces are gone is rebuilt (``created``).

        ``owner``: the PID of a process the lab belongs to (a test run); once that
        process is gone the lab counts as an orphan (see ``orphans()``)."""
        if host is None:
            if config is None:
                raise FjordError("lab up needs a configuration file or a host section")
            from fjord.config.desired import load

            host = load(config).host
        spec = from_host(self.name, host, provider)
        preflight.check_machine()
        with self._lock():
            state = self._state()
            if state is not None:
                outcome = self._reuse(state, spec, progress)
                if outcome is not None:
                    return outcome
                progress("cleaning up a stale lab")
                self._teardown()
            self._check_free()
            try:
                self._create(spec, config, progress, owner)
            except BaseException:
                with contextlib.suppress(Exception):
                    self._teardown()
                raise
        return "created"

    def _reuse(self, state: dict[str, Any], spec: LabSpec, progress: Progress) -> str | None:
        """An existing lab: None when it is stale (to be rebuilt), else what was done."""
        if self._problems(state):
            return None
        old = LabSpec.from_json(state["spec"])
        if not old.same_server(spec):
            raise FjordError(
                f"lab {self.name} exists with another host section "
                f"({old.fqdn}, {old.ipv4}, {old.ipv6 or 'no IPv6'})",
                hint=f"remove it first: fjord lab down --name {self.name}")
        # The server's own daemons are the server's business (its boot, its service
        # manager); the provider's DNS server is the lab's.
        outcome = "unchanged"
        if old.upstream_dns and self._dns_pid() is None:
            progress("restarting the upstream DNS server")
            Upstream(self.names, old).start_dns()
            outcome = "repaired"
        if old.provider != spec.provider:
            progress(f"provider {old.provider} -> {spec.provider}")
            Upstream(self.names, spec).apply_provider(spec.provider)
            self._write_state(spec=spec.to_json())
            outcome = "provider changed"
        return outcome

    def _check_free(self) -> None:
        """Refuse names in use by something that is not this lab."""
        taken = [ns for ns in self.names.all_netns if namespaces.exists(ns)]
        if self.cgroup.exists():
            taken.append(f"cgroup {self.names.cgroup}")
        if taken:
            raise FjordError(
                f"lab name {self.name} is in use by something else: {', '.join(taken)}",
                hint="pick another name with --name, or remove what holds it")

    def _create(self, spec: LabSpec, config: str | None, progress: Progress,
                owner: int | None) -> None:
        start = time.monotonic()
        self.dir.mkdir(parents=True, exist_ok=True)
        owner_proc = Proc.of(owner) if owner is not None else None
        self._write_state(phase="creating", spec=spec.to_json(), config=config,
                          created=time.time(),
                          owner=owner_proc.to_json() if owner_proc else None)
        progress("namespaces")
        self.cgroup.create()
        for ns in self.names.all_netns:
            self._claim_netns(ns)
        upstream = Upstream(self.names, spec)
        upstream.create()
        upstream.attach_server()
        progress("server files")
        server.create_files(self.names, spec)
        reset_run(self.layout, self.name)
        server.configure_nic(self.names, spec)
        # and ifupdown's record of it, as that boot's `ifup -a` (auto lo, auto eth0) left it
        interfaces.record_up(["lo", spec.uplink], state_dir=self.layout.run / "network")
        progress("daemons")
        self._start_holder(spec)
        boot = Boot(self.name, self.names.netns_server, self._holder_pid(), self.daemons)
        boot.step("sysctl", boot.sysctl)
        self._start_daemons(spec)
        self._write_state(phase="up", seconds=round(time.monotonic() - start, 3))

    def _claim_netns(self, name: str) -> None:
        """Create a namespace, recorded first as the lab's: `down` removes only those."""
        state = self._state() or {}
        owned = list(state.get("netns", self.names.all_netns if "phase" in state and
                                state["phase"] == "up" else []))
        self._write_state(netns=sorted({*owned, name}))
        try:
            namespaces.create(name)
        except namespaces.NamespaceExists:
            self._write_state(netns=owned)
            raise

    def _start_daemons(self, spec: LabSpec) -> None:
        """DNS, Open vSwitch, lxcfs and libvirtd in parallel (they do not depend on each
        other; a fresh server runs lxcfs when its package is installed, as the machine's is)."""
        jobs: list[Callable[[], None]] = [self.daemons.start_libvirtd, self.daemons.start_ovs,
                                          self.daemons.start_lxcfs]
        if spec.upstream_dns:
            jobs.append(Upstream(self.names, spec).start_dns)
        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            for future in [pool.submit(job) for job in jobs]:
                future.result()

    def _start_holder(self, spec: LabSpec) -> None:
        result = run([sys.executable, "-m", "fjord.lab.holder", self.name, spec.hostname],
                     timeout=30)
        pid = int(result.stdout.split()[0])
        proc = Proc.of(pid)
        if proc is None:
            raise FjordError(f"the namespace holder of lab {self.name} died at once")
        write_json(self.dir / "holder.json", {
            "holder": proc.to_json(),
            "mnt": namespace_inode(pid, "mnt"),
            "netns": namespaces.inode(self.names.netns_server),
        })

    def _holder_pid(self) -> int:
        proc = self.holder()
        if proc is None:
            raise FjordError(f"lab {self.name} is not running",
                             hint=f"start it with `fjord lab up --name {self.name}`")
        return proc.pid

    # --- down -----------------------------------------------------------------------------

    def down(self) -> bool:
        """Remove the lab and everything it created; False when there was none."""
        preflight.check_root()
        with self._lock():
            if not self.dir.exists():
                return False
            self._teardown()
        return True

    def _teardown(self) -> None:
        """Kill what runs in the lab, remove its namespaces, cgroups and directory.
        Tolerates a half-created or half-removed lab (a killed run)."""
        state = self._state() or {}
        # A lab.json from before namespaces were recorded owns all three.
        owned = state.get("netns", list(self.names.all_netns) if "spec" in state else [])
        if self.cgroup.exists():
            self.cgroup.kill()
        stuck: list[FjordError] = []
        for ns in self.names.all_netns:
            if ns in owned and namespaces.exists(ns):
                try:
                    namespaces.remove(ns)
                except FjordError as exc:  # the rest still goes; said at the end
                    stuck.append(exc)
        if self.cgroup.exists():
            self.cgroup.remove()
        if self.dir.exists():
            for entry in self.dir.iterdir():
                if entry.name != "lab.json":
                    _remove(entry)
            shutil.rmtree(self.dir)
        if stuck:
            raise stuck[0]

    # --- reboot ---------------------------------------------------------------------------

    def reboot(self, progress: Progress = _quiet) -> BootReport:
        """Shut the server down and power-cycle it: the units' shutdown commands run,
        everything volatile goes, the boot is replayed from its files (fjord.lab.boot).
        The upstream (router, far host, DNS) stays up, like a provider's."""
        preflight.check_root()
        with self._lock():
            state = self._state()
            if state is None or state.get("phase") != "up":
                raise FjordError(f"lab {self.name} is not up",
                                 hint=f"create it with `fjord lab up --name {self.name}`")
            spec = LabSpec.from_json(state["spec"])
            gone = [ns for ns in (self.names.netns_upstream, self.names.netns_far)
                    if not namespaces.is_mounted(ns)]
            if gone:
                raise FjordError(f"lab {self.name} is broken: {', '.join(gone)} is gone",
                                 hint=f"rebuild it with `fjord lab up --name {self.name}`")
            progress("stopping the server")
            stopped = self._shutdown()
            self.cgroup.kill("server")
            if namespaces.exists(self.names.netns_server):
                namespaces.remove(self.names.netns_server)
            reset_run(self.layout, self.name)
            progress("booting")
            self._claim_netns(self.names.netns_server)
            Upstream(self.names, spec).attach_server()
            self._start_holder(spec)
            report = Boot(self.name, self.names.netns_server, self._holder_pid(),
                          self.daemons, report=stopped).run()
            self._write_state(last_boot=report.to_json(), booted=time.time())
        return report

    def _shutdown(self) -> BootReport:
        """The units' shutdown (networking.service's `ifdown -a`) while the server still
        runs; nothing when it does not (its holder or namespace gone: a power cut)."""
        holder = self.holder()
        if holder is None or not namespaces.is_mounted(self.names.netns_server):
            return BootReport()
        return Boot(self.name, self.names.netns_server, holder.pid, self.daemons).shutdown()

    # --- running things -------------------------------------------------------------------

    def exec_argv(self, argv: Sequence[str]) -> list[str]:
        """The command line that runs ``argv`` on the server (for subprocess.Popen)."""
        return enter_argv(self.name, "server", list(argv))

    def upstream_argv(self, argv: Sequence[str]) -> list[str]:
        return enter_argv(self.name, "upstream", list(argv))

    def far_argv(self, argv: Sequence[str]) -> list[str]:
        return enter_argv(self.name, "far", list(argv))

    def exec(self, argv: Sequence[str], **kwargs: Any) -> Result:
        """Run ``argv`` on the server; keywords as for fjord.runner.run."""
        nsenter_argv(self.names, "server", list(argv))  # a clear error when not running
        return run(self.exec_argv(argv), **kwargs)

    def upstream(self, argv: Sequence[str], **kwargs: Any) -> Result:
        """Run ``argv`` on the provider's router."""
        return run(self.upstream_argv(argv), **kwargs)

    def far(self, argv: Sequence[str], **kwargs: Any) -> Result:
        """Run ``argv`` on the far host ("the Internet")."""
        return run(self.far_argv(argv), **kwargs)

    # --- status ---------------------------------------------------------------------------

    def foreign_mac(self) -> provider.Counter:
        """Frames the provider received from MACs other than the server's."""
        return Upstream(self.names, self.spec).counter()

    @property
    def libvirt_uri(self) -> str:
        """A libvirt URI for the lab's libvirtd, usable from the machine."""
        return self.daemons.libvirt_uri

    def status(self) -> dict[str, Any]:
        state = self._state()
        if state is None:
            return {"name": self.name, "state": "absent"}
        spec = LabSpec.from_json(state["spec"])
        problems = self._problems(state)
        holder = self.holder()
        out: dict[str, Any] = {
            "name": self.name,
            "state": "up" if not problems else "broken",
            "problems": problems,
            "dir": str(self.dir),
            "config": state.get("config"),
            "provider": spec.provider,
            "provider_description": provider.DESCRIPTIONS[spec.provider],
            "netns": {"server": self.names.netns_server,
                      "upstream": self.names.netns_upstream,
                      "far": self.names.netns_far},
            "cgroup": self.names.cgroup,
            "server": {
                "fqdn": spec.fqdn, "uplink": spec.uplink, "mac": spec.mac,
                "link_local": str(spec.link_local), "ipv4": spec.ipv4, "ipv6": spec.ipv6,
                "holder": holder.pid if holder else None,
                "daemons": self.daemons.running(),
                "libvirt_uri": self.libvirt_uri,
            },
            "upstream": {
                "gateway4": spec.gateway4, "gateway6": spec.gateway6,
                "dns": list(spec.upstream_dns), "dnsmasq": self._dns_pid(),
                "far": {"name": FAR_NAME, "ipv4": self.far_ipv4, "ipv6": self.far_ipv6},
            },
            "last_boot": state.get("last_boot"),
        }
        if namespaces.is_mounted(self.names.netns_upstream):
            counter = Upstream(self.names, spec).counter()
            out["foreign_mac"] = {"packets": counter.packets, "bytes": counter.bytes,
                                  "action": "drop" if provider.filters_mac(spec.provider)
                                  else "count"}
        if holder is not None and namespaces.is_mounted(self.names.netns_server):
            with netlink.rtnl(self.names.netns_server) as ipr:
                out["server"]["addresses"] = netlink.addresses(ipr)
                out["server"]["routes"] = netlink.routes(ipr)
        return out

    # --- helpers --------------------------------------------------------------------------

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """One `up`, `down` or `reboot` of this lab at a time."""
        locks = labs_dir() / ".locks"
        locks.mkdir(parents=True, exist_ok=True)
        fd = os.open(locks / self.name, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def labs() -> list[str]:
    """Names of the labs that exist on this machine."""
    base = labs_dir()
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if (p / "lab.json").exists())


def orphans() -> list[str]:
    """Labs whose owner process (``up(owner=...)``) is gone: a killed test run's."""
    out = []
    for name in labs():
        state = read_json(Names(name).state_file) or {}
        owner = Proc.from_json(state.get("owner"))
        if owner is not None and not owner.alive():
            out.append(name)
    return out
