"""The Image service on the daemon framework, declared once as :data:`IMAGE`.

The offline commands (keys, trust roots, signing, verifying:
:data:`~dofpy_services.image.signing.SIGNING_COMMANDS`), the store's
(recipient keys, publish, list, gc, fetch:
:data:`~dofpy_services.image.commands.STORE_COMMANDS`), and ``dofpy image
serve``: the Image provider (:data:`~dofpy_services.image.serving.IMAGE_INTERFACE`
on :data:`~dofpy_services.image.serving.IMAGE_OBJECT`) with the block transfer
serving the store's images — or, with ``upstream`` set, a caching relay of
upstream providers whose ``store`` folder holds only the blocks it relayed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import trio

from dofpy._core import Address
from dofpy.credentials import parse_address
from dofpy.transfer.messages import TRANSFER_IID
from dofpy.transfer.store import BlockStore, FileStore
from dofpy.trio import DofNode, Provider
from dofpy.wire.oid import OID
from dofpy.wire.permissions import Action, BindingPermission, PermissionSet
from dofpy_services.daemon.config import DURATION, PATH, TEXT, ConfigError, DaemonConfig, option
from dofpy_services.daemon.service import Service, ServiceContext
from dofpy_services.image.commands import STORE_COMMANDS, open_image_store
from dofpy_services.image.manifests import describe_manifest
from dofpy_services.image.serving import IMAGE_INTERFACE, IMAGE_OBJECT, ImageProvider, RelayProvider
from dofpy_services.image.signing import SIGNING_COMMANDS
from dofpy_services.image.store import ImageBlockStore, ImageStore

__all__ = ["IMAGE", "STORE_COMMANDS", "ImageConfig"]


@dataclass(frozen=True, slots=True)
class ImageConfig(DaemonConfig):
    """The Image provider's settings: the common ones and its own."""

    store: str = option(
        PATH,
        "the image store's folder (a relay: the folder of the blocks it relays)",
        default="images",
    )
    upstream: str = option(
        TEXT,
        "a relay's upstream Image providers, host:port, comma-separated (empty: serve the store)",
        default="",
    )
    refresh_interval: float = option(
        DURATION,
        "how often the store is read again for what other processes published",
        default=10.0,
    )


def _upstream(config: ImageConfig) -> list[Address]:
    return [parse_address(part.strip()) for part in config.upstream.split(",") if part.strip()]


def _check(config: ImageConfig) -> None:
    try:
        _upstream(config)
    except ValueError as exc:
        raise ConfigError(f"upstream: {exc}") from None
    if config.refresh_interval <= 0:
        raise ConfigError("refresh_interval must be > 0")


@dataclass(slots=True)
class _Serving:
    """What ``dofpy image serve`` opened: the store (or a relay's block
    folder), its block store, and the provider once made."""

    store: ImageStore | None
    blocks: BlockStore
    provider: ImageProvider | RelayProvider | None = None
    closers: list[object] = field(default_factory=list)


@asynccontextmanager
async def _open_store(config: ImageConfig) -> AsyncIterator[_Serving]:
    if _upstream(config):
        relay_blocks = await trio.to_thread.run_sync(FileStore, config.store)
        try:
            yield _Serving(None, relay_blocks)
        finally:
            await trio.to_thread.run_sync(relay_blocks.close)
        return
    store = await trio.to_thread.run_sync(open_image_store, config.store)
    blocks = ImageBlockStore(store)
    try:
        yield _Serving(store, blocks)
    finally:
        blocks.close()


def _transfer_store(context: ServiceContext) -> BlockStore:
    serving: _Serving = context.store
    return serving.blocks


def _provider(context: ServiceContext) -> Provider:
    serving: _Serving = context.store
    assert context.transfer is not None  # the runner opens a transfer node first
    upstream = _upstream(context.config)
    if upstream:
        serving.provider = RelayProvider(context.transfer, upstream, describe_manifest)
    else:
        assert serving.store is not None
        serving.provider = ImageProvider(serving.store, context.transfer)
    return serving.provider


async def _attach(context: ServiceContext, node: DofNode, nursery: trio.Nursery) -> None:
    provider = context.store.provider
    if not isinstance(provider, ImageProvider):
        return
    await provider.refresh()  # serve every published image from the start

    async def refresh_now_and_then() -> None:
        while True:
            await trio.sleep(context.config.refresh_interval)
            await provider.refresh()

    nursery.start_soon(refresh_now_and_then)


def _permissions(context: ServiceContext) -> PermissionSet:
    """What the daemon's node asks for in its sessions: nothing to serve; as
    a relay, to ask its upstream providers for manifests and blocks (without
    it a relay's requests upstream are refused, whatever it was granted)."""
    if not _upstream(context.config):
        return PermissionSet()
    return PermissionSet(
        tuple(
            BindingPermission(Action.EXECUTE, OID(0), iid)
            for iid in (IMAGE_INTERFACE.iid, TRANSFER_IID)
        )
    )


def _statistics(serving: _Serving) -> dict[str, float]:
    if serving.store is None:
        return {}
    return {
        "manifests": float(len(serving.store.manifests())),
        "served_images": float(
            serving.provider.served_images if isinstance(serving.provider, ImageProvider) else 0
        ),
    }


IMAGE: Service[ImageConfig] = Service(
    name="image",
    summary="signed firmware images: keys, trust roots, manifests, the store, and serving them",
    config=ImageConfig,
    interface=IMAGE_INTERFACE,
    object_id=IMAGE_OBJECT,
    provider=_provider,
    permissions=_permissions,
    open_store=_open_store,
    transfer_store=_transfer_store,
    attach=_attach,
    check=_check,
    store_statistics=_statistics,
    commands=(*SIGNING_COMMANDS, *STORE_COMMANDS),
    serve_example="dofpy image serve --store /srv/images --listen 0.0.0.0:3567 "
    "--credentials image-server.toml",
    store_threads=4,
)
