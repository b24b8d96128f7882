"""kifabrik: an AI factory in a box.

Importing this package is cheap: no torch, no transformers. The heavy layers
(`kifabrik.models.loading`, the stages) import them when they are used.
"""

__version__ = "0.1.0"

from kifabrik.errors import KifabrikError

__all__ = ["KifabrikError", "__version__"]
