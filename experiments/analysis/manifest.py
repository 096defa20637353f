"""What the analysis reads from a run's manifest besides the raw data: the analysis and guard
parameters the run was recorded with, and figures it may hold as None or NaN. The reports use
the same (experiments.reporting hands them on).
"""

from __future__ import annotations

import math
from typing import Any

from experiments.config import Table
from experiments.protocol import AnalysisParams, BreakingPointParams, GuardParams


def number(x: Any) -> float | None:
    """``x`` as a float; None for None and NaN (a figure a run could not measure)."""
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def _known(cls: type[Table], d: dict | None) -> dict:
    """The keys of d that the model cls knows (older or newer manifests still load)."""
    return {k: v for k, v in (d or {}).items() if k in cls.model_fields}


def analysis_params(manifest: dict) -> tuple[AnalysisParams, GuardParams]:
    """Analysis and guard parameters of the run, from the protocol in its manifest."""
    proto = manifest.get("protocol") or {}
    a = dict(proto.get("analysis") or {})
    bp = BreakingPointParams(**_known(BreakingPointParams, a.pop("breaking_point", {})))
    analysis = AnalysisParams(breaking_point=bp, **_known(AnalysisParams, a))
    return analysis, GuardParams(**_known(GuardParams, proto.get("guard")))
