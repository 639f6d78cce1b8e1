"""Fetching listing images: async, bounded, cached, and careful with untrusted URLs.

Scraped image URLs are untrusted. Addresses on loopback, private, link-local
(169.254.169.254, cloud metadata), multicast and reserved ranges are refused,
at every redirect hop and at DNS resolution time (so a name that resolves to
such an address is refused too), unless `allow_private` is set.

A host that answers 429 (Too Many Requests), or 503 with a Retry-After, is
asked for nothing more until the time it gave (or the backoff): its other
images wait too, instead of each being refused in turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import email.utils
import hashlib
import ipaddress
import logging
import os
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

log = logging.getLogger(__name__)

# The first bytes of the image formats we accept.
_MAGIC = (
    (b"\xff\xd8\xff", "jpeg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"RIFF", "webp"),  # followed by WEBP at offset 8
    (b"BM", "bmp"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
)
#: Content types that say nothing of the bytes (binary/...: S3's default for uploads);
#: the file's signature decides.
_UNTYPED = {"application/octet-stream", "binary/octet-stream"}
#: ISO base media file brands of AVIF stills and sequences (in the "ftyp" box).
_AVIF_BRANDS = {b"avif", b"avis"}
#: Bytes of a download `image_kind` needs to see (an AVIF "ftyp" box lists its brands).
SIGNATURE_BYTES = 64


class FetchError(Exception):
    """An image that could not be fetched; `retryable` for timeouts and server errors;
    `retry_after`: the seconds a busy server asked us to wait (HTTP Retry-After);
    `permanent` where every later run would fail the same way (a refused address), so
    that the URL is not tried again."""

    def __init__(
        self,
        message: str,
        retryable: bool = False,
        retry_after: float | None = None,
        permanent: bool = False,
    ):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after
        self.permanent = permanent


@dataclass(frozen=True)
class FetchSettings:
    concurrency: int = 16
    timeout: float = 20.0
    retries: int = 2
    backoff: float = 0.5
    max_bytes: int = 20 * 2**20
    max_redirects: int = 5
    #: The longest Retry-After (429, 503) honoured within a run; a server that asks for
    #: longer fails the image now, to be retried on a later run.
    max_retry_after: float = 30.0
    allow_private: bool = False
    cache_dir: Path | None = None
    user_agent: str = "bikematch-embedder/0.1"


def address_allowed(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


class _PublicOnlyResolver(AbstractResolver):
    """Resolves names and drops every address we must not connect to."""

    def __init__(self) -> None:
        self._resolver = aiohttp.ThreadedResolver()

    async def resolve(self, host: str, port: int = 0, family=socket.AF_INET) -> list[ResolveResult]:
        results = await self._resolver.resolve(host, port, family)
        allowed = [r for r in results if address_allowed(r["host"])]
        if not allowed:
            raise OSError(f"{host} resolves only to private or reserved addresses")
        return allowed

    async def close(self) -> None:
        await self._resolver.close()


def retry_after(value: str | None) -> float | None:
    """Seconds from an HTTP Retry-After header (delay-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # HTTP dates are GMT
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, (when - datetime.datetime.now(datetime.UTC)).total_seconds())


def image_kind(data: bytes) -> str | None:
    """The image format `data` (a file's first SIGNATURE_BYTES) starts like, or None."""
    if data[4:8] == b"ftyp":
        # An AVIF names itself by brand: the major one, or a compatible one after a
        # "mif1" major brand (HEIC, which PIL cannot read, has other brands).
        size = int.from_bytes(data[:4], "big")
        brands = {data[8:12]} | {data[at : at + 4] for at in range(16, min(size, len(data)), 4)}
        return "avif" if brands & _AVIF_BRANDS else None
    for magic, kind in _MAGIC:
        if data.startswith(magic):
            if kind == "webp" and data[8:12] != b"WEBP":
                continue
            return kind
    return None


def _cache_paths(cache_dir: Path, url: str) -> tuple[Path, Path]:
    """(the URL's index entry, the blob directory): blobs are named by their content hash."""
    key = hashlib.sha256(url.encode()).hexdigest()
    return cache_dir / _URLS / key, cache_dir / _BLOBS


#: The cache's layout: urls/<sha256 of the URL> holds the sha256 of its image's bytes,
#: blobs/<sha256 of the bytes> the bytes (shared by URLs that serve the same image).
_URLS, _BLOBS = "urls", "blobs"


def cached_image(cache_dir: Path, url: str) -> bytes | None:
    """The cached bytes of an image URL, if the cache has them."""
    index, blobs = _cache_paths(Path(cache_dir), url)
    if not index.exists():
        return None
    blob = blobs / index.read_text().strip()
    return blob.read_bytes() if blob.exists() else None


def prune_cache(cache_dir: Path, keep_urls: Iterable[str]) -> tuple[int, int]:
    """Forget cached URLs not in `keep_urls` (the image URLs listings still have) and
    remove the images no remaining URL names. Returns (images removed, bytes freed).

    Safe beside a running embedder: an image it stores between the two steps may be
    removed, and is then fetched again when next needed.
    """
    index_dir, blob_dir = Path(cache_dir) / _URLS, Path(cache_dir) / _BLOBS
    keep = {hashlib.sha256(url.encode()).hexdigest() for url in keep_urls}
    named = set()
    for entry in index_dir.glob("*") if index_dir.is_dir() else ():
        if entry.name in keep:
            with contextlib.suppress(OSError):
                named.add(entry.read_text().strip())
        else:
            entry.unlink(missing_ok=True)
    removed = freed = 0
    an_hour_ago = time.time() - 3600
    for blob in blob_dir.glob("*") if blob_dir.is_dir() else ():
        if blob.name in named:
            continue
        with contextlib.suppress(FileNotFoundError):
            stat = blob.stat()
            if blob.suffix == ".tmp" and stat.st_mtime > an_hour_ago:
                continue  # a write in progress
            blob.unlink()
            removed, freed = removed + (blob.suffix != ".tmp"), freed + stat.st_size
    return removed, freed


def _host(url: str) -> str:
    """The URL's host and port as it names them; "" where it cannot be read."""
    try:
        return urlsplit(url).netloc.lower()
    except ValueError:  # left to _check_url to refuse
        return ""


class ImageFetcher:
    """`await fetcher.fetch(url)` -> bytes of a verified image, or FetchError."""

    def __init__(self, settings: FetchSettings) -> None:
        self.settings = settings
        self.semaphore = asyncio.Semaphore(settings.concurrency)
        self.session: aiohttp.ClientSession | None = None
        self.cache_hits = 0
        #: Whether writing to the cache failed (it is then skipped, not fatal).
        self.cache_failed = False
        #: host -> (monotonic time it asked us to wait until, the HTTP status that asked).
        self._host_busy_until: dict[str, tuple[float, int]] = {}

    async def __aenter__(self) -> ImageFetcher:
        connector = aiohttp.TCPConnector(
            limit=self.settings.concurrency,
            resolver=None if self.settings.allow_private else _PublicOnlyResolver(),
        )
        self.session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.settings.timeout),
            headers={"User-Agent": self.settings.user_agent, "Accept": "image/*"},
        )
        return self

    async def __aexit__(self, *exc) -> None:
        await self.session.close()

    # ------------------------------------------------------------ cache

    def _cache_paths(self, url: str) -> tuple[Path, Path] | None:
        if self.settings.cache_dir is None:
            return None
        return _cache_paths(self.settings.cache_dir, url)

    def _cached(self, url: str) -> bytes | None:
        if self.settings.cache_dir is None:
            return None
        return cached_image(self.settings.cache_dir, url)

    def _store(self, url: str, data: bytes) -> None:
        """Cache an image; where the cache cannot be written (a full disk), the image is
        still returned, and the run says so once."""
        paths = self._cache_paths(url)
        if paths is None:
            return
        digest = hashlib.sha256(data).hexdigest()
        blob = paths[1] / digest
        try:
            paths[1].mkdir(parents=True, exist_ok=True)
            paths[0].parent.mkdir(parents=True, exist_ok=True)
            if not blob.exists():
                temporary = blob.with_suffix(f".{os.getpid()}.{id(data)}.tmp")
                temporary.write_bytes(data)
                temporary.replace(blob)
            paths[0].write_text(digest)
        except OSError as exc:
            if not self.cache_failed:
                log.warning("images are not being cached: %s", exc)
            self.cache_failed = True

    # ------------------------------------------------------------ fetching

    async def fetch(self, url: str) -> bytes:
        cached = self._cached(url)
        if cached is not None:
            self.cache_hits += 1
            return cached
        attempt = 0
        while True:
            try:
                await self._wait_for_host(url)
                async with self.semaphore:
                    if self._host_busy_for(url) > 0:
                        continue  # it answered 429 while this request waited for a slot
                    data = await self._fetch_once(url)
                self._store(url, data)
                return data
            except FetchError as exc:
                if not exc.retryable or attempt >= self.settings.retries:
                    raise
                wait = self.settings.backoff * 2**attempt
                if exc.retry_after is not None:
                    if exc.retry_after > self.settings.max_retry_after:
                        raise
                    wait = max(wait, exc.retry_after)
            attempt += 1
            await asyncio.sleep(wait)

    async def _fetch_once(self, url: str) -> bytes:
        for _ in range(self.settings.max_redirects + 1):
            await self._check_url(url)
            try:
                async with self.session.get(url, allow_redirects=False) as response:
                    if response.status in (301, 302, 303, 307, 308):
                        location = response.headers.get("Location")
                        if not location:
                            raise FetchError(f"HTTP {response.status} without a Location")
                        try:
                            url = urljoin(url, location)
                        except ValueError as exc:
                            raise FetchError(f"not a valid URL: {exc}: {location[:100]}") from exc
                        continue
                    if response.status >= 500 or response.status == 429:
                        wait = retry_after(response.headers.get("Retry-After"))
                        self._host_busy(url, response.status, wait)
                        asked = f" (retry after {wait:.0f} s)" if wait is not None else ""
                        raise FetchError(f"HTTP {response.status}{asked}", True, wait)
                    if response.status != 200:
                        raise FetchError(f"HTTP {response.status}")
                    return await self._read_image(response)
            except TimeoutError as exc:
                raise FetchError(f"timed out after {self.settings.timeout:g} s", True) from exc
            except aiohttp.InvalidURL as exc:  # a redirect's Location, say
                raise FetchError(f"not a valid URL: {exc}") from exc
            except aiohttp.ClientError as exc:
                raise FetchError(f"{type(exc).__name__}: {exc}", retryable=True) from exc
            except OSError as exc:
                raise FetchError(str(exc)) from exc
        raise FetchError(f"more than {self.settings.max_redirects} redirects")

    def _host_busy(self, url: str, status: int, wait: float | None) -> None:
        """A server that is too busy (429, or 503 with a Retry-After) is busy for every
        image it serves: none is asked for until the time it gave, or the backoff."""
        if wait is None and status != 429:
            return  # a 500 or a bare 503 may be this image's alone
        host = _host(url)
        until = time.monotonic() + (self.settings.backoff if wait is None else wait)
        if until > self._host_busy_until.get(host, (0.0, 0))[0]:
            self._host_busy_until[host] = (until, status)

    def _host_busy_for(self, url: str) -> float:
        """Seconds the URL's host asked us to wait still."""
        busy = self._host_busy_until.get(_host(url))
        return 0.0 if busy is None else busy[0] - time.monotonic()

    async def _wait_for_host(self, url: str) -> None:
        """Wait while the URL's host asked us to; where that is longer than a run waits,
        fail without asking, for a later run to retry."""
        while (left := self._host_busy_for(url)) > 0:
            if left > self.settings.max_retry_after:
                host = _host(url)
                status = self._host_busy_until[host][1]
                raise FetchError(
                    f"HTTP {status} earlier from {host} (retry after {left:.0f} s)", True, left
                )
            await asyncio.sleep(left)

    async def _check_url(self, url: str) -> None:
        try:
            parts = urlsplit(url)
            hostname, _ = parts.hostname, parts.port  # .port checks the range
            if hostname:
                hostname.encode("idna")  # a label empty or over 63 characters
        except ValueError as exc:  # UnicodeError is one
            raise FetchError(f"not a valid URL: {exc}: {url[:100]}") from exc
        if parts.scheme not in ("http", "https") or not hostname:
            raise FetchError(f"not an http(s) URL: {url[:100]}")
        if self.settings.allow_private:
            return
        try:
            addresses = [str(ipaddress.ip_address(hostname))]
        except ValueError:
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(hostname, None)
            except OSError as exc:
                raise FetchError(f"cannot resolve {hostname}: {exc}", True) from exc
            addresses = [info[4][0] for info in infos]
        # The resolver filters again at connect time, against DNS rebinding.
        if not any(address_allowed(address) for address in addresses):
            raise FetchError(
                f"refused: {hostname} is a private or reserved address", permanent=True
            )

    async def _read_image(self, response: aiohttp.ClientResponse) -> bytes:
        content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type and not (content_type.startswith("image/") or content_type in _UNTYPED):
            raise FetchError(f"not an image: Content-Type {content_type}")
        declared = response.content_length
        if declared is not None and declared > self.settings.max_bytes:
            raise FetchError(f"too large: {declared} bytes")
        data = bytearray()
        async for chunk in response.content.iter_chunked(65536):
            data.extend(chunk)
            if len(data) > self.settings.max_bytes:
                raise FetchError(f"too large: over {self.settings.max_bytes} bytes")
        if not data:
            raise FetchError("empty response (0 bytes)")
        if image_kind(bytes(data[:SIGNATURE_BYTES])) is None:
            raise FetchError("not an image: unknown file signature")
        return bytes(data)
