"""`harness advise`: which deployment to buy and run, under the user's constraints.

A deployment is a (profile, variant with its kernel, backend, batch size, GPU count). Measured records win
over projections; every row says which it is and where its figures came from.

constraints.py  constraints, SLO presets, checks      measured.py  records -> deployments, quality lookup
projected.py    planner -> deployments (intervals)    prices.py    the user's prices file
rank.py         judge, rank, binding constraint       output.py    Markdown / JSON / HTML section
build.py        the question -> the Advice
"""
from harness.advise.constraints import SLO_PRESETS, AdviseError, Constraints, build
from harness.advise.deployment import Deployment

__all__ = ["SLO_PRESETS", "AdviseError", "Constraints", "Deployment", "build"]
