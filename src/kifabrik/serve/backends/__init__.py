"""Serving backends behind one interface (`base.Backend`): transformers, vLLM."""
