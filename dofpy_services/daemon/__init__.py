"""The services framework: declare a service, and one runner configures,
runs and observes it as a daemon; one CLI (``dofpy <service> <command>``).

- :mod:`~dofpy_services.daemon.config` — TOML settings as frozen dataclasses,
  every key also a flag.
- :mod:`~dofpy_services.daemon.service` — the :class:`Service` declaration.
- :mod:`~dofpy_services.daemon.lifecycle` — :func:`run_daemon`: start, serve,
  drain on SIGTERM, close.
- :mod:`~dofpy_services.daemon.logs`, :mod:`~dofpy_services.daemon.metrics`,
  :mod:`~dofpy_services.daemon.health` — observability.
- :mod:`~dofpy_services.daemon.cli` — the command line from the declarations.
"""

from dofpy_services.daemon.config import ConfigError, DaemonConfig, load_config, option
from dofpy_services.daemon.health import DAEMON_INTERFACE, DAEMON_OBJECT, Health
from dofpy_services.daemon.lifecycle import run_daemon
from dofpy_services.daemon.service import Command, Service, ServiceContext

__all__ = [
    "DAEMON_INTERFACE",
    "DAEMON_OBJECT",
    "Command",
    "ConfigError",
    "DaemonConfig",
    "Health",
    "Service",
    "ServiceContext",
    "load_config",
    "option",
    "run_daemon",
]
