"""The environment of fjord on a simulated server: the lab's service manager instead
of systemd. The command line asks for it when told FJORD_SERVICE_MANAGER=lab (which
`fjord lab exec` sets, with FJORD_PACKAGE_MANAGER=simulate and the shared image cache:
fjord.lab.enter.SERVER_ENV); production code only knows the ServiceManager protocol."""

from __future__ import annotations

from collections.abc import Mapping

from fjord.environment import Environment, ServiceManagerFactory
from fjord.host.services import ServiceManager


def lab_service_manager() -> ServiceManager:
    from fjord.lab.services import LabServiceManager

    return LabServiceManager()


SERVICE_MANAGERS: Mapping[str, ServiceManagerFactory] = {"lab": lab_service_manager}


def lab_environment(environ: Mapping[str, str]) -> Environment:
    """The environment the process's variables describe, the lab's managers known."""
    return Environment.from_system(environ, service_managers=SERVICE_MANAGERS)
