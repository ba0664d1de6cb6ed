"""Fetching images over real HTTP from 127.0.0.1: downloads land only when verified, a
hit asks the server nothing, and every failure is one line that says what to do and
leaves nothing in the cache."""

from __future__ import annotations

import hashlib
import os
import select
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from image_server import ImageServer, serve  # tests/support

from maqet_engine import __version__
from maqet_engine import constants as C
from maqet_engine.errors import (
    ConfigError,
    HostError,
    MaqetError,
    NotFoundError,
    OperationTimeout,
    RuntimeFailure,
)
from maqet_engine.images import ImageCache, parse_source

MiB = 1024 * 1024
REPO = Path(__file__).resolve().parents[3]


def random_disk(size: int = MiB) -> bytes:
    return os.urandom(size)


def qcow2_bytes(tmp_path: Path, size: str = "64M") -> bytes:
    path = tmp_path / "made.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), size], check=True)
    return path.read_bytes()


def leftovers(cache: ImageCache) -> list[str]:
    """Every file under the cache root (directories aside)."""
    return sorted(str(p.relative_to(cache.root)) for p in cache.root.rglob("*")
                  if not p.is_dir())


def one_line(err: pytest.ExceptionInfo[MaqetError]) -> str:
    message = str(err.value)
    assert "\n" not in message and "Traceback" not in message
    return message


@pytest.fixture
def cache(tmp_path: Path) -> ImageCache:
    return ImageCache(tmp_path / "data" / C.IMAGES_DIR)


@pytest.mark.qemu
def test_download_then_a_hit_makes_no_request(tmp_path: Path, server: ImageServer,
                                              cache: ImageCache):
    data = qcow2_bytes(tmp_path)
    digest = server.add("debian.qcow2", data)
    source = parse_source(server.url("debian.qcow2"), f"sha256:{digest}")
    calls: list[tuple[int, int | None]] = []
    entry = cache.fetch(source, progress=lambda done, total: calls.append((done, total)))
    assert (entry.digest, entry.format, entry.virtual_size, entry.size, entry.source) == (
        digest, "qcow2", 64 * MiB, len(data), source.location)
    assert entry.path.read_bytes() == data
    assert calls[0] == (0, len(data)) and calls[-1] == (len(data), len(data))
    assert server.count() == 1
    assert leftovers(cache) == [f"sha256/{digest}", f"sha256/{digest}.json"]
    assert cache.fetch(source) == entry
    assert cache.lookup(source) == entry
    assert server.count() == 1  # the hit asked nothing


def test_user_agent_and_identity_encoding(server: ImageServer, cache: ImageCache):
    digest = server.add("x.raw", random_disk())
    cache.fetch(parse_source(server.url("x.raw"), f"sha256:{digest}"))
    assert server.headers[0]["User-Agent"] == f"maqet/{__version__}"
    assert server.headers[0]["Accept-Encoding"] == "identity"


def test_redirect_is_followed(server: ImageServer, cache: ImageCache):
    digest = server.add("x.raw", random_disk())
    entry = cache.fetch(parse_source(server.url("x.raw", "redirect"), f"sha256:{digest}"))
    assert entry.digest == digest
    assert server.count() == 2  # the redirect and the file


def test_checksum_mismatch_leaves_nothing(server: ImageServer, cache: ImageCache):
    digest = server.add("x.raw", random_disk())
    wrong = hashlib.sha256(b"another file").hexdigest()
    with pytest.raises(ConfigError) as err:
        cache.fetch(parse_source(server.url("x.raw"), f"sha256:{wrong}"))
    assert one_line(err) == (
        f"image {server.url('x.raw')}: checksum mismatch: expected sha256:{wrong[:12]}, got "
        f"sha256:{digest[:12]}; fix the checksum, or the location if it names another file")
    assert leftovers(cache) == []


def test_sha256sums_lookup_then_pinned_without_network(server: ImageServer,
                                                       cache: ImageCache):
    digest = server.add("debian.raw", random_disk())
    server.add("SHA256SUMS", f"{'0' * 64}  other.raw\n{digest} *debian.raw\n".encode())
    source = parse_source(server.url("debian.raw"),
                          f"sha256:{server.url('SHA256SUMS')}")
    entry = cache.fetch(source)
    assert entry.digest == digest
    assert (server.count("/SHA256SUMS"), server.count("/debian.raw")) == (1, 1)
    assert cache.fetch(source) == entry
    assert server.count() == 2  # pinned: neither the sums nor the image asked again
    # the same content under its digest is the same image, no download
    assert cache.fetch(parse_source(server.url("debian.raw"), f"sha256:{digest}")) == entry
    assert server.count() == 2


def test_sha256sums_without_the_file(server: ImageServer, cache: ImageCache):
    server.add("debian.raw", random_disk())
    server.add("SHA256SUMS", f"{'0' * 64}  other.raw\n{'1' * 64}  third.raw\n".encode())
    sums = server.url("SHA256SUMS")
    with pytest.raises(ConfigError) as err:
        cache.fetch(parse_source(server.url("debian.raw"), f"sha256:{sums}"))
    assert one_line(err) == (
        f"image {server.url('debian.raw')}: {sums} has no sha256 line for 'debian.raw' (it "
        "lists: other.raw, third.raw); check that the checksum file belongs to this image, "
        "or give checksum: sha256:<hex>")
    assert server.count("/debian.raw") == 0
    assert leftovers(cache) == []


def test_sha256sums_that_is_missing(server: ImageServer, cache: ImageCache):
    server.add("debian.raw", random_disk())
    sums = server.url("SHA256SUMS")
    with pytest.raises(NotFoundError) as err:
        cache.fetch(parse_source(server.url("debian.raw"), f"sha256:{sums}"))
    assert one_line(err) == (f"checksum file {sums}: the server answered HTTP 404 Not Found; "
                             "check the URL")


def test_not_found_and_other_http_errors(server: ImageServer, cache: ImageCache):
    url = server.url("absent.qcow2")
    with pytest.raises(NotFoundError) as err:
        cache.fetch(parse_source(url, f"sha256:{'a' * 64}"))
    assert one_line(err) == f"image {url}: the server answered HTTP 404 Not Found; check the URL"
    assert err.value.exit_code == C.EXIT_NOT_FOUND
    url = server.url("503", "status")
    with pytest.raises(RuntimeFailure) as err5:
        cache.fetch(parse_source(url, f"sha256:{'a' * 64}"))
    assert one_line(err5) == (f"image {url}: the server answered HTTP 503 Service Unavailable; "
                              "try again later, or check the URL")
    url = server.url("403", "status")
    with pytest.raises(RuntimeFailure, match="HTTP 403 Forbidden; check the URL"):
        cache.fetch(parse_source(url, f"sha256:{'a' * 64}"))
    assert leftovers(cache) == []


def test_html_page_served_as_the_image_never_lands(server: ImageServer, cache: ImageCache):
    page = b"<!DOCTYPE html><html><body>Please log in</body></html>\n"
    digest = server.add("image.qcow2", page)
    url = server.url("image.qcow2")
    with pytest.raises(ConfigError) as err:
        cache.fetch(parse_source(url, f"sha256:{digest}"))
    assert one_line(err).startswith(f"image {url}: is an HTML page, not a disk image; ")
    assert leftovers(cache) == []


def test_cut_connection_leaves_nothing_and_a_retry_succeeds(server: ImageServer,
                                                            cache: ImageCache):
    data = random_disk(2 * MiB)
    digest = server.add("x.raw", data)
    source = parse_source(server.url("x.raw", "flaky"), f"sha256:{digest}")
    with pytest.raises(RuntimeFailure) as err:
        cache.fetch(source)
    assert one_line(err) == (f"image {source.location}: the server closed the connection "
                             f"after {MiB} of {2 * MiB} bytes; try again")
    assert leftovers(cache) == []
    assert cache.fetch(source).digest == digest
    assert server.count() == 2


def test_connection_refused(closed_port: int, cache: ImageCache):
    url = f"http://127.0.0.1:{closed_port}/x.qcow2"
    with pytest.raises(RuntimeFailure) as err:
        cache.fetch(parse_source(url, f"sha256:{'a' * 64}"))
    assert one_line(err) == (f"image {url}: connection to 127.0.0.1:{closed_port} refused; "
                             "check the URL's host and port, and that the server runs")
    assert err.value.exit_code == C.EXIT_RUNTIME
    assert leftovers(cache) == []


def test_dns_failure(cache: ImageCache, monkeypatch: pytest.MonkeyPatch):
    # resolving a name would leave 127.0.0.1: the resolver's answer is simulated
    def no_such_host(host: str, *args: object, **kwargs: object) -> list[object]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_host)
    url = "https://images.example.invalid/x.qcow2"
    with pytest.raises(RuntimeFailure) as err:
        cache.fetch(parse_source(url, f"sha256:{'a' * 64}"))
    assert one_line(err) == (f"image {url}: cannot resolve host images.example.invalid (Name "
                             "or service not known); check the host name and this machine's "
                             "DNS")


@pytest.fixture
def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def test_tls_is_verified_and_a_trusted_ca_works(tmp_path: Path, cache: ImageCache,
                                                self_signed: tuple[Path, Path],
                                                monkeypatch: pytest.MonkeyPatch):
    cert, key = self_signed
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    root = tmp_path / "www"
    root.mkdir()
    # even a process that switched urllib's default off does not switch maqet's off
    monkeypatch.setattr(ssl, "_create_default_https_context", ssl._create_unverified_context)
    with serve(root, lambda sock: context.wrap_socket(sock, server_side=True)) as srv:
        digest = srv.add("x.raw", random_disk())
        source = parse_source(srv.url("x.raw"), f"sha256:{digest}")
        with pytest.raises(RuntimeFailure) as err:
            cache.fetch(source)
        assert one_line(err) == (
            f"image {source.location}: the TLS certificate of 127.0.0.1:{srv.port} cannot be "
            "verified (self-signed certificate); fix the server's certificate, or add its CA "
            "to this machine's trust store (maqet never skips verification)")
        assert leftovers(cache) == []
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the trust store, as OpenSSL reads it
        assert cache.fetch(source).digest == digest


def test_disk_full_before_the_download_when_the_length_is_known(
        server: ImageServer, tmpfs: Callable[[str, str], Path]):
    cache = ImageCache(tmpfs("small", "size=2m,mode=0700") / C.IMAGES_DIR)
    digest = server.add("big.raw", random_disk(3 * MiB))
    url = server.url("big.raw")
    with pytest.raises(HostError) as err:
        cache.fetch(parse_source(url, f"sha256:{digest}"))
    message = one_line(err)
    assert message.startswith(f"image {url}: not enough space in {cache.root}/sha256: the "
                              "image needs 3.0 MiB, ")
    assert message.endswith(" is free; free some space there (remove unused images), or move "
                            "the data directory")
    assert err.value.exit_code == C.EXIT_HOST
    assert leftovers(cache) == []


def test_disk_full_while_writing_an_unknown_length(server: ImageServer,
                                                   tmpfs: Callable[[str, str], Path]):
    cache = ImageCache(tmpfs("small", "size=2m,mode=0700") / C.IMAGES_DIR)
    digest = server.add("big.raw", random_disk(3 * MiB))
    url = server.url("big.raw", "nolength")
    with pytest.raises(HostError) as err:
        cache.fetch(parse_source(url, f"sha256:{digest}"))
    message = one_line(err)
    assert message.startswith(f"image {url}: not enough space in {cache.root}/sha256: it "
                              "filled up after ")
    assert message.endswith(" MiB of the image; free some space there (remove unused "
                            "images), or move the data directory")
    assert leftovers(cache) == []
    assert os.statvfs(cache.root).f_bfree > 1.9 * MiB / os.statvfs(cache.root).f_frsize


def test_unwritable_cache_directory(server: ImageServer, tmpfs: Callable[[str, str], Path]):
    cache = ImageCache(tmpfs("readonly", "size=1m,ro") / C.IMAGES_DIR)
    digest = server.add("x.raw", random_disk())
    with pytest.raises(HostError) as err:
        cache.fetch(parse_source(server.url("x.raw"), f"sha256:{digest}"))
    assert one_line(err) == (f"cannot create the image cache directory {cache.root}: Read-only "
                             "file system; make it writable by this user, or use another data "
                             "directory")
    assert server.count() == 0


CHILD = """
import json, logging, sys
from maqet_engine.images import ImageCache, parse_source
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
entry = ImageCache(sys.argv[1]).fetch(parse_source(sys.argv[2], sys.argv[3]))
print(json.dumps(entry.to_dict()))
"""


def _child(root: Path, url: str, digest: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.Popen([sys.executable, "-c", CHILD, str(root), url, f"sha256:{digest}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _read_until(proc: subprocess.Popen[str], words: str, timeout: float) -> str:
    """The child's stderr up to a line containing ``words`` (bounded by ``timeout``)."""
    assert proc.stderr is not None
    seen, wanted = b"", words.encode()
    deadline = time.monotonic() + timeout
    while wanted not in seen:  # the pipe itself: a text stream's buffer hides from select
        remaining = deadline - time.monotonic()
        ready, _, _ = select.select([proc.stderr], [], [], max(remaining, 0))
        assert ready, f"no {words!r} from the child within {timeout} s: {seen!r}"
        chunk = os.read(proc.stderr.fileno(), 65536)
        assert chunk, f"the child ended without {words!r}: {seen!r}"
        seen += chunk
    return seen.decode(errors="replace")


def test_two_processes_fetching_one_image_download_it_once(server: ImageServer,
                                                           cache: ImageCache):
    digest = server.add("x.raw", random_disk(2 * MiB))
    url = server.url("x.raw", "gate")
    first = _child(cache.root, url, digest)
    second = None
    try:
        assert server.started.wait(30), "the first download never started"
        second = _child(cache.root, url, digest)  # the first holds the image's lock now
        _read_until(second, f"waiting for another process fetching image sha256:{digest[:12]}",
                    30)
        server.release.set()
        outputs = [proc.communicate(timeout=60) for proc in (first, second)]
    finally:
        server.release.set()
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    assert [proc.returncode for proc in (first, second)] == [0, 0], outputs
    assert outputs[0][0] == outputs[1][0] and digest in outputs[0][0]
    assert server.count() == 1
    assert leftovers(cache) == [f"sha256/{digest}", f"sha256/{digest}.json"]


def test_a_stalled_download_times_out(server: ImageServer, cache: ImageCache,
                                      monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(C, "IMAGE_HTTP_TIMEOUT_S", 0.5)  # the gate holds the rest back
    digest = server.add("x.raw", random_disk(2 * MiB))
    url = server.url("x.raw", "gate")
    with pytest.raises(OperationTimeout) as err:
        cache.fetch(parse_source(url, f"sha256:{digest}"))
    assert one_line(err) == (f"image {url}: the download stalled (no data for 0.5 s after "
                             f"{MiB} of {2 * MiB} bytes); try again; check the network")
    assert leftovers(cache) == []


def test_a_killed_download_leaves_a_temp_file_the_next_fetch_removes(server: ImageServer,
                                                                     cache: ImageCache):
    digest = server.add("x.raw", random_disk(2 * MiB))
    url = server.url("x.raw", "gate")
    child = _child(cache.root, url, digest)
    try:
        assert server.started.wait(30), "the download never started"
        child.kill()  # SIGKILL mid-body: no cleanup code runs, the kernel drops its flock
        child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    parts = [name for name in leftovers(cache) if name.endswith(".part")]
    assert len(parts) == 1 and parts[0].startswith(f"sha256/.{digest}.")
    server.release.set()
    assert cache.fetch(parse_source(url, f"sha256:{digest}")).digest == digest
    assert leftovers(cache) == [f"sha256/{digest}", f"sha256/{digest}.json"]
