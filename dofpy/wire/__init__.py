"""Pure codecs for the OpenDOF wire format: no I/O, no clocks.

One module a layer: :mod:`~dofpy.wire.oid` (OID, IID), :mod:`~dofpy.wire.dnp`,
:mod:`~dofpy.wire.dpp`, :mod:`~dofpy.wire.dsp`, :mod:`~dofpy.wire.common`
(DPP common operations), :mod:`~dofpy.wire.oap` and :mod:`~dofpy.wire.values`
(CBOR value lists). Every decoder of untrusted bytes is named ``*_untrusted``
and raises only :class:`dofpy.BadPacket`; encoders refuse values they cannot
encode with ``ValueError``. Layouts: ``docs/protocol.md``.
"""
