"""The ``dofpy`` command line: ``dofpy <service> <command>`` for every service.

The services are declared (:class:`dofpy_services.daemon.Service`); the
command line is built from their declarations by
:mod:`dofpy_services.daemon.cli`. ``python -m dofpy_services.cli`` is the
``dofpy`` console script.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from dofpy_services.authenticator.service import AUTHENTICATOR
from dofpy_services.authenticator.store import StoreError
from dofpy_services.daemon.cli import run_cli
from dofpy_services.device.service import DEVICE
from dofpy_services.fleet.service import FLEET
from dofpy_services.image.service import IMAGE
from dofpy_services.update.service import UPDATE
from dofpy_services.version.service import VERSION

__all__ = ["SERVICES", "main"]

SERVICES = (AUTHENTICATOR, IMAGE, VERSION, UPDATE, DEVICE, FLEET)
"""Every service ``dofpy`` knows, in the order its help lists them."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dofpy`` console script; returns the exit status."""
    return run_cli(SERVICES, argv, user_errors=(StoreError,))


if __name__ == "__main__":
    sys.exit(main())
