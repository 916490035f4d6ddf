"""The Update service: campaigns from approval to confirmed boot.

So far: approvals (:mod:`~dofpy_services.update.approvals`), the audit trail
(:mod:`~dofpy_services.update.audit`), planning
(:mod:`~dofpy_services.update.planning`), the per-device tracking record
(:mod:`~dofpy_services.update.tracking`) and reports
(:mod:`~dofpy_services.update.reports`); the command line in
:mod:`~dofpy_services.update.service`.
"""
