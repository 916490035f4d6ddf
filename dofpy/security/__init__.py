"""OpenDOF security, above the wire codecs (:mod:`dofpy.wire.tep`,
:mod:`dofpy.wire.trp`, :mod:`dofpy.wire.security`, :mod:`dofpy.wire.ccm`,
:mod:`dofpy.wire.permissions`). Layouts and constructions: ``docs/protocol.md``,
sections 4 and 5.

- :mod:`~dofpy.security.crypto`: the pure cryptography of TEP and CCM (tickets,
  Accept / Confirm confirmations, AES-256-CCM) and the TEP exchange step by step.
- :mod:`~dofpy.security.secure_frame`: whole secure datagrams (seal / open) and
  ``SecureChannel``, one session's two directions.
- :mod:`~dofpy.security.replay`: packet-number counters and sliding replay windows.
- :mod:`~dofpy.security.identity`: domains, node identities and their key
  credentials (identity secrets derived from the domain master key).
- :mod:`~dofpy.security.permissions`: permission evaluation (may these
  permissions do this? do granted permissions cover requested ones?).
- :mod:`~dofpy.security.authenticator`: the sans-IO Authentication Server answering
  TRP Request Session with session tickets.
- :mod:`~dofpy.security.keylog`: the operator's session key log, for Wireshark.
"""
