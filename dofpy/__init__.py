"""dofpy: the OpenDOF protocol stack on UDP, in Python.

dofpy speaks the OpenDOF protocol stack (DNP/DPP framing, DSP, OAP objects,
DPP common operations) so that Wireshark's DOF dissector decodes every packet.
It is built as a sans-IO core with a thin trio shell:

- objects: :class:`Interface` with typed :class:`Property`, :class:`Method`,
  :class:`EventDef` and :class:`ExceptionDef` items, addressed by :class:`OID`
  and :class:`IID`; structured values are records (:func:`record`, frozen
  dataclasses sent as canonical CBOR maps) and :class:`RecordList`;
- the async API: :func:`open_node` gives a :class:`DofNode` that provides
  objects (subclass :class:`Provider`) and requests from peers
  (``await node.get(...)``, ``set``, ``invoke``, ``subscribe``, ``ping``);
  a handler learns who asks (the authenticated identity) from
  :func:`current_request`; ``Interface.client(node, peer, oid)`` gives an
  :class:`ObjectClient` whose items are attributes (``await thermo.add(2, 3)``);
- security: a :class:`SecurityConfig` in :class:`NodeConfig` makes a node join
  its domain (:func:`load_credentials` reads one from the file the Authenticator
  wrote for the node): TEP sessions keyed by the Authenticator, AES-256-CCM on every
  packet, permissions checked on every request (see ``docs/operations.md``);
  nothing goes in the clear unless :class:`PlaintextPolicy` ``ALLOW`` says so;
- block transfer: :func:`open_transfer_node` publishes objects (a
  :class:`Manifest` with a Merkle root), relays them and fetches them, every
  block verified before it is stored;
- the sans-IO cores for other event loops and deterministic tests:
  :class:`OapCore` (objects) over :class:`Node` (DPS sessions), both
  ``DatagramCore``\\ s driven by :func:`open_udp_endpoint` or by
  :mod:`dofpy.testing.netsim`;
- errors: every exception is a :class:`DofError`; malformed input raises only
  :class:`BadPacket`; refusals by a provider raise :class:`OapError` or
  :class:`ProviderException` at the requestor.

The wire codecs live in :mod:`dofpy.wire` (``*_untrusted`` decoders).
"""

from dofpy._core import Address, DatagramCore
from dofpy._version import __version__
from dofpy.credentials import (
    CredentialsError,
    NodeCredentials,
    format_address,
    load_credentials,
    parse_address,
    write_credentials,
)
from dofpy.errors import (
    BadPacket,
    BrokenResourceError,
    ClosedResourceError,
    DofError,
    DofTimeoutError,
    LocalProtocolError,
    PeerIdentityMismatch,
    ProtocolError,
    ProviderNotPermitted,
    RemoteProtocolError,
    SecureSessionCause,
    SecureSessionFailed,
    SecureSessionRefused,
    SecureSessionTimeout,
)
from dofpy.oap.client import ItemClient, ObjectClient
from dofpy.oap.core import OapConfig, OapCore
from dofpy.oap.errors import OapError, OapErrorCode, ProviderException
from dofpy.oap.interface import (
    EventDef,
    ExceptionDef,
    Interface,
    Method,
    Param,
    Property,
    RecordList,
    ValueType,
)
from dofpy.session._retry import RetryPolicy
from dofpy.session.config import NodeConfig, PlaintextPolicy, SecurityConfig
from dofpy.session.node import Node
from dofpy.transfer.core import TransferConfig
from dofpy.transfer.manifest import Manifest
from dofpy.transfer.messages import TRANSFER_IID
from dofpy.transfer.receiver import ReceiverConfig, ReceiverStatistics
from dofpy.transfer.store import BlockStore, FileStore, MemoryStore
from dofpy.trio import (
    DofNode,
    Provider,
    Subscription,
    TransferNode,
    current_request,
    open_node,
    open_transfer_node,
    open_udp_endpoint,
)
from dofpy.wire.oid import IID, OID
from dofpy.wire.permissions import (
    Action,
    BindingPermission,
    PermissionSet,
)
from dofpy.wire.record import (
    IntRange,
    MaxLen,
    UInt8,
    UInt16,
    UInt32,
    UInt64,
    decode_record_untrusted,
    encode_record,
    record,
)

__all__ = [
    "IID",
    "OID",
    "TRANSFER_IID",
    "Action",
    "Address",
    "BadPacket",
    "BindingPermission",
    "BlockStore",
    "BrokenResourceError",
    "ClosedResourceError",
    "CredentialsError",
    "DatagramCore",
    "DofError",
    "DofNode",
    "DofTimeoutError",
    "EventDef",
    "ExceptionDef",
    "FileStore",
    "IntRange",
    "Interface",
    "ItemClient",
    "LocalProtocolError",
    "Manifest",
    "MaxLen",
    "MemoryStore",
    "Method",
    "Node",
    "NodeConfig",
    "NodeCredentials",
    "OapConfig",
    "OapCore",
    "OapError",
    "OapErrorCode",
    "ObjectClient",
    "Param",
    "PeerIdentityMismatch",
    "PermissionSet",
    "PlaintextPolicy",
    "Property",
    "ProtocolError",
    "Provider",
    "ProviderException",
    "ProviderNotPermitted",
    "ReceiverConfig",
    "ReceiverStatistics",
    "RecordList",
    "RemoteProtocolError",
    "RetryPolicy",
    "SecureSessionCause",
    "SecureSessionFailed",
    "SecureSessionRefused",
    "SecureSessionTimeout",
    "SecurityConfig",
    "Subscription",
    "TransferConfig",
    "TransferNode",
    "UInt8",
    "UInt16",
    "UInt32",
    "UInt64",
    "ValueType",
    "__version__",
    "current_request",
    "decode_record_untrusted",
    "encode_record",
    "format_address",
    "load_credentials",
    "open_node",
    "open_transfer_node",
    "open_udp_endpoint",
    "parse_address",
    "record",
    "write_credentials",
]
