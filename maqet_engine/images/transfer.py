"""Reading an image's bytes from where it lives: a local file, or HTTP(S) with urllib.

Every failure becomes one maqet error whose message names the source and says what to
do; the bytes themselves are verified by the caller (:mod:`.cache`), not here.

HTTP: ``urllib.request`` with the default TLS context (certificates and host names
verified; never switched off, whatever ``PYTHONHTTPSVERIFY`` or a monkey-patched
``ssl`` default says), redirects followed (at most urllib's 10, to http(s) only), a
``User-Agent: maqet/<version>``, ``Accept-Encoding: identity`` (a compressed transfer
would not hash to the published digest), a timeout on connecting and on every read, and
the ``Content-Length`` checked against what arrived (urllib itself reports a cut
connection as a normal end of data). Proxies from the environment are honoured.

Imported only when the cache has to read a source: urllib, http and ssl cost the CLI's
fast paths too much to import them with the package.
"""

from __future__ import annotations

import errno
import os
import socket
import ssl
import urllib.error
import urllib.request
from http import HTTPStatus
from http.client import HTTPException

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

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Self

USER_AGENT = f"{C.APP_NAME}/{__version__}"


class Reader:
    """A source being read: ``read(size)`` returns b"" at the end; ``total`` is its
    length when known; ``done`` counts the bytes read so far."""

    def __init__(self, what: str, total: int | None) -> None:
        self.what = what
        self.total = total
        self.done = 0

    def read(self, size: int) -> bytes:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FileReader(Reader):
    def __init__(self, what: str, fd: int) -> None:
        self.fd = fd
        self.stat = os.fstat(fd)
        super().__init__(what, self.stat.st_size)

    def read(self, size: int) -> bytes:
        try:
            data = os.read(self.fd, size)
        except OSError as err:
            raise HostError(f"{self.what}: cannot read it after {self.done} bytes: "
                            f"{err.strerror}") from err
        self.done += len(data)
        return data

    def close(self) -> None:
        os.close(self.fd)


class HTTPReader(Reader):
    def __init__(self, what: str, response: Any) -> None:
        self.response = response
        super().__init__(what, _content_length(response))

    def read(self, size: int) -> bytes:
        try:
            data: bytes = self.response.read(size)
        except TimeoutError as err:
            raise OperationTimeout(f"{self.what}: the download stalled (no data for "
                                   f"{C.IMAGE_HTTP_TIMEOUT_S:g} s after {self._progress()})",
                                   hint="try again; check the network") from err
        except (HTTPException, OSError) as err:
            raise RuntimeFailure(f"{self.what}: the download broke off after "
                                 f"{self._progress()} ({_reason(err)})",
                                 hint="try again") from err
        self.done += len(data)
        if not data and self.total is not None and self.done < self.total:
            raise RuntimeFailure(f"{self.what}: the server closed the connection after "
                                 f"{self._progress()}", hint="try again")
        return data

    def _progress(self) -> str:
        total = f" of {self.total}" if self.total is not None else ""
        return f"{self.done}{total} bytes"

    def close(self) -> None:
        self.response.close()


def open_source(location: str, *, what: str) -> Reader:
    """Open a local path or an http(s):// URL for reading.

    :raise NotFoundError: no such file, or HTTP 404/410.
    :raise OperationTimeout: the server did not answer in time.
    :raise RuntimeFailure: connection refused, DNS failure, TLS failure, other HTTP
        errors.
    :raise HostError: a local file that cannot be read.
    """
    if "://" not in location:
        return open_file(location, what=what)
    return HTTPReader(what, _urlopen(location, what=what))


def read_small(location: str, *, what: str, limit: int = C.IMAGE_SUMS_MAX_BYTES) -> str:
    """The whole text of a small file (a SHA256SUMS): a path, file:// or http(s) URL.

    :raise ConfigError: it is larger than ``limit``.
    :raise MaqetError: as :func:`open_source`.
    """
    if location.startswith("file://"):
        from urllib.parse import unquote, urlsplit

        location = unquote(urlsplit(location).path)
    with open_source(location, what=what) as reader:
        chunks: list[bytes] = []
        size = 0
        while data := reader.read(C.IMAGE_READ_CHUNK):
            chunks.append(data)
            size += len(data)
            if size > limit:
                raise ConfigError(f"{what}: larger than {limit} bytes: not a checksum file",
                                  hint="give the URL of a SHA256SUMS file")
    return b"".join(chunks).decode("utf-8", "replace")


def open_file(path: str, *, what: str) -> FileReader:
    """Open a local file (symlinks followed: it is the user's) for reading."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError as err:
        raise NotFoundError(f"{what}: no such file", hint="check the path") from err
    except OSError as err:
        raise HostError(f"{what}: cannot open it: {err.strerror}") from err
    reader = FileReader(what, fd)
    import stat

    if not stat.S_ISREG(reader.stat.st_mode):
        reader.close()
        raise NotFoundError(f"{what}: not a regular file", hint="give the path of an image file")
    return reader


class _RedirectHandler(urllib.request.HTTPRedirectHandler):
    """Follows redirects to http(s) only (urllib would also follow one to ftp)."""

    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str,
                         headers: Any, newurl: str) -> urllib.request.Request | None:
        scheme = newurl.split("://", 1)[0].lower() if "://" in newurl else "http"
        if scheme not in C.IMAGE_URL_SCHEMES:
            raise urllib.error.HTTPError(newurl, code, f"redirect to a {scheme} URL refused",
                                         headers, fp)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _opener() -> urllib.request.OpenerDirector:
    context = ssl.create_default_context()  # CERT_REQUIRED, check_hostname: always
    return urllib.request.build_opener(urllib.request.HTTPSHandler(context=context),
                                       _RedirectHandler())


def _urlopen(url: str, *, what: str) -> Any:
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT,
                                                   "Accept-Encoding": "identity"})
    host = request.host
    try:
        return _opener().open(request, timeout=C.IMAGE_HTTP_TIMEOUT_S)
    except urllib.error.HTTPError as err:
        err.close()
        raise _http_error(err, url, what=what) from None
    except urllib.error.URLError as err:
        raise _connect_error(err.reason, host, what=what) from err
    except (HTTPException, OSError) as err:
        raise _connect_error(err, host, what=what) from err


def _http_error(err: urllib.error.HTTPError, url: str, *, what: str) -> MaqetError:
    try:
        phrase = HTTPStatus(err.code).phrase
    except ValueError:
        phrase = str(err.reason or "")
    status = f"HTTP {err.code} {phrase}".rstrip()
    where = f" (redirected to {err.url})" if err.url and err.url != url else ""
    if err.code in (HTTPStatus.NOT_FOUND, HTTPStatus.GONE):
        return NotFoundError(f"{what}: the server answered {status}{where}",
                             hint="check the URL")
    if 300 <= err.code < 400:
        return RuntimeFailure(f"{what}: {status}: {err.reason}{where}",
                              hint="give the final URL of the file")
    if err.code >= 500:
        return RuntimeFailure(f"{what}: the server answered {status}{where}",
                              hint="try again later, or check the URL")
    return RuntimeFailure(f"{what}: the server answered {status}{where}",
                          hint="check the URL (maqet sends no credentials)")


def _connect_error(reason: object, host: str, *, what: str) -> MaqetError:
    if isinstance(reason, socket.gaierror):
        return RuntimeFailure(f"{what}: cannot resolve host {_hostname(host)} "
                              f"({reason.strerror or reason})",
                              hint="check the host name and this machine's DNS")
    if isinstance(reason, TimeoutError):
        return OperationTimeout(f"{what}: no answer from {host} within "
                                f"{C.IMAGE_HTTP_TIMEOUT_S:g} s",
                                hint="check the network, or try again later")
    if isinstance(reason, ConnectionRefusedError):
        return RuntimeFailure(f"{what}: connection to {host} refused",
                              hint="check the URL's host and port, and that the server runs")
    if isinstance(reason, ssl.SSLCertVerificationError):
        return RuntimeFailure(f"{what}: the TLS certificate of {host} cannot be verified "
                              f"({reason.verify_message})",
                              hint="fix the server's certificate, or add its CA to this "
                              "machine's trust store (maqet never skips verification)")
    if isinstance(reason, ssl.SSLError):
        return RuntimeFailure(f"{what}: TLS with {host} failed ({reason.reason or reason})",
                              hint="check the URL's scheme and port")
    if isinstance(reason, OSError) and reason.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return RuntimeFailure(f"{what}: cannot reach {host} ({reason.strerror})",
                              hint="check the network")
    return RuntimeFailure(f"{what}: cannot connect to {host} ({_reason(reason)})",
                          hint="check the URL and the network")


def _hostname(host: str) -> str:
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _reason(err: object) -> str:
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    text = str(err) or type(err).__name__
    return " ".join(text.split())


def _content_length(response: Any) -> int | None:
    encoding = (response.headers.get("Content-Encoding") or "identity").lower()
    value = response.headers.get("Content-Length")
    if value is None or encoding != "identity":
        return None
    try:
        length = int(value)
    except ValueError:
        return None
    return length if length >= 0 else None
