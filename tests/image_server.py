"""A local image server for embedder tests: good images and every way an image goes wrong."""

from __future__ import annotations

import io
import struct
import threading
import time
import zlib
from collections import Counter, defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

import numpy as np
from PIL import Image, ImageCms


def jpeg(color, size=(64, 48), mode="RGB", exif_rotate=False) -> bytes:
    image = Image.new(mode, size, color)
    buffer = io.BytesIO()
    if exif_rotate:
        exif = Image.Exif()
        exif[0x0112] = 6  # rotate 90 degrees
        image.save(buffer, format="JPEG", exif=exif)
    else:
        image.save(buffer, format="JPEG")
    return buffer.getvalue()


def png(image: Image.Image) -> bytes:
    return encoded(image, "PNG")


def encoded(image: Image.Image, image_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def display_p3_profile() -> bytes:
    """An ICC profile with Display P3's primaries: LittleCMS's sRGB profile with its
    colorant tags (D50-adapted XYZ, s15Fixed16) changed to P3's."""
    primaries = {
        b"rXYZ": (0.5151, 0.2412, -0.0011),
        b"gXYZ": (0.2920, 0.6922, 0.0419),
        b"bXYZ": (0.1571, 0.0666, 0.7841),
    }
    data = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    (tags,) = struct.unpack(">I", data[128:132])
    for at in range(132, 132 + 12 * tags, 12):
        signature, offset, _ = struct.unpack(">4sII", data[at : at + 12])
        if signature in primaries:
            values = (round(value * 65536) for value in primaries[signature])
            data[offset + 8 : offset + 20] = struct.pack(">3i", *values)
    return bytes(data)


def grey16_png(size=(64, 48)) -> bytes:
    """A 16-bit greyscale PNG: a dark left half (level 40 of 255), a light right half (200)."""
    levels = np.full((size[1], size[0]), 200 * 257, dtype=np.uint16)
    levels[:, : size[0] // 2] = 40 * 257
    return png(Image.fromarray(levels))


def huge_png(width=20000, height=20000) -> bytes:
    """A tiny file that claims a 400-megapixel image (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 1000))
        + chunk(b"IEND", b"")
    )


def palette_with_alpha() -> bytes:
    image = Image.new("RGBA", (40, 40), (255, 0, 0, 0))
    return png(image.convert("P"))


class LocalServer(ThreadingHTTPServer):
    """A threaded test server on 127.0.0.1 that takes many connections at once.

    The default backlog of 5 drops some of a client's 16 connections at once
    (the embedder's fetches, Scrapy's requests), and they retry a second later.
    """

    request_queue_size = 64

    def __init__(self, handler) -> None:
        super().__init__(("127.0.0.1", 0), handler)


class ImageServer:
    """Serves /img/<name>; `delay` slows every image; `requests` counts them, `asked_at`
    times them; `most_at_once` is the most requests it was serving at the same time.
    /busy/<seconds>/<name> answers its first request 429 with Retry-After: seconds;
    /redirect/<name> redirects to /img/<name>, /moved/<quoted URL> to that URL."""

    def __init__(self) -> None:
        self.images: dict[str, tuple[int, str, bytes]] = {}
        self.requests: Counter = Counter()
        self.asked_at: defaultdict[str, list[float]] = defaultdict(list)
        self.delay = 0.0
        self.most_at_once = 0
        self._serving = 0
        self._counting = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            _counted = False

            def log_message(self, *args):
                pass

            # A request counts as being served from its arrival until its answer starts:
            # the client cannot have its answer before then, so requests that overlap in
            # that span were open at the client at the same time. (Counting until the
            # handler returns would overlap the client's next request by a moment.)
            def do_GET(self):  # noqa: N802
                self._counted = True
                with server._counting:
                    server._serving += 1
                    server.most_at_once = max(server.most_at_once, server._serving)
                try:
                    self._serve()
                finally:
                    self._answering()

            def _answering(self):
                if self._counted:
                    self._counted = False
                    with server._counting:
                        server._serving -= 1

            def send_response(self, *args, **kwargs):
                self._answering()
                super().send_response(*args, **kwargs)

            def _serve(self):
                server.requests[self.path] += 1
                server.asked_at[self.path].append(time.monotonic())
                if self.path.startswith("/busy/") and server.requests[self.path] == 1:
                    self.send_response(429)
                    self.send_header("Retry-After", self.path.split("/")[2])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if self.path.startswith("/slow/"):
                    time.sleep(5)
                if server.delay:
                    time.sleep(server.delay)
                if self.path.startswith("/moved/"):  # to the rest of the path, unquoted
                    self.send_response(301)
                    self.send_header("Location", unquote(self.path.removeprefix("/moved/")))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if self.path.startswith("/redirect/"):
                    self.send_response(302)
                    self.send_header("Location", "/img/" + self.path.rsplit("/", 1)[-1])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status, content_type, body = server.images.get(
                    self.path.rsplit("/", 1)[-1], (404, "text/html", b"not found")
                )
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = LocalServer(Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def add(self, name: str, body: bytes, content_type="image/jpeg", status=200) -> str:
        self.images[name] = (status, content_type, body)
        return f"{self.base}/img/{name}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
