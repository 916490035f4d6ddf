"""How a failed handshake is named: the error of a TEP Reject, of a handshake
that timed out on either side, and the hints that say what to check. Pure
functions of what the handshake saw; nothing here sends or keeps state."""

from __future__ import annotations

from dofpy._core import Address
from dofpy.errors import BadPacket, SecureSessionCause, SecureSessionRefused, SecureSessionTimeout
from dofpy.session.config import SecurityConfig
from dofpy.session.handshake import (
    AUTHENTICATOR_REJECT_CODE,
    COOKIE_REJECT_CODE,
    HANDSHAKE_REJECT_CODE,
    MODE_REJECT_CODE,
    Handshake,
    Phase,
    printable,
    where,
)
from dofpy.wire.ccm import CcmStrength
from dofpy.wire.security import InitiatorBlock
from dofpy.wire.trp import TrpError

__all__ = [
    "incoming_refusal",
    "initiator_timed_out",
    "mode_mismatch",
    "refused",
    "responder_timed_out",
]

# Prefix of a Reject 0xC2 description: the responder's Authenticator failed it.
AUTHENTICATOR_TROUBLE = b"authenticator: "
TICKET_INVALID = b"authenticator ticket invalid"
# Suffix of a Reject 0xC1 description: the refused Request Session went in the clear.
ASKED_IN_CLEAR = b" (asked in the clear)"


def initiator_timed_out(
    handshake: Handshake, now: float, attempts: int, config: SecurityConfig
) -> SecureSessionTimeout:
    """Why ``handshake`` (ours) is not done by ``now``: the most likely cause
    seen (``attempts``: copies of its current Rekey sent)."""
    peer = handshake.peer
    at = where(peer)
    waited = now - handshake.started
    if handshake.phase is Phase.CONFIRM_SENT:
        cause = SecureSessionCause.NO_CONFIRM_ACK
        text = (
            f"{at} did not acknowledge this node's Confirm (its Accept verified)"
            f" in {waited:.1f} s: the link lost it, or {at} failed"
        )
    elif handshake.bad_accepts:
        cause = SecureSessionCause.ACCEPT_NOT_VERIFIED
        text = (
            f"the Accept from {at} did not verify with this node's identity secret"
            f" ({handshake.bad_accepts} Accept{'s' * (handshake.bad_accepts > 1)}):"
            f" this node's secret ({config.identity}), or the Authenticator's"
            " record of it, is wrong (or the Accepts were forged)"
        )
    elif handshake.cookie_rounds:
        cause = SecureSessionCause.NO_ACCEPT
        text = (
            f"{at} answered with a cookie, then sent no Accept in {waited:.1f} s:"
            f" it may be waiting for its Authenticator (see {at}'s log)"
        )
    else:
        cause = SecureSessionCause.NO_ANSWER
        rekeys = handshake.rekeys_sent + attempts
        text = (
            f"{at} did not answer the handshake ({rekeys} Rekey{'s' * (rekeys > 1)}"
            f" in {waited:.1f} s): is it running, reachable, and a secure node of"
            f" {config.domain}?"
        )
        if peer == config.authenticator:
            text += " (an Authenticator without its own identity takes no sealed TRP)"
    return SecureSessionTimeout(peer, cause, f"no secure session with {at}: {text}")


def refused(
    peer: Address, code: int, description: bytes, config: SecurityConfig
) -> SecureSessionRefused:
    """The error of a TEP Reject from ``peer``, naming its cause."""
    at = where(peer)
    said = printable(description)
    head = f"{at} rejected the secure session"
    if code == MODE_REJECT_CODE:
        cause = SecureSessionCause.MODE_MISMATCH
        text = (
            f"it requires another security mode (TEP Reject {code:#04x}: {said});"
            " give both nodes the same tag_length"
        )
    elif code == AUTHENTICATOR_REJECT_CODE:
        cause = SecureSessionCause.AUTHENTICATOR_REFUSED
        name, _, rest = said.partition(" ")
        if rest:
            text = (
                f"the Authenticator refused it ({name}); {at} asked it in the clear,"
                " which a sealed-only Authenticator (the default) always refuses:"
                f" {at} needs seal_authenticator (otherwise:"
                f" {trp_hint(name, config)})"
            )
        else:
            text = f"the Authenticator refused it ({name}: {trp_hint(name, config)})"
    elif code == HANDSHAKE_REJECT_CODE and description == TICKET_INVALID:
        cause = SecureSessionCause.TICKET_NOT_VERIFIED
        text = (
            f"its ticket from the Authenticator did not verify with its own identity"
            f" secret: {at}'s secret, or the Authenticator's record of it, is wrong"
        )
    elif code == HANDSHAKE_REJECT_CODE and description.startswith(AUTHENTICATOR_TROUBLE):
        cause = SecureSessionCause.AUTHENTICATOR_FAILED
        why = printable(description[len(AUTHENTICATOR_TROUBLE) :])
        text = (
            f"it could not get a session key from its Authenticator ({why}:"
            f" {AUTHENTICATOR_TROUBLE_HINTS.get(why, 'see its log')})"
        )
    elif code == HANDSHAKE_REJECT_CODE and description == b"domain":
        cause = SecureSessionCause.REJECTED
        text = f"it is not a node of {config.domain} (TEP Reject {code:#04x}: domain)"
    elif code == COOKIE_REJECT_CODE:
        cause = SecureSessionCause.REJECTED
        text = (
            "it kept asking for a cookie: the address it sees for this node changes"
            " between Rekeys (a NAT rebinding?)"
        )
    else:
        cause = SecureSessionCause.REJECTED
        text = f"TEP code {code:#04x}: {said}"
    return SecureSessionRefused(peer, cause, f"{head}: {text}", code)


def responder_timed_out(handshake: Handshake, now: float, trouble: str) -> SecureSessionTimeout:
    """Why a handshake we answered is not done by its deadline (``trouble``:
    why the Authenticator has not answered, when that is what it waits for)."""
    at = where(handshake.peer)
    claimed = handshake.block.request.identity.node
    if handshake.phase is Phase.ASKING_AUTHENTICATOR:
        cause = SecureSessionCause.AUTHENTICATOR_FAILED
        if handshake.token is not None:
            text = (
                "the application did not answer its AuthenticatorRequested in time"
                " (answer_authenticator)"
            )
        else:
            text = trouble
    elif handshake.bad_confirms:
        cause = SecureSessionCause.CONFIRM_NOT_VERIFIED
        text = (
            f"its Confirms ({handshake.bad_confirms}) did not verify with the session"
            " key (forged, or a broken initiator)"
        )
    else:
        cause = SecureSessionCause.NO_CONFIRM
        text = (
            "it sent no Confirm after this node's Accept: most likely it could not"
            f" verify the Accept, i.e. its identity secret differs from the"
            f" Authenticator's record of {claimed}; or it went away"
        )
    return SecureSessionTimeout(
        handshake.peer,
        cause,
        f"handshake from {at} (claims {claimed}) not done in"
        f" {now - handshake.started:.1f} s: {text}",
    )


def mode_mismatch(block: InitiatorBlock, tag_length: int) -> str | None:
    """Why the initiator's security mode is not ours (None: it is)."""
    ours = f"CCM AES-256 tag {tag_length}"
    try:
        options = block.security_mode.ccm_options()
    except BadPacket:
        theirs = f"mode {block.security_mode.protocol_id:#06x}"
    else:
        if (
            options.min_tag == tag_length
            and options.encrypt_min
            and CcmStrength.AES_256 in options.strengths
        ):
            return None
        theirs = f"CCM tag {options.min_tag}" + ("" if options.encrypt_min else " unencrypted")
        if CcmStrength.AES_256 not in options.strengths:
            theirs += " without AES-256"
    return f"{theirs} (initiator) / {ours} (responder)"


def incoming_refusal(handshake: Handshake, text: str) -> str:
    claimed = handshake.block.request.identity.node
    return f"handshake from {where(handshake.peer)} (claims {claimed}) refused: {text}"


TRP_HINTS = {
    TrpError.UNKNOWN_INITIATOR.name: "this node ({identity}) is not enrolled in {domain}",
    TrpError.UNKNOWN_RESPONDER.name: "the responder is not enrolled in {domain}",
    TrpError.UNKNOWN_DOMAIN.name: "the Authenticator does not serve {domain}",
    TrpError.ACCESS_DENIED.name: (
        "a node is revoked, or asks for permissions it was not granted"
        " (see the Authenticator's audit)"
    ),
    TrpError.HIGH_LOAD.name: "the Authenticator is overloaded or rate-limits the responder",
    TrpError.BAD_MODE.name: "the Authenticator does not allow this security mode",
    TrpError.INCOMPATIBLE_SECURITY_IDENTIFIERS.name: "a credential type it does not take",
    TrpError.PARSE_ERROR.name: "it could not read the request",
    TrpError.INTERNAL_ERROR.name: "it failed (its log says why)",
}


def trp_hint(name: str, config: SecurityConfig) -> str:
    hint = TRP_HINTS.get(name, "an unknown TRP error")
    return hint.format(identity=config.identity, domain=config.domain)


# What the responder's Reject "authenticator: <cause>" tells the initiator to check.
AUTHENTICATOR_TROUBLE_HINTS = {
    SecureSessionCause.NO_ANSWER.value: "is its Authenticator running and reachable from it?",
    SecureSessionCause.NO_ACCEPT.value: "its Authenticator is alive but sent no Accept",
    SecureSessionCause.ACCEPT_NOT_VERIFIED.value: (
        "its identity secret, or the Authenticator's record of it, is wrong"
    ),
    SecureSessionCause.NO_CONFIRM_ACK.value: "its handshake with the Authenticator did not end",
    SecureSessionCause.MODE_MISMATCH.value: "its Authenticator uses another security mode",
    SecureSessionCause.AUTHENTICATOR_REFUSED.value: "the Authenticator refused its handshake",
    "identity-mismatch": "another identity answers at its Authenticator's address",
}
