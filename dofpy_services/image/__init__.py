"""The Image service: ``dofpy image ...``. Signing keys on disk
(:mod:`~dofpy_services.image.keys`), the offline signing commands
(:mod:`~dofpy_services.image.signing`), the immutable content-addressed
store (:mod:`~dofpy_services.image.store`), confidential images
(:mod:`~dofpy_services.image.encryption`), serving and fetching
(:mod:`~dofpy_services.image.serving`) and the service declaration
(:data:`~dofpy_services.image.service.IMAGE`)."""
