"""The Image service: ``dofpy image ...``. Signing keys on disk
(:mod:`~dofpy_services.image.keys`), the offline signing commands
(:mod:`~dofpy_services.image.signing`) and the service declaration
(:data:`~dofpy_services.image.service.IMAGE`)."""
