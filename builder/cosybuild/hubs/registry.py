"""The registry of model hubs: the hub a manifest's `source` names.

Apart from the hubs package so that the hub modules, which import its shared pin format,
and the registry, which imports them, form no import cycle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from cosybuild.cache import Cache
from cosybuild.hubs import ModelHub

__all__ = ["get_hub"]


def get_hub(name: str, base_dir: Path, cache: Optional[Cache] = None) -> ModelHub:
    """The hub named by a manifest's `source`; `base_dir` anchors local paths, `cache` takes lock-time downloads."""
    # Imported here so that a manifest of local models never imports the hub clients.
    if name == "huggingface":
        from cosybuild.hubs.huggingface import HuggingFaceHub

        return HuggingFaceHub(cache)
    if name == "modelscope":
        from cosybuild.hubs.modelscope import ModelScopeHub

        return ModelScopeHub(cache)
    if name == "local":
        from cosybuild.hubs.local import LocalFolder

        return LocalFolder(base_dir)
    raise ValueError("unknown model source %r" % name)
