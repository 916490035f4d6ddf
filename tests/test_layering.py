"""No import runs up the layers that docs/architecture.md draws: between the
packages of ``dofpy``, and between the modules of the session layer."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "dofpy"

# Lower first: a package may import its own and those of a lower rank only.
PACKAGE_RANKS = {
    "errors": 0,
    "wire": 0,  # errors and wire share the bottom (wire raises BadPacket)
    "_core": 0,
    "_version": 0,
    "security": 1,
    "pcap": 1,
    "session": 2,
    "oap": 3,
    "credentials": 3,
    "transfer": 4,
    "image": 5,  # signed manifests over the transfer manifest
    "trio": 5,
    "testing": 6,
    "__init__": 6,
}

# The session layer, lower first: a module imports only modules before it.
SESSION_ORDER = (
    "_retry",
    "_dedup",
    "_table",
    "config",
    "events",
    "handshake",
    "admission",
    "refusals",
    "peers",
    "commands",
    "channels",
    "initiator",
    "responder",
    "secure_tables",
    "outbound",
    "operations",
    "inbound",
    "node",
    "__init__",
)


def _module(path: Path) -> tuple[str, ...]:
    return path.relative_to(ROOT).with_suffix("").parts


def _imports(path: Path) -> set[tuple[str, ...]]:
    """The ``dofpy`` modules ``path`` imports (``TYPE_CHECKING`` ones too)."""
    found: set[tuple[str, ...]] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found.update(tuple(n.split(".")[1:]) for n in names if n.split(".")[0] == "dofpy")
    return found


def test_the_layers_match_the_packages() -> None:
    on_disk = {_module(p)[0] for p in ROOT.glob("*") if p.suffix == ".py" or p.is_dir()}
    on_disk -= {"__pycache__", "py"}
    assert on_disk == set(PACKAGE_RANKS), "give every package of dofpy a rank"
    session = {p.stem for p in (ROOT / "session").glob("*.py")}
    assert session == set(SESSION_ORDER), "place every session module in SESSION_ORDER"


def test_no_import_runs_up_the_layers() -> None:
    upward = []
    for path in sorted(ROOT.rglob("*.py")):
        here = _module(path)
        for target in _imports(path):
            if not target:
                continue
            if PACKAGE_RANKS[target[0]] > PACKAGE_RANKS[here[0]]:
                upward.append(f"{'.'.join(here)} imports dofpy.{'.'.join(target)}")
            if (
                here[0] == target[0] == "session"
                and len(target) > 1
                and SESSION_ORDER.index(target[1]) >= SESSION_ORDER.index(here[1])
            ):
                upward.append(f"{'.'.join(here)} imports dofpy.{'.'.join(target)}")
    assert upward == []


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("from dofpy.session.node import Node\nimport dofpy.trio\n")
    assert _imports(sample) == {("session", "node"), ("trio",)}


# The parts split out of the transfer receiver and core (docs/architecture.md):
# each is a lower piece, so none imports the module it was split from.
TRANSFER_PARTS = {
    "losses": {"receiver", "core", "relay"},
    "fetch_plan": {"receiver", "core", "relay"},
    "proved_hashes": {"receiver", "core", "relay"},
    "asked": {"receiver", "core", "relay"},
    "progress": {"receiver", "core", "relay"},
    "local_source": {"receiver", "core", "relay"},
    "provider_side": {"core", "relay"},
}


def test_the_transfer_parts_do_not_import_what_they_were_split_from() -> None:
    upward = []
    for part, above in TRANSFER_PARTS.items():
        path = ROOT / "transfer" / f"{part}.py"
        for target in _imports(path):
            if target[:1] == ("transfer",) and len(target) > 1 and target[1] in above:
                upward.append(f"transfer.{part} imports dofpy.{'.'.join(target)}")
    assert upward == []
