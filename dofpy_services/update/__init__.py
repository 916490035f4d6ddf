"""The Update service: firmware update campaigns from approval to confirmed boot.

So far (issue 14, Builds 2, 3 and 7): a campaign's terms and the signed
approvals its policy requires (:func:`require_approvals`), the service's
append-only, hash-chained, signed audit trail (:class:`AuditLog`,
:func:`verify_trail`), planning a campaign to its deadline
(:func:`plan_campaign`), the per-device tracking record
(:class:`TrackingRecord`) and reports (:func:`build_report`); the
campaign engine: :mod:`~dofpy_services.update.campaign` (the spec and its
rules), :mod:`~dofpy_services.update.engine` (sans-IO decisions),
:mod:`~dofpy_services.update.campaign_store` (the durable, leased tables),
:mod:`~dofpy_services.update.worker`, :mod:`~dofpy_services.update.notify`
and :mod:`~dofpy_services.update.daemon` (``dofpy update serve``). See
docs/operations.md ("Operating the Update service") and docs/protocol.md
section 10. The device-facing side (the agent's interface, signed install
reports, the provider deciding from a plan) is
:mod:`dofpy_services.update.device_interface` and
:mod:`dofpy_services.update.device_provider` (docs/protocol.md section 11).
"""

from dofpy_services.update.approvals import (
    APPROVAL_CONTENT_TYPE,
    Approval,
    ApprovalPolicy,
    ApprovalReport,
    CampaignRefused,
    CampaignTerms,
    Decision,
    check_approvals,
    decode_approval_untrusted,
    require_approvals,
    sign_approval,
)
from dofpy_services.update.audit import (
    AuditCheckpoint,
    AuditEntry,
    AuditLog,
    TamperKind,
    TrailReport,
    TrailTampered,
    decode_audit_entry_untrusted,
    decode_checkpoint_untrusted,
    read_trail,
    sign_checkpoint,
    verify_trail,
)
from dofpy_services.update.planning import (
    DEFAULT_CAPACITY,
    CampaignPlan,
    Capacity,
    CapacityFigure,
    PlannedWave,
    PlanRequest,
    Urgency,
    plan_campaign,
)
from dofpy_services.update.reports import FORMATS, CampaignReport, build_report, render_report
from dofpy_services.update.tracking import (
    DeviceState,
    Stage,
    TrackingRecord,
    Transition,
    load_tracking_export,
    write_tracking_export,
)

__all__ = [
    "APPROVAL_CONTENT_TYPE",
    "DEFAULT_CAPACITY",
    "FORMATS",
    "Approval",
    "ApprovalPolicy",
    "ApprovalReport",
    "AuditCheckpoint",
    "AuditEntry",
    "AuditLog",
    "CampaignPlan",
    "CampaignRefused",
    "CampaignReport",
    "CampaignTerms",
    "Capacity",
    "CapacityFigure",
    "Decision",
    "DeviceState",
    "PlanRequest",
    "PlannedWave",
    "Stage",
    "TamperKind",
    "TrackingRecord",
    "TrailReport",
    "TrailTampered",
    "Transition",
    "Urgency",
    "build_report",
    "check_approvals",
    "decode_approval_untrusted",
    "decode_audit_entry_untrusted",
    "decode_checkpoint_untrusted",
    "load_tracking_export",
    "plan_campaign",
    "read_trail",
    "render_report",
    "require_approvals",
    "sign_approval",
    "sign_checkpoint",
    "verify_trail",
    "write_tracking_export",
]
