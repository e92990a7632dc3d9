"""Upload to the Hugging Face Hub: a model as its exported folder (``push``), the demo as a Gradio
Space (``push_space``)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..config.environment import MODEL_ENV
from . import HubError
from .export import export
from .space import space_folder


def _api(token: str | None):
    from huggingface_hub import HfApi

    token = token or os.environ.get("HF_TOKEN")
    if not token:
        from huggingface_hub import get_token

        token = get_token()
    if not token:
        raise HubError("no Hugging Face token: pass --token, set HF_TOKEN or run `hf auth login`")
    return HfApi(token=token)


def _publish(api, repo_id: str, folder: Path, repo_type: str, private: bool, **create_kwargs) -> str:
    try:
        api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True, **create_kwargs)
        info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type=repo_type,
                                 commit_message="Upload LPIP-Diff")
    except HubError:
        raise
    except Exception as error:  # network and HTTP errors come in many classes; all end here
        raise HubError(f"could not publish to {repo_id}: {type(error).__name__}: {error} "
                       "(offline? wrong token or repo id?)") from None
    return str(getattr(info, "commit_url", info))


def push(model, repo_id: str, private: bool = False, token: str | None = None) -> str:
    """Export ``model`` and upload it as the model repo ``repo_id``."""
    api = _api(token)
    with tempfile.TemporaryDirectory() as tmp:
        folder = export(model, Path(tmp) / "export", repo_id=repo_id)
        return _publish(api, repo_id, folder, "model", private)


def push_space(space_id: str, model_repo: str | None = None, private: bool = False, token: str | None = None) -> str:
    """Upload the demo as a Gradio Space; with ``model_repo`` the Space loads that model repo
    (set the Space variable LPIPDIFF_MODEL), else the bundled weights travel with it."""
    api = _api(token)
    with tempfile.TemporaryDirectory() as tmp:
        folder = space_folder(Path(tmp) / "space", model_repo)
        url = _publish(api, space_id, folder, "space", private, space_sdk="gradio")
        if model_repo:
            try:
                api.add_space_variable(space_id, MODEL_ENV, model_repo)
            except Exception as error:
                raise HubError(f"uploaded, but could not set {MODEL_ENV} on {space_id}: {error}") from None
        return url
