"""OpenDOF security: TEP key derivation, the CCM security mode, replay windows
and secure datagrams (:mod:`~dofpy.security.crypto`,
:mod:`~dofpy.security.replay`, :mod:`~dofpy.security.secure_frame`)."""
