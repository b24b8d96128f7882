"""Usage policies (ODRL 2.2) and their enforcement along lineage. Core layer: no torch.

    from kifabrik.policy import require, PolicyDenied, restrictions
    require(ws, [model_id], "serving", actor="api-key:...")   # raises PolicyDenied
"""

from kifabrik.policy.enforce import (
    PURPOSES,
    Check,
    PolicyDenied,
    ancestors,
    check,
    require,
    restrictions,
)
from kifabrik.policy.evaluate import Decision, Request, decide, expired
from kifabrik.policy.odrl import (
    Policy,
    PolicyError,
    Rule,
    load_policy_file,
    parse_policy,
)
from kifabrik.policy.presets import preset, preset_names, preset_usage
from kifabrik.policy.words import policy_words, rule_words

__all__ = [
    "PURPOSES", "Check", "Decision", "Policy", "PolicyDenied", "PolicyError", "Request", "Rule", "ancestors", "check",
    "decide", "expired", "load_policy_file", "parse_policy", "policy_words", "preset", "preset_names", "preset_usage",
    "require", "restrictions", "rule_words",
]
