"""KI-Hub: the web UI (`kifabrik ui`)."""
