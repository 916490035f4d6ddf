"""Fleet simulation (issue 15): many real device agents on simulated
bootloaders against running services, with loss, power cuts and offline
devices; ``dofpy fleet simulate`` (:mod:`~dofpy_services.fleet.service`)."""
