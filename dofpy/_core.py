"""The sans-IO contract between a protocol core and whatever drives it.

A core is a pure object: it never touches a socket or reads a clock. Its
driver (the trio UDP endpoint in :mod:`dofpy.trio`, or the seeded simulator in
:mod:`dofpy.testing.netsim`) feeds it datagrams and the current time, asks it
what to send and when it next wants to be woken, and does the I/O.

Driving rules every driver follows, and every core may rely on:

* ``now`` is monotonic, in seconds, on the same clock for every call; a core
  compares it with the deadlines it returned from :meth:`DatagramCore.get_timer`.
* After any call into the core (``receive_datagram``, ``handle_timer``, or an
  application call such as starting a request, followed by the driver's
  ``wakeup``), the driver calls :meth:`DatagramCore.datagrams_to_send` and then
  re-reads :meth:`DatagramCore.get_timer`.
* ``handle_timer`` is called once ``now >= get_timer()``; it may be called
  late, never early.
"""

from __future__ import annotations

from typing import Protocol, TypeAlias

__all__ = ["Address", "DatagramCore"]

Address: TypeAlias = tuple[str, int]
"""A UDP peer as ``(host, port)``: a numeric IPv4 or IPv6 host (IPv4-mapped IPv6
addresses are given as plain IPv4), IPv6 scope and flow information dropped."""


class DatagramCore(Protocol):
    """A protocol state machine driven by datagrams and time, with no I/O."""

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        """Take one datagram that arrived from ``addr`` at time ``now``.

        A malformed datagram is the core's to count and drop; a driver treats a
        ``BadPacket`` escaping from here as a dropped datagram, not a failure.
        """
        ...

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        """Everything the core wants sent now, in order, as ``(payload, destination)``."""
        ...

    def get_timer(self) -> float | None:
        """The absolute time of the core's next deadline, or ``None`` for none."""
        ...

    def handle_timer(self, now: float) -> None:
        """Act on every deadline that is due at ``now``."""
        ...
