"""A hosted embedding backend (a service that embeds for several clients), behind the
same interface.

Contract: POST the endpoint with JSON `{"model": NAME, "texts": [...]}` or
`{"model": NAME, "images": [base64 image file, ...]}`; the answer is
`{"embeddings": [[float, ...], ...]}` in the same order. An Authorization
header is sent when a token is set. Requests are batched, time out, and are
retried with backoff on timeouts, 429 and 5xx.

Images go as lossless PNGs of the pixels the embedder decoded, so a backend that
decodes and preprocesses them as the local model does (`bikematch serve`) stores the
vectors local embedding would. Where the backend says its model's input size (`GET
/health` answers `image_size`, as `bikematch serve` does), JPEGs are decoded at the
reduced scale the local model would decode them at, which keeps the uploads small.
"""

from __future__ import annotations

import base64
import io
import json
import time
import urllib.error
import urllib.parse
import urllib.request

import torch
from PIL import Image

from perception_models.base import EmbeddingModel
from perception_models.preprocess import to_rgb


class RemoteError(RuntimeError):
    pass


class RemoteModel(EmbeddingModel):
    image_size = 0
    context_length = 0

    def __init__(
        self,
        endpoint: str,
        name: str,
        remote_model: str | None = None,
        token: str | None = None,
        batch_size: int = 16,
        timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 1.0,
    ) -> None:
        super().__init__("cpu")
        self.endpoint = endpoint
        self.name = name
        self.remote_model = remote_model or name
        self.token = token
        self.batch_size = batch_size
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.image_size = self._input_size()
        # Ask once for the dimensions, with a probe of each kind.
        self.text_dims = len(self._post({"texts": ["probe"]})[0])
        probe = Image.new("RGB", (8, 8), (128, 128, 128))
        self.image_dims = len(self._post({"images": [self._encode(probe)]})[0])

    def preprocess(self, image: Image.Image) -> str:
        pixels = to_rgb(image)
        if pixels.info:  # no profile or orientation left to apply twice
            pixels = pixels.copy()
            pixels.info.clear()
        return self._encode(pixels)

    def collate(self, images: list) -> list:
        return images

    def tokenize(self, texts):
        return list(texts)

    def _image_features(self, images: list[str]) -> torch.Tensor:
        return self._batched("images", images)

    def _text_features(self, texts: list[str]) -> torch.Tensor:
        return self._batched("texts", texts)

    @staticmethod
    def _encode(image: Image.Image) -> str:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", compress_level=1)
        return base64.b64encode(buffer.getvalue()).decode("ascii")

    def _input_size(self) -> int:
        """The backend model's input size from its /health, or 0 where it does not say."""
        health = urllib.parse.urljoin(self.endpoint, "/health")
        try:
            with urllib.request.urlopen(health, timeout=self.timeout) as response:
                size = json.loads(response.read()).get("image_size", 0)
        except (OSError, ValueError, AttributeError):  # no /health: another backend
            return 0
        return size if isinstance(size, int) and size > 0 else 0

    def _batched(self, kind: str, items: list) -> torch.Tensor:
        vectors = []
        for start in range(0, len(items), self.batch_size):
            vectors.extend(self._post({kind: items[start : start + self.batch_size]}))
        return torch.tensor(vectors, dtype=torch.float32)

    def _post(self, payload: dict) -> list[list[float]]:
        body = json.dumps({"model": self.remote_model, **payload}).encode()
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        for attempt in range(self.retries + 1):
            request = urllib.request.Request(self.endpoint, body, headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    answer = json.loads(response.read())
                embeddings = answer["embeddings"]
                expected = len(next(iter(payload.values())))
                if len(embeddings) != expected:
                    raise RemoteError(f"asked for {expected} embeddings, got {len(embeddings)}")
                return embeddings
            except urllib.error.HTTPError as exc:
                if exc.code != 429 and exc.code < 500 or attempt == self.retries:
                    raise RemoteError(f"{self.endpoint}: HTTP {exc.code}") from exc
            except (urllib.error.URLError, TimeoutError) as exc:
                if attempt == self.retries:
                    raise RemoteError(f"{self.endpoint}: {exc}") from exc
            except (KeyError, ValueError, TypeError) as exc:
                raise RemoteError(f"{self.endpoint}: unexpected answer ({exc})") from exc
            time.sleep(self.backoff * 2**attempt)
        raise RemoteError(f"{self.endpoint}: no answer")
