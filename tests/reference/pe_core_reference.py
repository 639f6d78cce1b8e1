"""Compare our PE-Core with timm's (vision) and open_clip's (text), on random weights.

Run as a script (the pytest test starts it in a subprocess): it puts a stand-in
`torchvision` into sys.modules, because timm and open_clip import torchvision at
module level although building and running these two towers never calls it,
and torchvision's wheel does not load with this project's CPU torch. Keeping
the stand-in in its own process keeps it away from every other test.

Prints one JSON object: max abs differences of image and text embeddings.
"""

from __future__ import annotations

import enum
import gzip
import importlib.machinery
import json
import sys
import types
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

#: Blocks per tower in the comparison (of the model's 24).
LAYERS = 4


def install_torchvision_stand_in() -> None:
    class _Anything(type):
        def __getattr__(cls, name):
            if name.startswith("__"):
                raise AttributeError(name)
            return _Placeholder

    class _Placeholder(metaclass=_Anything):
        def __init__(self, *args, **kwargs):
            pass

    def anything(attribute: str):
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        return _Placeholder

    def module(name: str) -> types.ModuleType:
        stand_in = types.ModuleType(name)
        stand_in.__getattr__ = anything
        stand_in.__path__ = []
        stand_in.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
        sys.modules[name] = stand_in
        return stand_in

    for name in (
        "torchvision",
        "torchvision.ops",
        "torchvision.ops.misc",
        "torchvision.transforms",
        "torchvision.transforms.functional",
        "torchvision.transforms.v2",
        "torchvision.datasets",
        "torchvision.io",
        "torchvision.utils",
    ):
        module(name)
    sys.modules["torchvision"].__version__ = "0.0-stand-in"
    # Used as dict keys at import time, so its members must be distinct.
    modes = enum.Enum(
        "InterpolationMode", "NEAREST NEAREST_EXACT BILINEAR BICUBIC BOX HAMMING LANCZOS"
    )
    sys.modules["torchvision.transforms"].InterpolationMode = modes
    sys.modules["torchvision.transforms.functional"].InterpolationMode = modes


def timm_to_official(state_dict):
    """timm's Eva/PE names -> the official perception_models names."""
    out = {}
    for key, value in state_dict.items():
        if key == "head.bias":
            continue
        if key == "head.weight":
            out["visual.proj"] = value.transpose(0, 1)
            continue
        if key == "cls_token":
            out["visual.class_embedding"] = value.reshape(-1)
            continue
        if key == "pos_embed":
            out["visual.positional_embedding"] = value[0]
            continue
        if key.startswith("attn_pool."):
            rest = key[len("attn_pool.") :]
            if rest in ("q.weight", "q.bias"):
                kind = rest.split(".")[1]
                kv = state_dict[f"attn_pool.kv.{kind}"]
                out[f"visual.attn_pool.attn.in_proj_{kind}"] = __import__("torch").cat([value, kv])
                continue
            if rest.startswith("kv."):
                continue
            rest = {"latent": "probe"}.get(rest, rest)
            rest = rest.replace("norm.", "layernorm.").replace("proj.", "attn.out_proj.")
            rest = rest.replace("mlp.fc1.", "mlp.c_fc.").replace("mlp.fc2.", "mlp.c_proj.")
            out[f"visual.attn_pool.{rest}"] = value
            continue
        name = key
        for old, new in (
            ("patch_embed.proj", "conv1"),
            ("blocks.", "transformer.resblocks."),
            ("norm_pre", "ln_pre"),
            (".norm1.", ".ln_1."),
            (".norm2.", ".ln_2."),
            ("attn.qkv.weight", "attn.in_proj_weight"),
            ("attn.qkv.bias", "attn.in_proj_bias"),
            ("attn.proj.", "attn.out_proj."),
            ("mlp.fc1.", "mlp.c_fc."),
            ("mlp.fc2.", "mlp.c_proj."),
            ("gamma_1", "ls_1.gamma"),
            ("gamma_2", "ls_2.gamma"),
        ):
            name = name.replace(old, new)
        if name.startswith("norm."):
            name = "ln_post." + name[len("norm.") :]
        out["visual." + name] = value
    return out


def open_clip_text_to_official(state_dict):
    out = {}
    for key, value in state_dict.items():
        if not key.startswith("text."):
            continue
        name = key[len("text.") :]
        if name == "text_projection.weight":  # a bias-free Linear stores (out, in)
            name, value = "text_projection", value.transpose(0, 1)
        out[name] = value
    return out


def clip_vocabulary(directory: Path) -> Path:
    """vocab.json + merges.txt from open_clip's bundled BPE file, built as CLIP builds it."""
    import open_clip

    merges_file = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    merges = gzip.open(merges_file).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    vocab = list(open_clip.tokenizer.bytes_to_unicode().values())
    vocab += [token + "</w>" for token in vocab]
    vocab += ["".join(merge.split()) for merge in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (directory / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    special = "<|endoftext|>"
    config = {
        "bos_token": "<|startoftext|>",
        "eos_token": special,
        "unk_token": special,
        "pad_token": special,
        "model_max_length": 77,
        "do_lower_case": True,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    return directory


def compare_tokenizers(directory: Path) -> None:
    """Our ClipTokenizer against open_clip's SimpleTokenizer on titles.json in `directory`."""
    install_torchvision_stand_in()
    import open_clip

    from perception_models.tokenizers import ClipTokenizer

    titles = json.loads((directory / "titles.json").read_text())
    ours = ClipTokenizer(32, clip_vocabulary(directory))(titles)
    reference = open_clip.tokenizer.SimpleTokenizer(context_length=32)(titles)
    print(json.dumps({"ours": ours.tolist(), "reference": reference.tolist()}))


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "tokenizer":
        compare_tokenizers(Path(sys.argv[2]))
        return
    install_torchvision_stand_in()
    import open_clip
    import timm
    import torch

    from perception_models.pe_core import PE_CORE_L14_336, from_official_state_dict

    # L14-336 in every width, head, patch, position and pooling, with LAYERS of its 24
    # blocks in each tower: the blocks are alike, and the comparison is about what each
    # one computes and what the towers do around them.
    config = replace(
        PE_CORE_L14_336,
        vision=replace(PE_CORE_L14_336.vision, layers=LAYERS),
        text=replace(PE_CORE_L14_336.text, layers=LAYERS),
    )
    torch.manual_seed(0)
    vision_ref = timm.create_model(
        "vit_pe_core_large_patch14_336", pretrained=False, num_classes=1024, depth=LAYERS
    )
    vision_ref.eval()
    with torch.no_grad():  # random but non-trivial values everywhere (timm zero-inits some)
        for name, parameter in vision_ref.named_parameters():
            if "norm" in name:
                parameter.copy_(1 + 0.1 * torch.randn_like(parameter)) if name.endswith(
                    "weight"
                ) else parameter.normal_(0, 0.1)
            else:
                parameter.normal_(0, 0.02)
        vision_ref.head.bias.zero_()

    # open_clip's PE-Core text tower alone (its whole model would build a second vision
    # tower); encode_text is this tower's forward.
    text_config = open_clip.get_model_config("PE-Core-L-14-336")
    text_ref = open_clip.model._build_text_tower(
        text_config["embed_dim"], {**text_config["text_cfg"], "layers": LAYERS}
    )
    text_ref.eval()
    with torch.no_grad():
        for name, parameter in text_ref.named_parameters():
            parameter.normal_(0, 0.02) if "norm" not in name else None

    official = timm_to_official(vision_ref.state_dict())
    official.update(
        open_clip_text_to_official({f"text.{k}": v for k, v in text_ref.state_dict().items()})
    )
    official["logit_scale"] = torch.tensor(4.6052)
    ours = from_official_state_dict(official, config).eval()

    pixels = torch.randn(1, 3, 336, 336)  # one photo: the towers' cost is per photo
    tokens = torch.zeros(2, 32, dtype=torch.long)
    tokens[0, :6] = torch.tensor([49406, 320, 1125, 539, 2368, 49407])
    tokens[1, :32] = torch.randint(1, 49406, (32,))
    tokens[1, 0], tokens[1, 31] = 49406, 49407
    with torch.inference_mode():
        reference = vision_ref(pixels)
        image_diff = (ours.vision(pixels) - reference).abs().max().item()
        text_diff = (ours.text(tokens) - text_ref(tokens)).abs().max().item()
    print(
        json.dumps(
            {
                "image_max_abs_diff": image_diff,
                "text_max_abs_diff": text_diff,
                "image_scale": reference.abs().max().item(),
            }
        )
    )


if __name__ == "__main__":
    main()
