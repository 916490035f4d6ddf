"""The Image service on the daemon framework, declared once as :data:`IMAGE`.

Today it carries the offline commands (keys, trust roots, signing,
verifying: :data:`~dofpy_services.image.signing.SIGNING_COMMANDS`); the
store's commands (``publish``, ``fetch``, ``list``, ``gc``) join them in
:data:`STORE_COMMANDS`, and ``dofpy image serve`` (the runner's) becomes the
Image provider once :data:`IMAGE` names its interface, object id, provider,
store opener and transfer store.
"""

from __future__ import annotations

from dataclasses import dataclass

from dofpy_services.daemon.config import DaemonConfig
from dofpy_services.daemon.service import Command, Service
from dofpy_services.image.signing import SIGNING_COMMANDS

__all__ = ["IMAGE", "STORE_COMMANDS", "ImageConfig"]


@dataclass(frozen=True, slots=True)
class ImageConfig(DaemonConfig):
    """The Image provider's settings: the common ones (its own keys, the
    store's location, the trust root it serves, come with the store)."""


STORE_COMMANDS: tuple[Command, ...] = ()
"""The image store's commands (publish, fetch, list, gc): declared with the store."""

IMAGE: Service[ImageConfig] = Service(
    name="image",
    summary="signed firmware images: keys, trust roots, manifests, and serving them",
    config=ImageConfig,
    commands=(*SIGNING_COMMANDS, *STORE_COMMANDS),
    serve_example="dofpy image serve --config /etc/dofpy/image.toml",
)
