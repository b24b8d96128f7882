"""Which backend runs a registered model: the option that `eval`, `generate`, agents and recipes share.

    kifabrik eval fach-llm --task werkstatt.yaml --backend llama.cpp            # the GGUF it was registered from
    kifabrik generate fach-llm "Wann ist der Ölwechsel fällig?" --backend llama.cpp --gguf-type f32

`models.runtime.load(runnable, backend=..., gguf_type=...)` does the loading; what ran is recorded
with what it produced (`describe()` of the loaded model: backend, GGUF file, type and quantisation).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from kifabrik.config import StrictModel
from kifabrik.models.gguf_convert import GgufType
from kifabrik.models.runtime import Backend, Dtype


class BackendOptions(StrictModel):
    """What runs the registered models of one command or step."""

    backend: Backend = Field(default="transformers", description="What runs registered models: transformers, or "
                             "llama.cpp on a GGUF file (CPU; `make llama-cpp` installs it).")
    gguf_type: GgufType = Field(default="auto", description="With --backend llama.cpp: the GGUF a model was "
                                "registered from (auto; else an f16 conversion), or an f32 / f16 conversion of its "
                                "weights.")
    dtype: Dtype = Field(default="auto", description="With the transformers backend: the precision of weights and "
                         "compute. auto: what a Fach-LLM records (`dtype` of the fach-llm step), else float32 on "
                         "CPUs and the stored precision on GPUs; bfloat16 is about twice as fast on CPUs with AMX.")

    @model_validator(mode="after")
    def _dtype_is_for_transformers(self) -> BackendOptions:
        if self.dtype != "auto" and self.backend != "transformers":
            raise ValueError(f"dtype {self.dtype} applies to the transformers backend; {self.backend} runs a GGUF "
                             "file (choose it with gguf_type)")
        return self

    def load_args(self) -> dict[str, Any]:
        """The keyword arguments of `models.runtime.load`."""
        return {"backend": self.backend, "gguf_type": self.gguf_type, "dtype": self.dtype}
