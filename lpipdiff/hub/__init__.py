"""The Hugging Face Hub: export a self-contained model folder (``export``), its model card (``card``),
the demo's Space folder (``space``) and the uploads of both (``publish``)."""


class HubError(RuntimeError):
    """Publishing failed for a reason a person can fix (token, network, repo id, a missing checkout)."""
