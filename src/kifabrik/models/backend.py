"""Which backend runs a registered model: the option that `eval`, `generate`, agents and recipes share.

    kifabrik eval fach-llm --task werkstatt.yaml --backend llama.cpp            # the GGUF it was registered from
    kifabrik generate fach-llm "Wann ist der Ölwechsel fällig?" --backend llama.cpp --gguf-type f32

`models.runtime.load(runnable, backend=..., gguf_type=...)` does the loading; what ran is recorded
with what it produced (`describe()` of the loaded model: backend, GGUF file, type and quantisation).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from kifabrik.config import StrictModel
from kifabrik.models.llamacpp import GgufType
from kifabrik.models.runtime import Backend


class BackendOptions(StrictModel):
    """What runs the registered models of one command or step."""

    backend: Backend = Field(default="transformers", description="What runs registered models: transformers, or "
                             "llama.cpp on a GGUF file (CPU; `make llama-cpp` installs it).")
    gguf_type: GgufType = Field(default="auto", description="With --backend llama.cpp: the GGUF a model was "
                                "registered from (auto; else an f16 conversion), or an f32 / f16 conversion of its "
                                "weights.")

    def load_args(self) -> dict[str, Any]:
        """The keyword arguments of `models.runtime.load`."""
        return {"backend": self.backend, "gguf_type": self.gguf_type}
