"""Run the secure examples end to end, in one command, as a newcomer or CI would.

    python examples/run_all.py

It sets up a domain from nothing with the ``dofpy authenticator`` command, as
an operator would (docs/secure-setup.md walks through the same steps):

1. ``init-domain`` creates the domain ``example.org`` in a fresh SQLite
   database, and ``add-node`` enrols the Authenticator's own identity;
2. ``serve`` runs the Authenticator on 127.0.0.1, on a port the system picks
   (it reports it in its ready file);
3. ``add-node --credentials-out`` enrols the provider, the requestor, the image
   server and the device, each with a credentials file naming the
   Authenticator's address and identity, and ``grant`` gives each what it needs;
4. ``secure_provider.py`` serves the thermostat; ``secure_requestor.py`` reads
   it and changes its target; the same requestor expecting another identity at
   the provider's address is refused (``PeerIdentityMismatch``);
5. ``secure_transfer.py`` publishes a file and fetches it, verified.

Every step has a timeout, everything listens on 127.0.0.1 only, and every
process it started is stopped at the end. Exit status 0 only when every step
succeeded; otherwise 1, naming the step and showing its output.
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

EXAMPLES = Path(__file__).resolve().parent
DOMAIN = "example.org"
AUTHENTICATOR = "authenticator@example.org"
PROVIDER = "provider@example.org"
REQUESTOR = "requestor@example.org"
IMAGE_SERVER = "image-server@example.org"
DEVICE = "device@example.org"
THERMOSTAT_IID = "[1:{01000010}]"  # examples/thermostat.py
TRANSFER_IID = "[1:{D0F1}]"  # dofpy.TRANSFER_IID
READY_POLL = 0.05  # seconds between looks at a ready file


class StepFailed(Exception):
    """A step did not do what it should; the message says which and why."""


def dofpy_command(*arguments: str) -> list[str]:
    """The ``dofpy`` command of this Python (the same as the ``dofpy``
    script a ``pip install`` puts beside it)."""
    return [sys.executable, "-m", "dofpy_services.cli", *arguments]


def example_command(name: str, *arguments: str) -> list[str]:
    return [sys.executable, str(EXAMPLES / name), *arguments]


def shown(command: Sequence[str]) -> str:
    """The command as a reader would type it."""
    words = list(command)
    if words[:3] == [sys.executable, "-m", "dofpy_services.cli"]:
        words = ["dofpy", *words[3:]]
    elif words[0] == sys.executable and Path(words[1]).parent == EXAMPLES:
        words = ["python", f"examples/{Path(words[1]).name}", *words[2:]]
    return shlex.join(words)


class Runner:
    """Runs each step in ``workdir``, bounded by ``timeout`` seconds."""

    def __init__(self, workdir: Path, timeout: float, verbose: bool) -> None:
        self.workdir = workdir
        self.timeout = timeout
        self.verbose = verbose
        self.last_log = ""
        """The output of the last background process, once stopped."""

    def run(self, step: str, command: Sequence[str], *, expect_status: int = 0) -> str:
        """Run ``command`` to its end; its output (stdout, then stderr). Fails
        the step on another exit status or when it runs out of time."""
        print(f"$ {shown(command)}", flush=True)
        started = time.monotonic()
        try:
            result = subprocess.run(
                command,
                cwd=self.workdir,
                capture_output=True,
                text=True,
                timeout=self.timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise StepFailed(f"{step}: no result within {self.timeout} s") from None
        output = result.stdout + result.stderr
        if self.verbose or result.returncode != expect_status:
            print(indent(output), end="", flush=True)
        if result.returncode != expect_status:
            raise StepFailed(f"{step}: exit status {result.returncode}, expected {expect_status}")
        print(f"  ok: {step} ({time.monotonic() - started:.1f} s)", flush=True)
        return output

    @contextmanager
    def background(
        self, step: str, command: Sequence[str], ready_file: Path
    ) -> Iterator[tuple[subprocess.Popen[str], dict[str, str]]]:
        """Start ``command``, wait (bounded) for its ready file, yield the
        process and the file's contents; at the end stop it with SIGTERM and
        fail the step unless it exits 0 in time."""
        print(f"$ {shown(command)} &", flush=True)
        log = (self.workdir / f"{ready_file.stem}.log").open("w+")
        process = subprocess.Popen(
            command, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT, text=True
        )
        try:
            ready = self._wait_ready(step, process, ready_file, log)
            print(f"  ok: {step} ready: {json.dumps(ready)}", flush=True)
            try:
                yield process, ready
            except BaseException:
                print(f"  {step}'s output so far:\n{indent(read_log(log))}", end="", flush=True)
                raise
            process.send_signal(signal.SIGTERM)
            try:
                status = process.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                raise StepFailed(f"{step}: did not stop within {self.timeout} s") from None
            if self.verbose or status != 0:
                print(indent(read_log(log)), end="", flush=True)
            if status != 0:
                raise StepFailed(f"{step}: exit status {status} at SIGTERM, expected 0")
            print(f"  ok: {step} stopped", flush=True)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=self.timeout)
            self.last_log = read_log(log)
            log.close()

    def _wait_ready(
        self, step: str, process: subprocess.Popen[str], ready_file: Path, log: IO[str]
    ) -> dict[str, str]:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if ready_file.exists():
                ready: dict[str, str] = json.loads(ready_file.read_text())
                return ready
            if process.poll() is not None:
                break
            time.sleep(READY_POLL)
        print(indent(read_log(log)), end="", flush=True)
        if process.poll() is None:
            raise StepFailed(f"{step}: not ready within {self.timeout} s")
        raise StepFailed(f"{step}: exited with status {process.returncode} before it was ready")


def read_log(log: IO[str]) -> str:
    log.flush()
    log.seek(0)
    return log.read()


def indent(text: str) -> str:
    return "".join(f"  | {line}\n" for line in text.splitlines())


def expect(step: str, condition: bool, what: str) -> None:
    if not condition:
        raise StepFailed(f"{step}: {what}")


def run_all(workdir: Path, timeout: float, transfer_size: int, verbose: bool) -> None:
    runner = Runner(workdir, timeout, verbose)
    authenticator = ["authenticator"]
    db = ["--db", "authenticator.db"]
    in_domain = [*db, "--domain", DOMAIN]

    print("# 1. the domain, and the Authenticator's own identity")
    runner.run("init-domain", dofpy_command(*authenticator, "init-domain", *db, DOMAIN))
    runner.run(
        "enrol the Authenticator",
        dofpy_command(
            *authenticator,
            "add-node",
            *in_domain,
            AUTHENTICATOR,
            "--credentials-out",
            "authenticator.cred",
        ),
    )

    print("# 2. the Authenticator, on 127.0.0.1 and a port the system picks")
    serve = dofpy_command(
        *authenticator,
        "serve",
        *db,
        "--credentials",
        "authenticator.cred",
        "--listen",
        "127.0.0.1:0",
        "--ready-file",
        "authenticator.ready",
    )
    with runner.background("the Authenticator", serve, workdir / "authenticator.ready") as (
        _,
        ready,
    ):
        authenticator_address = ready["udp"]

        print("# 3. the nodes: credentials files, and what each is granted")
        for node in (PROVIDER, REQUESTOR, IMAGE_SERVER, DEVICE):
            runner.run(
                f"enrol {node}",
                dofpy_command(
                    *authenticator,
                    "add-node",
                    *in_domain,
                    node,
                    "--credentials-out",
                    f"{node.partition('@')[0]}.cred",
                    "--authenticator",
                    authenticator_address,
                    "--authenticator-identity",
                    AUTHENTICATOR,
                ),
            )
        grants = [
            (PROVIDER, "p", "hall@example.org", THERMOSTAT_IID),
            (REQUESTOR, "rx", "hall@example.org", THERMOSTAT_IID),
            (IMAGE_SERVER, "p", "*", TRANSFER_IID),
            (DEVICE, "x", "*", TRANSFER_IID),
        ]
        for node, actions, target, interface in grants:
            runner.run(
                f"grant {node} {actions}",
                dofpy_command(
                    *authenticator,
                    "grant",
                    *in_domain,
                    node,
                    "--actions",
                    actions,
                    "--object",
                    target,
                    "--interface",
                    interface,
                ),
            )

        print("# 4. a secure provider and a secure requestor")
        provide = example_command(
            "secure_provider.py", "--credentials", "provider.cred", "--ready-file", "provider.ready"
        )
        with runner.background("the provider", provide, workdir / "provider.ready") as (
            _,
            provider,
        ):
            requested = runner.run(
                "the requestor",
                example_command(
                    "secure_requestor.py",
                    "--credentials",
                    "requestor.cred",
                    "--provider",
                    provider["address"],
                    "--provider-identity",
                    PROVIDER,
                    "--target",
                    "23",
                    "--timeout",
                    str(timeout),
                ),
            )
            expect(
                "the requestor",
                f"secure session with [{{03}}:{PROVIDER}]" in requested
                and "temperature 21, target 20" in requested
                and "previous 20, target now 23" in requested,
                "did not read the thermostat and change its target",
            )
            refused = runner.run(
                "a requestor expecting another identity there is refused",
                example_command(
                    "secure_requestor.py",
                    "--credentials",
                    "requestor.cred",
                    "--provider",
                    provider["address"],
                    "--provider-identity",
                    IMAGE_SERVER,
                    "--timeout",
                    str(timeout),
                ),
                expect_status=1,
            )
            expect(
                "a requestor expecting another identity there is refused",
                "PeerIdentityMismatch" in refused,
                "failed, but not with PeerIdentityMismatch",
            )
        expect(
            "the provider",
            f"target 20 -> 23 by [{{03}}:{REQUESTOR}]" in runner.last_log,
            "did not see the requestor's authenticated identity",
        )

        print("# 5. a secure block transfer")
        transferred = runner.run(
            "the transfer",
            example_command(
                "secure_transfer.py",
                "--server-credentials",
                "image-server.cred",
                "--device-credentials",
                "device.cred",
                "--size",
                str(transfer_size),
                "--timeout",
                str(timeout),
            ),
        )
        expect(
            "the transfer",
            f"fetched {transfer_size} bytes" in transferred
            and "verified: the fetched object is the published file" in transferred,
            "did not fetch the whole object, verified",
        )
    authenticator_log = runner.last_log
    expect(
        "the Authenticator",
        f"initiator=[{{03}}:{REQUESTOR}] responder=[{{03}}:{PROVIDER}]" in authenticator_log
        and f"initiator=[{{03}}:{DEVICE}] responder=[{{03}}:{IMAGE_SERVER}]" in authenticator_log,
        "did not key the requestor's and the device's sessions",
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Run the secure examples end to end: a domain, the Authenticator,"
        " a provider and a requestor, a block transfer.",
        epilog="example: python examples/run_all.py --workdir /tmp/dofpy-domain",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        help="an empty directory to set the domain up in, kept afterwards"
        " (default: a temporary one, removed at the end)",
    )
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="seconds each step may take (default 60)"
    )
    parser.add_argument(
        "--transfer-size",
        type=int,
        default=1 << 20,
        metavar="BYTES",
        help="bytes the transfer publishes and fetches (default 1 MiB)",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="show every step's output, not only failures"
    )
    arguments = parser.parse_args(argv)
    started = time.monotonic()
    try:
        if arguments.workdir is not None:
            arguments.workdir.mkdir(parents=True, exist_ok=True)
            if any(arguments.workdir.iterdir()):
                parser.error(f"--workdir {arguments.workdir} is not empty")
            run_all(
                arguments.workdir, arguments.timeout, arguments.transfer_size, arguments.verbose
            )
        else:
            with tempfile.TemporaryDirectory(prefix="dofpy-examples-") as temporary:
                run_all(
                    Path(temporary), arguments.timeout, arguments.transfer_size, arguments.verbose
                )
    except StepFailed as failure:
        print(f"FAILED: {failure}", file=sys.stderr)
        return 1
    print(f"all examples succeeded ({time.monotonic() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
