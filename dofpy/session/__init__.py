"""The sans-IO DPS node: peers, operation ids, retransmission, duplicate
suppression, DSP and DPP common operations (:class:`~dofpy.session.node.Node`)."""
