"""Options of a dataset import: one pydantic model for the CLI, recipes and the Python API."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from kifabrik.config import StrictModel

Format = Literal["auto", "chat", "instruction", "text-jsonl", "csv", "text", "pdf"]


class DatasetSpec(StrictModel):
    """One dataset to import (a recipe's `datasets:` entry; the name is its key)."""

    path: str | list[str] = Field(description="File(s) or folder(s) to import; `kifabrik:data/demo/...` names "
                                              "a file shipped with kifabrik.")
    test_path: str | list[str] | None = Field(default=None, description="Held-out file(s) for the test split "
                                                                       "(instead of --test-fraction).")
    policy: str | None = Field(default=None, description="ODRL 2.2 JSON-LD policy file.")
    policy_preset: str | None = Field(default=None, description="A policy preset, e.g. internal-only or "
                                                               "expires-on:2026-12-31.")
    format: Format = Field(default="auto", description="How to read the files; auto decides by extension and keys.")
    csv_map: str | dict[str, str] | None = Field(default=None, description="CSV columns: user=Frage,assistant=Antwort "
                                                                         "or text=Inhalt.")
    follow_links: bool = Field(default=False, description="Follow symbolic links inside imported folders when "
                               "their target stays inside the folder (without it, and for targets outside, "
                               "links are skipped and listed in the card).")
    encoding: str = Field(default="utf-8", description="Text encoding of the files (e.g. cp1252 for old exports).")
    skip_invalid: bool = Field(default=False, description="Import the valid rows and list the invalid ones in the "
                                                          "card, instead of importing nothing.")
    max_errors: int = Field(default=20, ge=1, description="How many bad rows an error message shows.")
    max_line_bytes: int = Field(default=8 * 2**20, ge=1024, description="Longest accepted line in bytes.")
    pii: Literal["redact", "drop", "report"] = Field(default="redact", description="Personal data: replace it by "
                                                     "placeholders, drop the rows, or only count it.")
    pii_region: str = Field(default="DE", description="Country whose national phone formats are recognised.")
    dedup: bool = Field(default=True, description="Remove exact and near duplicates.")
    near_duplicate_threshold: float = Field(default=0.9, gt=0.0, le=1.0, description="Jaccard similarity "
                                                                                      "from which rows count as near duplicates.")
    test_fraction: float = Field(default=0.1, ge=0.0, lt=1.0, description="Share of rows held out for testing "
                                                                          "(ignored with test_path). Documents are "
                                                                          "held out whole, or by whole top-level "
                                                                          "section, never by single chunks.")
    seed: int = Field(default=0, description="Seed of the train/test split.")
    model: str | None = Field(default=None, description="Registered model whose tokenizer counts tokens and "
                                                        "chunks text (default: count characters).")
    chunk_size: int | None = Field(default=None, ge=16, description="Chunk size for text/PDF: tokens with a "
                                                                    "model (default 512), else characters (default 2000).")
    contamination_ngram: int = Field(default=13, ge=2, description="Word n-gram length of the contamination check.")
    collected: str | None = Field(default=None, description="When the data was collected (default: the import date).")
    description: str | None = Field(default=None, description="What the data is, for the dataset card.")

    @model_validator(mode="after")
    def _one_policy(self) -> DatasetSpec:
        if (self.policy is None) == (self.policy_preset is None):
            raise ValueError("give exactly one of policy (an ODRL file) or policy_preset (e.g. internal-only): "
                             "every dataset carries a usage policy")
        return self

    def paths(self) -> list[str]:
        return [self.path] if isinstance(self.path, str) else list(self.path)

    def test_paths(self) -> list[str]:
        return [] if self.test_path is None else [self.test_path] if isinstance(self.test_path, str) else list(self.test_path)


class ImportOptions(DatasetSpec):
    """A dataset import: a spec plus the name it is recorded under."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$",
                      description="Dataset name (letters, digits, '.', '_', '-').")
