"""The one table ``make bench`` ends with: every headline figure beside its
peer, measured in the same run.

Each benchmark module adds its headline rows to a :class:`Summary` as it
measures (its own sections keep the detail); a row's peer is what a user would
otherwise use for the same job (raw UDP, TFTP, HTTP, ``sha256sum``, the
database run directly), left empty where none exists.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class SummaryRow:
    figure: str
    value: float
    unit: str
    peer: str = ""
    peer_value: float | None = None
    higher_is_better: bool = True

    @property
    def ratio(self) -> float | None:
        """dofpy over the peer, so that above 1 is better for dofpy (for a
        time, the peer's over dofpy's)."""
        if self.peer_value is None or self.peer_value <= 0 or self.value <= 0:
            return None
        if self.higher_is_better:
            return self.value / self.peer_value
        return self.peer_value / self.value


@dataclass
class Summary:
    rows: list[SummaryRow] = field(default_factory=list)

    def add(
        self,
        figure: str,
        value: float,
        unit: str,
        peer: str = "",
        peer_value: float | None = None,
        *,
        higher_is_better: bool = True,
    ) -> None:
        if not math.isfinite(value):
            return
        self.rows.append(SummaryRow(figure, value, unit, peer, peer_value, higher_is_better))

    def format(self) -> str:
        """The table; the ratio column reads "dofpy is N x as good as the peer"."""
        if not self.rows:
            return "Summary: nothing measured"
        width = max(len(row.figure) for row in self.rows)
        peer_width = max(len("peer"), *(len(row.peer) for row in self.rows))
        header = (
            f"{'figure':<{width}}  {'dofpy':>10} {'unit':<16}  {'peer':<{peer_width}}  "
            f"{'peer':>10}  {'dofpy vs peer':>13}"
        )
        lines = [header, "-" * len(header)]
        for row in self.rows:
            peer_value = "" if row.peer_value is None else f"{row.peer_value:10.4g}"
            ratio = row.ratio
            shown = "" if ratio is None else f"{ratio:12.3g}x"
            lines.append(
                f"{row.figure:<{width}}  {row.value:>10.4g} {row.unit:<16}  "
                f"{row.peer:<{peer_width}}  {peer_value:>10}  {shown:>13}".rstrip()
            )
        lines.append(
            "(dofpy vs peer: dofpy's rate over the peer's, or for times the peer's over "
            "dofpy's; above 1 is better for dofpy. Same run, same machine.)"
        )
        return "\n".join(lines)
