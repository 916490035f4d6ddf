"""The peers dofpy's block transfer is measured against, in the same run.

- :func:`raw_trio_udp`: the Python ceiling. A trio sender and a trio receiver, both in one
  process and one ``trio.run`` (as dofpy's own benchmark runs provider and requestor), move
  a buffer in datagrams of a given size with one acknowledgement per window of datagrams
  (lock-step per window). The receiver writes each payload at its offset.
- :func:`tftpy_transfer`: tftpy (PyPI ``tftpy``), the Python TFTP peer; server and client
  each in their own process (tftpy blocks and uses threads), optionally through the lossy
  proxy (a third process). A lost datagram costs tftpy one 1 s timeout.
- :func:`http_curl`: ``python -m http.server`` serving the file to ``curl``; the TCP
  reference. curl's own ``time_total`` is the figure (it includes connecting).
- :func:`aioquic_transfer`: one QUIC stream from an aioquic server process to an aioquic
  client in this process, with a self-signed certificate made at run time.

Every run is bounded by a deadline and checks that the bytes arrived intact
(``extra["verified"]``). Peers that are not installed return None after printing why.

``python -m benchmarks.peers --size-mib 16`` measures them all and prints a table; the
``tftp-server``, ``tftp-client`` and ``quic-server`` subcommands are the child processes.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import hashlib
import importlib.util
import json
import logging
import random
import re
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from benchmarks._util import Result, format_table, serving_process, set_receive_buffer, stopwatch
from benchmarks.lossy_proxy import ProxyConfig, spawn_lossy_proxy

# Raw UDP datagram header: window number (u32) and slot within the window (u16).
_RAW_HEADER = struct.Struct(">IH")
_RAW_ACK = struct.Struct(">I")
# Resend a whole window if its acknowledgement has not come back within this many seconds.
_RAW_WINDOW_TIMEOUT = 0.25
_QUIC_ALPN = "dofpy-bench"
_CURL_FORMAT = "%{size_download} %{time_total}"
_HTTP_PORT_LINE = re.compile(r"port (\d+)")


def _note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def sha256_file(path: Path) -> str:
    """SHA-256 of a file, hex."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def make_test_file(path: Path, size_bytes: int, seed: int = 0) -> Path:
    """Write ``size_bytes`` of seeded pseudo-random bytes to ``path`` (incompressible)."""
    path.write_bytes(random.Random(seed).randbytes(size_bytes))
    return path


# --- raw trio UDP ------------------------------------------------------------------------


def _raw_udp_socket(receive_buffer: int) -> tuple[trio.socket.SocketType, int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    granted = set_receive_buffer(sock, receive_buffer)
    return trio.socket.from_stdlib_socket(sock), granted


async def raw_trio_udp_async(
    size_bytes: int, datagram_size: int, window: int = 64, deadline: float = 120.0, seed: int = 0
) -> Result:
    """:func:`raw_trio_udp` for callers already inside ``trio.run``."""
    if datagram_size <= _RAW_HEADER.size or datagram_size > 65_507:
        raise ValueError(f"datagram_size must be in {_RAW_HEADER.size + 1}..65507")
    if not 1 <= window <= 65_535:
        raise ValueError("window must be in 1..65535")
    if size_bytes < 1:
        raise ValueError("size_bytes must be positive")
    payload_size = datagram_size - _RAW_HEADER.size
    source = random.Random(seed).randbytes(size_bytes)
    received = bytearray(size_bytes)
    datagrams = -(-size_bytes // payload_size)
    windows = -(-datagrams // window)
    # Each queued datagram costs the kernel more than its payload: ask for 4x a window.
    sender, sender_buffer = _raw_udp_socket(4 * window * datagram_size)
    receiver, receiver_buffer = _raw_udp_socket(4 * window * datagram_size)
    retransmitted_windows = 0

    async def receive() -> None:
        buffer = bytearray(datagram_size)
        view = memoryview(buffer)
        target = memoryview(received)
        current = 0
        seen = bytearray(window)
        count = 0
        expected = min(window, datagrams)
        while True:
            size, address = await receiver.recvfrom_into(buffer)
            number, slot = _RAW_HEADER.unpack_from(buffer)
            if number < current:
                await receiver.sendto(_RAW_ACK.pack(number), address)  # our ack was lost
                continue
            if number > current or slot >= expected or seen[slot]:
                continue
            seen[slot] = 1
            count += 1
            offset = (number * window + slot) * payload_size
            target[offset : offset + size - _RAW_HEADER.size] = view[_RAW_HEADER.size : size]
            if count == expected:
                await receiver.sendto(_RAW_ACK.pack(number), address)
                current += 1
                seen = bytearray(window)
                count = 0
                expected = min(window, datagrams - current * window)

    async def send(target_address: tuple[str, int]) -> None:
        nonlocal retransmitted_windows
        source_view = memoryview(source)
        packet = bytearray(datagram_size)
        packet_view = memoryview(packet)
        ack = bytearray(64)
        for number in range(windows):
            first = number * window
            last = min(first + window, datagrams)
            while True:
                for index in range(first, last):
                    offset = index * payload_size
                    chunk = source_view[offset : offset + payload_size]
                    _RAW_HEADER.pack_into(packet, 0, number, index - first)
                    packet_view[_RAW_HEADER.size : _RAW_HEADER.size + len(chunk)] = chunk
                    await sender.sendto(
                        packet_view[: _RAW_HEADER.size + len(chunk)], target_address
                    )
                acknowledged = False
                with trio.move_on_after(_RAW_WINDOW_TIMEOUT):
                    while not acknowledged:
                        await sender.recv_into(ack)
                        acknowledged = _RAW_ACK.unpack_from(ack)[0] == number
                if acknowledged:
                    break
                retransmitted_windows += 1

    with sender, receiver:
        await sender.bind(("127.0.0.1", 0))
        await receiver.bind(("127.0.0.1", 0))
        host, port = receiver.getsockname()[:2]
        with trio.fail_after(deadline):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(receive)
                with stopwatch() as watch:
                    await send((str(host), int(port)))
                nursery.cancel_scope.cancel()
    return Result(
        f"raw trio UDP {datagram_size} B",
        size_bytes,
        watch.seconds,
        {
            "window": window,
            "datagrams": datagrams,
            "retransmitted_windows": retransmitted_windows,
            "rcvbuf": min(sender_buffer, receiver_buffer),
            "verified": received == source,
        },
    )


def raw_trio_udp(
    size_bytes: int, datagram_size: int, window: int = 64, deadline: float = 120.0
) -> Result:
    """Move ``size_bytes`` over loopback in datagrams of ``datagram_size`` (header included),
    one acknowledgement per ``window`` datagrams; raises ``trio.TooSlowError`` past
    ``deadline`` seconds."""
    return trio.run(raw_trio_udp_async, size_bytes, datagram_size, window, deadline)


# --- tftpy -------------------------------------------------------------------------------


def _has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def tftpy_transfer(
    path: Path | str,
    blksize: int = 1428,
    proxy: ProxyConfig | None = None,
    deadline: float = 300.0,
    timeout: float = 1.0,
) -> Result | None:
    """Download ``path`` with a tftpy client from a tftpy server (each in its own process),
    optionally through a lossy proxy process; None (with a note) if tftpy is not installed.

    ``timeout`` is tftpy's retransmission timeout on both sides; the whole run is killed
    after ``deadline`` seconds (raising ``subprocess.TimeoutExpired``)."""
    if not _has_module("tftpy"):
        _note("tftpy: not installed (pip install 'dofpy[bench]')")
        return None
    path = Path(path)
    server_command = [
        sys.executable,
        "-m",
        "benchmarks.peers",
        "tftp-server",
        str(path.parent),
        "--timeout",
        repr(timeout),
    ]
    with serving_process(server_command) as line:
        server = ("127.0.0.1", int(line))
        if proxy is None:
            figures = _tftp_client(server, path.name, blksize, timeout, deadline)
            counts: dict[str, object] = {}
        else:
            with spawn_lossy_proxy(server, proxy) as handle:
                figures = _tftp_client(handle.address, path.name, blksize, timeout, deadline)
            stats = handle.statistics
            counts = {"loss": proxy.loss}
            if stats is not None:
                counts["dropped"] = stats.to_server.dropped + stats.to_client.dropped
    name = f"tftpy {blksize}" + (f" {proxy.loss:.0%} loss" if proxy is not None else "")
    nbytes = figures["bytes"]
    seconds = figures["seconds"]
    assert isinstance(nbytes, int) and isinstance(seconds, float)
    return Result(
        name,
        nbytes,
        seconds,
        {"blksize": blksize, **counts, "verified": figures["sha256"] == sha256_file(path)},
    )


def _tftp_client(
    server: tuple[str, int], filename: str, blksize: int, timeout: float, deadline: float
) -> dict[str, object]:
    command = [
        sys.executable,
        "-m",
        "benchmarks.peers",
        "tftp-client",
        server[0],
        str(server[1]),
        filename,
        "--blksize",
        str(blksize),
        "--timeout",
        repr(timeout),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=deadline, check=True)
    figures: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def _tftp_server_main(root: str, timeout: float) -> None:
    # tftpy and aioquic are optional (the bench extra): imported only where used.
    import tftpy  # type: ignore[import-untyped]  # noqa: PLC0415

    logging.getLogger("tftpy").setLevel(logging.ERROR)
    server = tftpy.TftpServer(root)
    thread = threading.Thread(
        target=server.listen,
        kwargs={"listenip": "127.0.0.1", "listenport": 0, "timeout": timeout, "retries": 20},
        daemon=True,
    )
    thread.start()
    if not server.is_running.wait(10):
        raise SystemExit("tftpy server did not start")
    print(server.listenport, flush=True)
    thread.join()  # until the parent terminates us


class _Collect:
    """A write-only sink for tftpy that keeps the chunks (hashed after the timing)."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> int:
        self.chunks.append(bytes(data))
        return len(data)

    def close(self) -> None:
        self.closed = True


def _tftp_client_main(host: str, port: int, filename: str, blksize: int, timeout: float) -> None:
    import tftpy  # noqa: PLC0415

    logging.getLogger("tftpy").setLevel(logging.ERROR)
    client = tftpy.TftpClient(host, port, options={"blksize": blksize})
    sink = _Collect()
    with stopwatch() as watch:
        client.download(filename, sink, timeout=timeout, retries=20)
    data = b"".join(sink.chunks)
    figures = {"bytes": len(data), "seconds": watch.seconds}
    print(json.dumps({**figures, "sha256": hashlib.sha256(data).hexdigest()}), flush=True)


# --- curl over python -m http.server ----------------------------------------------------


def http_curl(
    path: Path | str, output: str = "/dev/null", deadline: float = 120.0
) -> Result | None:
    """``curl`` downloading ``path`` from ``python -m http.server`` in a child process; None
    (with a note) if curl is absent. ``output`` is where curl writes (``/dev/null`` by
    default: the figure is the transport, not the disk)."""
    curl = shutil.which("curl")
    if curl is None:
        _note("curl: not installed (apt-get install -y curl)")
        return None
    path = Path(path)
    server_command = [
        sys.executable,
        "-u",
        "-m",
        "http.server",
        "0",
        "--bind",
        "127.0.0.1",
        "--directory",
        str(path.parent),
    ]
    with serving_process(server_command) as line:
        match = _HTTP_PORT_LINE.search(line)
        if match is None:
            raise RuntimeError(f"unexpected http.server output: {line!r}")
        url = f"http://127.0.0.1:{match.group(1)}/{path.name}"
        done = subprocess.run(
            [curl, "-sS", "--fail", "--noproxy", "*", "-o", output, "-w", _CURL_FORMAT, url],
            capture_output=True,
            text=True,
            timeout=deadline,
            check=True,
        )
    size_text, seconds_text = done.stdout.split()
    nbytes = int(size_text)
    verified = nbytes == path.stat().st_size
    if output != "/dev/null":
        verified = verified and sha256_file(Path(output)) == sha256_file(path)
    return Result("curl over TCP", nbytes, float(seconds_text), {"verified": verified})


# --- aioquic -----------------------------------------------------------------------------


def _make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 'localhost' (EC P-256), written as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / "cert.pem"
    key_path = directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def aioquic_transfer(path: Path | str, deadline: float = 120.0) -> Result | None:
    """One QUIC stream carrying ``path`` from an aioquic server process to an aioquic client
    here; None (with a note) if aioquic is not installed or does not run."""
    if not _has_module("aioquic"):
        _note("aioquic: not installed (pip install 'dofpy[bench]')")
        return None
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="dofpy-quic-") as directory:
        cert_path, key_path = _make_certificate(Path(directory))
        server_command = [
            sys.executable,
            "-m",
            "benchmarks.peers",
            "quic-server",
            str(path),
            str(cert_path),
            str(key_path),
        ]
        try:
            with serving_process(server_command) as line:
                port = int(line)
                nbytes, seconds, digest = asyncio.run(
                    asyncio.wait_for(_quic_download(port), deadline)
                )
        except (RuntimeError, OSError, ConnectionError) as error:
            _note(f"aioquic: did not run ({error})")
            return None
    return Result("aioquic stream", nbytes, seconds, {"verified": digest == sha256_file(path)})


async def _quic_download(port: int) -> tuple[int, float, str]:
    from aioquic.asyncio.client import connect  # noqa: PLC0415
    from aioquic.quic.configuration import QuicConfiguration  # noqa: PLC0415

    configuration = QuicConfiguration(
        is_client=True,
        alpn_protocols=[_QUIC_ALPN],
        verify_mode=ssl.CERT_NONE,
        server_name="localhost",
    )
    chunks: list[bytes] = []
    with stopwatch() as watch:
        async with connect("127.0.0.1", port, configuration=configuration) as client:
            reader, writer = await client.create_stream()
            writer.write(b"GET")
            writer.write_eof()
            while chunk := await reader.read(1 << 16):
                chunks.append(chunk)
    data = b"".join(chunks)
    return len(data), watch.seconds, hashlib.sha256(data).hexdigest()


def _quic_server_main(file_path: str, cert_path: str, key_path: str) -> None:
    from aioquic.asyncio.server import serve  # noqa: PLC0415
    from aioquic.quic.configuration import QuicConfiguration  # noqa: PLC0415

    data = Path(file_path).read_bytes()
    configuration = QuicConfiguration(is_client=False, alpn_protocols=[_QUIC_ALPN])
    configuration.load_cert_chain(cert_path, key_path)
    tasks: set[asyncio.Task[None]] = set()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # the request, up to its end of stream
        writer.write(data)
        writer.write_eof()

    def on_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(answer(reader, writer))
        tasks.add(task)  # keep a reference until done
        task.add_done_callback(tasks.discard)

    async def run() -> None:
        # Find a free port, then serve on it (aioquic does not expose the port it bound).
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        await serve("127.0.0.1", port, configuration=configuration, stream_handler=on_stream)
        print(port, flush=True)
        await asyncio.Event().wait()  # until the parent terminates us

    asyncio.run(run())


# --- command line --------------------------------------------------------------------------


def measure_all(size_mib: float, lossy_mib: float, losses: Sequence[float]) -> list[Result]:
    """Measure every peer on one file of ``size_mib`` (and tftpy through the lossy proxy on
    ``lossy_mib``), printing each figure as it comes; peers that cannot run are left out."""
    results: list[Result] = []

    def add(result: Result | None) -> None:
        if result is not None:
            _note(f"  {result.name}: {result.mb_per_s:.2f} MB/s in {result.seconds:.3f} s")
            results.append(result)

    with tempfile.TemporaryDirectory(prefix="dofpy-bench-") as directory:
        big = make_test_file(Path(directory) / "image.bin", int(size_mib * 2**20))
        small = make_test_file(Path(directory) / "small.bin", int(lossy_mib * 2**20), seed=1)
        size = big.stat().st_size
        add(raw_trio_udp(size, 1200))
        add(raw_trio_udp(size, 8192))
        add(tftpy_transfer(big))
        for loss in losses:
            result = tftpy_transfer(small, proxy=ProxyConfig(loss=loss, seed=1))
            if result is not None:
                label = f"{result.name} ({result.nbytes / 2**20:g} MiB)"
                result = Result(label, result.nbytes, result.seconds, result.extra)
            add(result)
        add(http_curl(big))
        add(aioquic_transfer(big))
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: measure all peers, or run one of the child processes."""
    parser = argparse.ArgumentParser(description="dofpy benchmark peers")
    commands = parser.add_subparsers(dest="command")
    tftp_server = commands.add_parser("tftp-server")
    tftp_server.add_argument("root")
    tftp_server.add_argument("--timeout", type=float, default=1.0)
    tftp_client = commands.add_parser("tftp-client")
    tftp_client.add_argument("host")
    tftp_client.add_argument("port", type=int)
    tftp_client.add_argument("filename")
    tftp_client.add_argument("--blksize", type=int, default=1428)
    tftp_client.add_argument("--timeout", type=float, default=1.0)
    quic_server = commands.add_parser("quic-server")
    quic_server.add_argument("file")
    quic_server.add_argument("cert")
    quic_server.add_argument("key")
    parser.add_argument("--size-mib", type=float, default=16.0)
    parser.add_argument("--lossy-mib", type=float, default=1.0)
    parser.add_argument("--loss", type=float, action="append", help="repeatable; 0.01 0.05")
    args = parser.parse_args(argv)
    if args.command == "tftp-server":
        _tftp_server_main(args.root, args.timeout)
    elif args.command == "tftp-client":
        _tftp_client_main(args.host, args.port, args.filename, args.blksize, args.timeout)
    elif args.command == "quic-server":
        _quic_server_main(args.file, args.cert, args.key)
    else:
        started = time.perf_counter()
        results = measure_all(args.size_mib, args.lossy_mib, args.loss or [0.01, 0.05])
        print(format_table(results, baseline="raw trio UDP 1200 B"))
        print(f"(measured in {time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
