"""Where an image comes from, and how its content is pinned: parsing only, no I/O.

An image is a local path, a ``file://`` URL (both *local*), or an ``http(s)://`` URL
(*remote*). Its checksum is written like ``ansible.builtin.get_url``'s:

- ``sha256:<64 hex digits>``: the digest itself;
- ``sha256:<URL of a SHA256SUMS file>``: the digest is the line of that file whose name
  is the image URL's file name (:func:`find_in_sums` reads the file's formats).

A remote image must have a checksum: the cache is addressed by content, and a
download nobody can verify would be trusted forever. A local image may omit it; the
cache then hashes the file as it copies it (see :mod:`maqet_engine.images.cache`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from maqet_engine import constants as C
from maqet_engine.errors import ConfigError
from maqet_engine.frozen import Frozen

_HEX_RE = re.compile(rf"[0-9a-fA-F]{{{C.IMAGE_DIGEST_HEX_LEN}}}")
_ANY_HEX_RE = re.compile(r"[0-9a-fA-F]+")
# BSD style, as `sha256sum --tag` and Fedora's CHECKSUM files write it
_BSD_LINE_RE = re.compile(r"SHA256 \((?P<name>.+)\) = (?P<hex>[0-9a-fA-F]+)")
_CHECKSUM_HINT = ("give checksum: sha256:<64 hex digits>, or sha256:<URL of a SHA256SUMS "
                  "file that lists the image>")


class ImageSource(Frozen):
    """A parsed image location and what pins its content.

    ``location`` is the URL of a remote image, or the absolute path of a local one
    (``file://`` URLs become paths). ``digest`` is the expected sha256 in lower-case
    hex when the checksum gave it; ``checksum_url`` is the SHA256SUMS file to look it
    up in otherwise. A local image may have neither.
    """

    __slots__ = ("location", "remote", "digest", "checksum_url")
    location: str
    remote: bool
    digest: str | None
    checksum_url: str | None

    @property
    def file_name(self) -> str:
        """The name a SHA256SUMS file lists this image under."""
        if not self.remote:
            return os.path.basename(self.location)
        from urllib.parse import unquote, urlsplit

        return unquote(urlsplit(self.location).path.rsplit("/", 1)[-1])

    @property
    def checksum(self) -> str | None:
        """The checksum as written in a definition (``sha256:...``), if any."""
        if self.digest is not None:
            return f"{C.IMAGE_DIGEST_ALGORITHM}:{self.digest}"
        if self.checksum_url is not None:
            return f"{C.IMAGE_DIGEST_ALGORITHM}:{self.checksum_url}"
        return None

    def __str__(self) -> str:
        return self.location


def parse_source(location: str, checksum: str | None = None, *,
                 base_dir: Path | str | None = None) -> ImageSource:
    """Parse an image location and its optional checksum.

    :param location: a path (relative ones are taken from ``base_dir``, default the
        working directory), a ``file://`` URL, or an ``http://`` / ``https://`` URL.
    :param checksum: ``sha256:<hex>`` or ``sha256:<URL of a SHA256SUMS file>``.
    :raise ConfigError: an unsupported scheme, a URL without a host or file name, a
        malformed checksum, or a remote image without a checksum.
    """
    from urllib.parse import urlsplit

    text = location.strip()
    if not text:
        raise ConfigError("the image location is empty",
                          hint="give a path, or an http(s):// or file:// URL")
    scheme = urlsplit(text).scheme.lower() if "://" in text else ""
    remote = scheme in C.IMAGE_URL_SCHEMES
    if remote:
        where = _check_url(text, what="image URL")
        if where.endswith("/"):
            raise ConfigError(f"image URL {text} names no file", hint="give the URL of "
                              "the image file itself, not of a directory")
    elif scheme == "file":
        where = str(_file_url_path(text, what="image URL"))
    elif scheme:
        raise ConfigError(f"image {text}: unsupported URL scheme {scheme!r}",
                          hint="use http://, https://, file:// or a local path")
    else:
        path = Path(text).expanduser()
        if not path.is_absolute():
            path = Path(base_dir if base_dir is not None else os.getcwd()) / path
        where = os.path.normpath(path)
    digest, checksum_url = _parse_checksum(checksum, image=where)
    if remote and digest is None and checksum_url is None:
        raise ConfigError(f"image {where}: a remote image needs a checksum",
                          hint=_CHECKSUM_HINT)
    return ImageSource(location=where, remote=remote, digest=digest, checksum_url=checksum_url)


def _parse_checksum(checksum: str | None, *, image: str) -> tuple[str | None, str | None]:
    if checksum is None or not checksum.strip():
        return None, None
    algorithm, sep, value = checksum.strip().partition(":")
    if not sep or not value:
        raise ConfigError(f"image {image}: checksum {checksum!r} is not <algorithm>:<value>",
                          hint=_CHECKSUM_HINT)
    if algorithm.lower() != C.IMAGE_DIGEST_ALGORITHM:
        raise ConfigError(f"image {image}: {algorithm} checksums are not supported",
                          hint="the image cache is addressed by sha256: " + _CHECKSUM_HINT)
    if "://" in value:
        scheme = value.split("://", 1)[0].lower()
        if scheme in C.IMAGE_URL_SCHEMES:
            return None, _check_url(value, what="checksum URL")
        if scheme == "file":
            _file_url_path(value, what="checksum URL")
            return None, value
        raise ConfigError(f"image {image}: checksum URL scheme {scheme!r} is not supported",
                          hint="use an http://, https:// or file:// URL of a SHA256SUMS file")
    if not _HEX_RE.fullmatch(value):
        raise ConfigError(f"image {image}: checksum {checksum!r} is not a sha256 digest "
                          f"({C.IMAGE_DIGEST_HEX_LEN} hex digits)", hint=_CHECKSUM_HINT)
    return value.lower(), None


def _check_url(url: str, *, what: str) -> str:
    """An http(s) URL with a host and no credentials, without its fragment."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError on a bad port
    except ValueError as err:
        raise ConfigError(f"{what} {url} is malformed: {err}") from err
    del port
    if not parts.hostname:
        raise ConfigError(f"{what} {url} has no host name")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(f"{what} {url}: credentials in URLs are not supported",
                          hint="they would be stored in the image cache; serve the image "
                          "without authentication")
    return urlunsplit((parts.scheme.lower(), parts.netloc, parts.path or "/", parts.query, ""))


def _file_url_path(url: str, *, what: str) -> Path:
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise ConfigError(f"{what} {url} names another host ({parts.netloc})",
                          hint="a file:// URL is read on this machine: file:///path")
    path = Path(unquote(parts.path))
    if not path.is_absolute() or parts.path.endswith("/"):
        raise ConfigError(f"{what} {url} does not name a file by its absolute path",
                          hint="write it as file:///absolute/path")
    return Path(os.path.normpath(path))


def find_in_sums(text: str, file_name: str) -> str | None:
    """The sha256 (lower-case hex) that a SHA256SUMS file gives for ``file_name``.

    Reads the formats ``sha256sum`` writes and ``get_url`` accepts: ``<hex>  <name>``
    (text mode), ``<hex> *<name>`` (binary mode), names with a leading ``./``, the BSD
    style ``SHA256 (<name>) = <hex>``, and a file holding one bare digest (taken as the
    image's). Blank lines, ``#`` comments and anything else (a PGP signature's armour)
    are skipped.

    :return: None when no line names the file.
    :raise ConfigError: the lines for the file disagree, or its value is not a sha256
        (a SHA512SUMS file given by mistake).
    """
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    if len(lines) == 1 and len(lines[0].split()) == 1 and _HEX_RE.fullmatch(lines[0]):
        return lines[0].lower()
    found: set[str] = set()
    for line in lines:
        bsd = _BSD_LINE_RE.fullmatch(line)
        if bsd:
            value, name = bsd["hex"], bsd["name"]
        else:
            value, sep, name = line.partition(" ")
            if not sep or not _ANY_HEX_RE.fullmatch(value):
                continue
            if name[:1] in (" ", "*"):
                name = name[1:]
        name = name.removeprefix("./")
        if name != file_name:
            continue
        if not _HEX_RE.fullmatch(value):
            raise ConfigError(f"the checksum line for {file_name} has {len(value)} hex digits, "
                              f"not {C.IMAGE_DIGEST_HEX_LEN}",
                              hint="give a SHA256SUMS file (is this SHA512SUMS or MD5SUMS?)")
        found.add(value.lower())
    if len(found) > 1:
        raise ConfigError(f"the checksum file lists {file_name} {len(found)} times with "
                          "different digests", hint="give the digest itself: sha256:<hex>")
    return found.pop() if found else None


def sums_names(text: str, limit: int = 3) -> list[str]:
    """The first file names a SHA256SUMS file lists (for a message that says what it
    does list)."""
    names: list[str] = []
    for line in text.splitlines():
        bsd = _BSD_LINE_RE.fullmatch(line.strip())
        value, sep, name = line.strip().partition(" ")
        if bsd:
            name = bsd["name"]
        elif not sep or not _ANY_HEX_RE.fullmatch(value):
            continue
        names.append(name.lstrip(" *").removeprefix("./"))
        if len(names) == limit:
            break
    return names
