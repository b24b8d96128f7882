"""Freigabe: gated releases. A release asks the usage policies of every dataset in the model's
lineage and checks quality gates on recorded evaluations, then bundles weights, documents,
lineage and a sha256 manifest into a `release` artifact (`kifabrik verify` checks it).

No torch import here.
"""

from kifabrik.release.api import ReleaseOptions, ReleaseRefused, release
from kifabrik.release.gates import Bound, Gate, GateResult, check_gates, load_gates

__all__ = ["Bound", "Gate", "GateResult", "ReleaseOptions", "ReleaseRefused", "check_gates", "load_gates", "release"]
