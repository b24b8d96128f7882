"""The model runtime on llama.cpp (`load(..., backend="llama.cpp")`) against the transformers one, on the embedded SmolLM2.

On an f32 GGUF of the same weights the two backends must give the same greedy answers, the same
evaluation scores and, under a grammar, the same JSON; the documents name the GGUF type of a model
registered from a quantised GGUF.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (make llama-cpp)")

from kifabrik.models.runtime import GenerationOptions

PROMPTS: list[Any] = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "Answer in one sentence."}, {"role": "user", "content": "Why is the sky blue?"}],
    "The machine needs an oil change every",  # a raw completion, no chat template
]
GREEDY = GenerationOptions(max_new_tokens=12)


@pytest.fixture(scope="module")
def both(embedded: Any) -> Any:
    """(transformers model, llama.cpp model on an f32 conversion of the same weights, workspace, record)."""
    from kifabrik.models.runtime import load, resolve

    ws, record, _, home = embedded
    runnable = resolve(ws, record)
    return load(runnable), load(runnable, backend="llama.cpp", gguf_type="f32", home=Path(home)), ws, record


@pytest.fixture(scope="module")
def greedy(both: Any) -> Any:
    """(transformers' greedy answers to PROMPTS, llama.cpp's: all three side by side in one context)."""
    ref, llama, _, _ = both
    return ref.generate(PROMPTS, GREEDY, batch_size=1), llama.generate(PROMPTS, GREEDY)


def test_greedy_answers_equal_the_transformers_runtime(both: Any, greedy: Any) -> None:
    ref, llama, _, _ = both
    assert [llama.prompt_ids(p) for p in PROMPTS] == [ref.prompt_ids(p) for p in PROMPTS]  # one prompt path
    assert llama.eos_ids == ref.eos_ids
    want, got = greedy
    assert got == want  # text, prompt and completion tokens, finish reason
    assert want[0].text == "The capital of France is Paris." and want[0].finish_reason == "stop"
    assert want[2].finish_reason == "length" and want[2].completion_tokens == 12
    assert llama.describe() | {"gguf_reason": None} == {
        "backend": "llama.cpp", "gguf": llama.gguf.name, "gguf_type": "f32", "quantization": "f32",
        "gguf_reason": None, "adapter": None}


def test_a_stop_string_ends_the_answer_where_transformers_cuts_it(both: Any, greedy: Any) -> None:
    _, llama, _, _ = both
    full = greedy[0][1]
    stop = full.text.split()[3]
    [got] = llama.generate(PROMPTS[1:2], GenerationOptions(max_new_tokens=12, stop=(stop,)))
    # transformers decodes on to the end and cuts the text there; llama.cpp stops decoding at the stop string
    assert (got.text, got.finish_reason) == (full.text[:full.text.index(stop)].strip(), "stop")
    assert got.completion_tokens < full.completion_tokens == 12


def test_seeded_sampling_repeats_itself(both: Any) -> None:
    _, llama, _, _ = both
    opts = GenerationOptions(max_new_tokens=6, temperature=0.9, top_p=0.9, seed=7)
    first = llama.generate(PROMPTS[1:2], opts)
    assert llama.generate(PROMPTS[1:2], opts) == first
    assert llama.generate(PROMPTS[1:2], GenerationOptions(max_new_tokens=6, temperature=0.9, top_p=0.9, seed=8)) != first


def test_constrained_json_follows_the_schema(both: Any) -> None:
    from jsonschema import validate

    from kifabrik.models.structured import Constraint

    _, llama, _, _ = both
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 24},
                                               "country": {"type": "string", "maxLength": 24}},
              "required": ["city", "country"]}
    prompt = [[{"role": "user", "content": "Name the capital of France and its country as JSON."}]]
    opts = GenerationOptions(max_new_tokens=32)
    [got] = llama.generate(prompt, opts, constraint=Constraint.json_schema(schema))
    value = json.loads(got.text)
    validate(value, schema)
    assert got.finish_reason == "stop"  # the grammar ended the answer, not the token limit
    [free] = llama.generate(prompt, opts)
    assert free.text != got.text  # unconstrained, the model writes prose


def test_evaluation_through_llama_cpp_scores_like_transformers_and_records_the_backend(both: Any, tmp_path: Path) -> None:
    from kifabrik.evaluate import EvalOptions, evaluate

    _, _, ws, record = both
    (tmp_path / "gen.jsonl").write_text(
        '{"id": "g1", "question": "What is the capital of France?", "answer": "The capital of France is Paris."}\n'
        '{"id": "g2", "question": "What is the capital of Germany?", "answer": "Berlin"}\n', encoding="utf-8")
    (tmp_path / "gen.yaml").write_text("name: hauptstadt\ntype: generation\nitems: gen.jsonl\nmax_new_tokens: 10\n"
                                       "metrics: [exact_match, contains]\n", encoding="utf-8")
    tasks = [str(tmp_path / "gen.yaml"), "kifabrik:evaluate/data/tasks/werkstatt.yaml"]
    ran = {b: evaluate(ws, record.ref, EvalOptions(tasks=tasks, limit=2, backend=b, gguf_type="f32"), name=f"eval-{b}")
           for b in ("transformers", "llama.cpp")}
    ref, llama = ran["transformers"].results, ran["llama.cpp"].results
    assert llama["metrics"] == pytest.approx(ref["metrics"], abs=1e-9)
    assert ref["metrics"]["task.hauptstadt.exact_match"] == 0.5  # Paris word for word, Germany's answer longer
    assert (llama["model"]["runtime"]["backend"], llama["model"]["runtime"]["quantization"]) == ("llama.cpp", "f32")
    assert ref["model"]["runtime"]["backend"] == "transformers"
    assert ran["llama.cpp"].record.meta["runtime"]["gguf_type"] == "f32"  # type: ignore[union-attr]
    # multiple choice: llama.cpp's log-likelihoods of every choice equal transformers' in float32
    logliks = {b: [json.loads(line)["logliks"] for line in (ws.path(o.record) / o.results["samples_files"][
        "tasks/werkstatt"]).read_text().splitlines()] for b, o in ran.items()}
    for want, got in zip(logliks["transformers"], logliks["llama.cpp"], strict=True):
        assert got == pytest.approx(want, rel=1e-3, abs=1e-3)
    # the model card says what ran each evaluation
    from kifabrik.config import Organisation
    from kifabrik.document import DocumentOptions, gather, render_all

    card = render_all(gather(ws, record.ref, DocumentOptions(), Organisation(), "test"))["README.md"]
    gguf = llama["model"]["runtime"]["gguf"]
    assert "### eval-llama.cpp@1" in card and f"Run with llama.cpp, GGUF {gguf} (f32) [" in card
    assert "Run with transformers (cpu, float32) [" in card


def test_generate_command_runs_on_llama_cpp(cli: Any, both: Any, greedy: Any, embedded: Any,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    _, _, _, record = both
    monkeypatch.setenv("KIFABRIK_HOME", str(embedded[3]))
    res = cli("generate", record.name, "What is the capital of France?", "--max-new-tokens", "12",
              "--backend", "llama.cpp", "--gguf-type", "f32")
    assert res.code == 0, res.err
    assert res.out.strip() == greedy[0][0].text  # transformers' answer
    bad = cli("generate", record.name, "Hallo", "--backend", "onnx")
    assert bad.code == 1 and "--backend: Input should be 'transformers' or 'llama.cpp'" in bad.err


def test_documents_name_the_gguf_type_of_the_embedded_model(both: Any) -> None:
    from kifabrik.config import Organisation
    from kifabrik.document import DocumentOptions, gather, render_all

    _, _, ws, record = both
    docs = render_all(gather(ws, record.ref, DocumentOptions(), Organisation(), "test"))
    line = "registered from a GGUF file of type q4_1 [1] (quantised)"  # SmolLM2-135M-Instruct.Q4_1.gguf
    assert line in next(x for x in docs["README.md"].splitlines() if x.startswith("| GGUF weights |"))
    assert line in next(x for x in docs["annex-xi.md"].splitlines() if x.startswith("| GGUF weights and quantisation |"))
    assert "GGUF weights: " + line in docs["annex-xii.md"]


def test_stacked_adapters_are_refused_before_anything_loads(embedded: Any, tmp_path: Path) -> None:
    """llama.cpp applies adapters per context: a runnable with two adapters is refused, not run with the first."""
    import dataclasses

    from kifabrik.errors import KifabrikError
    from kifabrik.models.llamacpp import LlamaModel
    from kifabrik.models.runtime import resolve

    ws, record, _, _ = embedded
    two = dataclasses.replace(resolve(ws, record), adapters=(("a", tmp_path / "a"), ("b", tmp_path / "b")))
    with pytest.raises(KifabrikError, match="one adapter per loaded model") as err:
        LlamaModel(two, home=tmp_path)
    assert "kifabrik merge" in (err.value.hint or "")
