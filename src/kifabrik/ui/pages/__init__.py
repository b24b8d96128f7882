"""The pages of the web UI: every module here with a `router` is part of the app (ui/app.py)."""
