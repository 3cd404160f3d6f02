"""The configured models by name, and the virtual names `local`, `frontier` and `auto`."""

from __future__ import annotations

from collections.abc import Iterable

from router.backend import Backend
from router.chat import Tier
from router.errors import ModelNotFound

VIRTUAL_LOCAL = "local"
VIRTUAL_FRONTIER = "frontier"
VIRTUAL_AUTO = "auto"


class ModelCatalog:
    """Backends by model name. The first backend of each tier is that tier's default."""

    def __init__(self, backends: Iterable[Backend]) -> None:
        self._by_name: dict[str, Backend] = {}
        self._defaults: dict[Tier, Backend] = {}
        for backend in backends:
            self._by_name[backend.name] = backend
            self._defaults.setdefault(backend.tier, backend)

    @property
    def backends(self) -> list[Backend]:
        return list(self._by_name.values())

    def default(self, tier: Tier) -> Backend | None:
        return self._defaults.get(tier)

    def of_tier(self, tier: Tier) -> list[Backend]:
        return [b for b in self._by_name.values() if b.tier == tier]

    def get(self, name: str) -> Backend | None:
        return self._by_name.get(name)

    def virtual_names(self) -> list[str]:
        names = [VIRTUAL_LOCAL] if VIRTUAL_LOCAL not in self._by_name and "local" in self._defaults else []
        if "frontier" in self._defaults:
            names += [VIRTUAL_FRONTIER, VIRTUAL_AUTO]
        return names

    def resolve(self, name: str) -> Backend:
        """The backend a pinned model name stands for (`local`, `frontier`, or a configured name)."""
        backend = self._by_name.get(name)
        if backend is None and name == VIRTUAL_LOCAL:
            backend = self._defaults.get("local")
        elif backend is None and name == VIRTUAL_FRONTIER:
            backend = self._defaults.get("frontier")
        if backend is None and name in (VIRTUAL_LOCAL, VIRTUAL_FRONTIER):
            raise ModelNotFound(f"The model `{name}` is not available: no {name} model is configured.", param="model")
        if backend is None:
            raise ModelNotFound(f"The model `{name}` does not exist or you do not have access to it.", param="model")
        return backend
