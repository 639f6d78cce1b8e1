"""Finding model weights: a local path, or the Hugging Face hub (HF_HUB_OFFLINE honoured)."""

from __future__ import annotations

from pathlib import Path


class WeightsNotFound(FileNotFoundError):
    """Weights that are neither on disk nor downloadable; the message says where we looked."""


def hub_file(repo_id: str, filename: str, what: str, setting: str | None = None) -> Path:
    """Download (or find in the cache) one file of a hub repo."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(hf_hub_download(repo_id=repo_id, filename=filename))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as exc:
        hint = f"set {setting} to a local copy, or " if setting else ""
        raise WeightsNotFound(
            f"{what} not found: {hint}allow downloads of {filename} from the hub repo "
            f"{repo_id} (HF_HUB_OFFLINE=1 allows only the local cache) [{type(exc).__name__}]"
        ) from exc


def hub_file_dir(repo_id: str, filenames: list[str], what: str) -> Path:
    """Download (or find in the cache) several files of a repo; returns their directory."""
    paths = [hub_file(repo_id, name, what) for name in filenames]
    return paths[0].parent
