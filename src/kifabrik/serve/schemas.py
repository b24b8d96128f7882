"""Request bodies of the OpenAI-compatible API (pydantic v2, unknown fields are errors).

The fields follow the OpenAI API reference for `/v1/chat/completions` and `/v1/completions`.
Fields that clients send but kifabrik does not implement (`n > 1`, `logprobs`, penalties)
are accepted at their neutral value and refused otherwise, so a request never silently
means something else than it says.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from kifabrik.config import StrictModel

FN_NAME = r"^[A-Za-z0-9_-]{1,64}$"
INT64 = 2**63  # OpenAI's seed range is a signed 64-bit integer; torch takes all of it
MAX_TOKENS = 2**31 - 1  # far above any context; the context check names the real limit


def lone_surrogate(value: Any) -> str | None:
    """The first string inside `value` (keys too) that holds a lone UTF-16 surrogate, else None.

    JSON may spell `"\\ud800"`, which Python decodes to a string no UTF-8 encoder, tokenizer or
    database accepts; such text is refused at the door instead of failing deep inside.
    """
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value
        return None
    if isinstance(value, dict):
        items: list[Any] = [*value.keys(), *value.values()]
    elif isinstance(value, list):
        items = value
    else:
        return None
    return next((bad for item in items if (bad := lone_surrogate(item)) is not None), None)


def _text(value: str) -> str:
    if lone_surrogate(value) is not None:
        raise ValueError("text holds a lone UTF-16 surrogate (e.g. \\ud800), which is not valid Unicode text")
    return value


#: Every string of a request body: Unicode text, never a lone surrogate.
Text = Annotated[str, AfterValidator(_text)]


class TextPart(StrictModel):
    """One text part of a message's content (images and audio are not supported)."""

    type: Literal["text"] = Field(description="Only `text` parts are supported.")
    text: Text = Field(description="The text.")


class FunctionCall(StrictModel):
    """A call the assistant made: function name and JSON-encoded arguments."""

    name: Text = Field(description="Function name.")
    arguments: Text = Field(default="{}", description="Arguments as a JSON string.")


class ToolCall(StrictModel):
    """One tool call in an assistant message."""

    id: Text = Field(description="Call id, echoed by the tool message that answers it.")
    type: Literal["function"] = Field(default="function", description="Always `function`.")
    function: FunctionCall = Field(description="The call.")


class Message(StrictModel):
    """A chat message in the OpenAI format."""

    role: Literal["system", "developer", "user", "assistant", "tool"] = Field(description="Who speaks.")
    content: Text | list[TextPart] | None = Field(default=None, description="Text, or a list of text parts.")
    name: Text | None = Field(default=None, description="Optional participant name.")
    tool_calls: list[ToolCall] | None = Field(default=None, description="Calls made by an assistant message.")
    tool_call_id: Text | None = Field(default=None, description="For `tool` messages: the call answered.")
    refusal: Text | None = Field(default=None, description="Accepted and ignored (assistant refusals).")

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content)
        return self.content or ""


class FunctionDef(StrictModel):
    """A function the model may call; `parameters` is a JSON Schema object."""

    name: str = Field(pattern=FN_NAME, description="Function name: letters, digits, `_` and `-`, at most 64 characters.")
    description: Text | None = Field(default=None, description="What the function does.")
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}},
                                       description="JSON Schema of the arguments.")
    strict: bool | None = Field(default=None, description="Accepted; arguments are always constrained to `parameters` "
                                "while decoding (transformers backend), strict or not.")

    @field_validator("parameters")
    @classmethod
    def _schema(cls, v: dict[str, Any]) -> dict[str, Any]:
        from jsonschema import SchemaError
        from jsonschema.validators import validator_for

        if lone_surrogate(v) is not None:
            raise ValueError("the schema holds a lone UTF-16 surrogate (e.g. \\ud800), which is not valid Unicode text")
        try:
            validator_for(v).check_schema(v)
        except SchemaError as exc:
            raise ValueError(f"not a valid JSON Schema: {exc.message}") from None
        if v.get("type", "object") != "object":
            raise ValueError("must be a JSON Schema of type 'object'")
        return v


class Tool(StrictModel):
    """A tool in the OpenAI format (only functions)."""

    type: Literal["function"] = Field(description="Always `function`.")
    function: FunctionDef = Field(description="The function.")


class NamedFunction(StrictModel):
    name: str = Field(pattern=FN_NAME, description="Name of the function the model must call (one of `tools`).")


class NamedToolChoice(StrictModel):
    type: Literal["function"] = Field(description="Always `function`.")
    function: NamedFunction = Field(description="The function to call.")


class JSONSchemaFormat(StrictModel):
    """The schema the answer must follow (OpenAI's `response_format.json_schema`)."""

    name: str = Field(pattern=FN_NAME, description="Name of the format: letters, digits, `_` and `-`, at most 64.")
    description: Text | None = Field(default=None, description="What the format is for.")
    schema_: dict[str, Any] = Field(default_factory=lambda: {"type": "object"}, alias="schema",
                                    description="JSON Schema of the answer; keywords that cannot be enforced while "
                                                "decoding are refused with 400 naming them.")
    strict: bool | None = Field(default=None, description="Accepted; the answer always follows the schema.")


class ResponseFormatText(StrictModel):
    type: Literal["text"] = Field(description="Free text (the default).")


class ResponseFormatJSONObject(StrictModel):
    type: Literal["json_object"] = Field(description="Any JSON object.")


class ResponseFormatJSONSchema(StrictModel):
    type: Literal["json_schema"] = Field(description="A JSON value valid under `json_schema.schema`.")
    json_schema: JSONSchemaFormat = Field(description="The schema.")


ResponseFormat = Annotated[ResponseFormatText | ResponseFormatJSONObject | ResponseFormatJSONSchema,
                           Field(discriminator="type")]


class StreamOptions(StrictModel):
    include_usage: bool = Field(default=False, description="Send a last chunk with token usage.")


class _Sampling(StrictModel):
    """Fields shared by both endpoints."""

    model: Text = Field(min_length=1, max_length=256, description="A model name from GET /v1/models.")
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS,
                                   description="Most tokens to generate (default: server limit).")
    temperature: float = Field(default=1.0, ge=0.0, le=2.0, allow_inf_nan=False, description="0 = greedy decoding.")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, allow_inf_nan=False, description="Nucleus sampling mass.")
    stop: Annotated[Text, Field(min_length=1)] | Annotated[list[Annotated[Text, Field(min_length=1)]], Field(
        max_length=4)] | None = Field(default=None, description="Up to 4 non-empty sequences that end the output.")
    seed: int | None = Field(default=None, ge=-INT64, le=INT64 - 1,
                             description="Seed for reproducible sampling (a signed 64-bit integer).")
    stream: bool = Field(default=False, description="Stream server-sent events.")
    stream_options: StreamOptions | None = Field(default=None, description="Streaming options.")
    n: Annotated[int, WithJsonSchema({"type": "integer", "minimum": 1, "maximum": 1})] = Field(
        default=1, description="Number of choices; only 1 is supported.")
    user: Text | None = Field(default=None, max_length=256, description="End-user id (recorded in the audit log).")
    frequency_penalty: Annotated[float, WithJsonSchema({"type": "number", "minimum": 0, "maximum": 0})] = Field(
        default=0.0, description="Only 0 is supported.")
    presence_penalty: Annotated[float, WithJsonSchema({"type": "number", "minimum": 0, "maximum": 0})] = Field(
        default=0.0, description="Only 0 is supported.")
    logprobs: Annotated[bool | int | None, WithJsonSchema({"anyOf": [{"enum": [False, 0]}, {"type": "null"}]})] = Field(
        default=None, description="Not supported; must be unset, false or 0.")

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_count(cls, v: Any) -> Any:
        if isinstance(v, list) and len(v) > 4:
            raise ValueError("at most 4 stop sequences")
        if v == "" or (isinstance(v, list) and "" in v):
            raise ValueError("stop sequences must not be empty")
        return v

    @field_validator("stop")
    @classmethod
    def _stop(cls, v: str | list[str] | None) -> list[str] | None:
        items = [v] if isinstance(v, str) else list(v or [])
        return items or None

    @field_validator("n")
    @classmethod
    def _n(cls, v: int) -> int:
        if v != 1:
            raise ValueError("only n=1 is supported (send several requests; they are batched)")
        return v

    @field_validator("frequency_penalty", "presence_penalty")
    @classmethod
    def _penalty(cls, v: float) -> float:
        if v != 0:
            raise ValueError("only 0 is supported by this server")
        return v

    @field_validator("logprobs")
    @classmethod
    def _logprobs(cls, v: bool | int | None) -> None:
        if v:
            raise ValueError("logprobs are not supported by this server")

    def stop_list(self) -> list[str]:
        return list(self.stop or [])


class ChatRequest(_Sampling):
    """Body of POST /v1/chat/completions."""

    # what `_check` refuses, as far as JSON Schema can say it: a call is required only with tools to call
    model_config = ConfigDict(json_schema_extra={"allOf": [{
        "if": {"properties": {"tool_choice": {"enum": ["required"]}}, "required": ["tool_choice"]},
        "then": {"properties": {"tools": {"type": "array", "minItems": 1}}, "required": ["tools"]}}]})

    messages: list[Message] = Field(min_length=1, description="The conversation so far.")
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS,
                                              description="Alias of max_tokens (newer clients).")
    tools: list[Tool] | None = Field(default=None, max_length=128, description="Functions the model may call.")
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = Field(
        default=None, description="none, auto (default with tools), required, or a named function.")
    parallel_tool_calls: bool | None = Field(default=None, description="Allow several calls in one turn.")
    response_format: ResponseFormat | None = Field(
        default=None, description="text, json_object, or json_schema: the answer is decoded under that constraint.")
    top_logprobs: Annotated[int | None, WithJsonSchema({"anyOf": [{"enum": [0]}, {"type": "null"}]})] = Field(
        default=None, description="Not supported; must be unset or 0.")

    @model_validator(mode="after")
    def _check(self) -> ChatRequest:
        if self.max_completion_tokens is not None and self.max_tokens is None:
            self.max_tokens = self.max_completion_tokens
        if self.top_logprobs:
            raise ValueError("top_logprobs is not supported by this server")
        if isinstance(self.tool_choice, NamedToolChoice):
            names = {t.function.name for t in self.tools or []}
            if self.tool_choice.function.name not in names:
                raise ValueError(f"tool_choice names {self.tool_choice.function.name!r}, which is not in tools")
        elif self.tool_choice == "required" and not self.tools:
            raise ValueError("tool_choice 'required' needs tools")
        return self


class CompletionRequest(_Sampling):
    """Body of POST /v1/completions (plain text continuation, no chat template)."""

    prompt: Annotated[Text, Field(min_length=1)] | Annotated[list[Annotated[Text, Field(min_length=1)]], Field(
        min_length=1, max_length=1)] = Field(description="The prompt, not empty (a list must hold exactly one string).")
    echo: bool = Field(default=False, description="Prepend the prompt to the output.")
    suffix: Annotated[str | None, WithJsonSchema({"anyOf": [{"type": "string", "maxLength": 0}, {"type": "null"}]})] = (
        Field(default=None, description="Not supported; must be unset or empty."))
    best_of: int | None = Field(default=None, ge=1, le=1, description="Only 1 is supported.")

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt_count(cls, v: Any) -> Any:
        if isinstance(v, list) and len(v) != 1:
            raise ValueError("a list prompt must hold exactly one string (batch prompts are not supported)")
        if v == "" or v == [""]:
            raise ValueError("the prompt is empty")
        return v

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, v: str | list[str]) -> str:
        return v[0] if isinstance(v, list) else v

    @field_validator("suffix")
    @classmethod
    def _suffix(cls, v: str | None) -> None:
        if v:
            raise ValueError("suffix (fill-in-the-middle) is not supported")
