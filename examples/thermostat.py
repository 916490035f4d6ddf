"""The interface the secure provider and requestor examples share.

An interface is a contract both sides import: its IID, and each item's id,
name and types. The permissions in the examples name the same IID and object,
so that the grants (``dofpy authenticator grant ... --object hall@example.org
--interface '[1:{01000010}]'``) and the code agree.
"""

from __future__ import annotations

from dofpy import OID, Interface, Method, Param, Property, ValueType

THERMOSTAT = Interface.define(
    "[1:{01000010}]",
    "Thermostat",
    [
        Property(1, "temperature", ValueType.INT, observable=True),
        Property(2, "target", ValueType.INT),
        Method(
            3,
            "set_target",
            arguments=(Param("celsius", ValueType.INT),),
            results=(Param("previous", ValueType.INT),),
        ),
    ],
)
"""A room thermostat: the measured temperature, the target, and a method to
change the target (which returns the previous one)."""

HALL = OID(3, b"hall@example.org")
"""The object the provider serves: the hall's thermostat."""
