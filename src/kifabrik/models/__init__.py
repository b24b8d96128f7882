"""The models layer: sources, loading, tokenizers and chat templates.

Registration (`kifabrik.models.sources`) reads configs and safetensors headers and needs
no torch for local folders; `kifabrik.models.loading` imports transformers when called.
"""
