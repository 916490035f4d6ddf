"""Objects over OAP: interfaces (:mod:`~dofpy.oap.interface`), errors
(:mod:`~dofpy.oap.errors`) and the sans-IO provider/requestor core
(:class:`~dofpy.oap.core.OapCore`)."""
