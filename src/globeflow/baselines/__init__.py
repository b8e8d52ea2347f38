"""Baselines for probabilistic geolocation on embeddings, all with one interface (see ``base.Baseline``).

``regression`` (point only), ``cells`` (geocell classifier), ``retrieval`` (kNN + vMF mixture),
``vmf`` (one conditional vMF) and ``vmf_mixture`` (vMF mixture with conditional weights).
"""

from __future__ import annotations

from globeflow.baselines.base import Baseline
from globeflow.baselines.cells import CellsBaseline
from globeflow.baselines.regression import RegressionBaseline
from globeflow.baselines.retrieval import RetrievalBaseline
from globeflow.baselines.vmf_models import VMFBaseline, VMFMixtureBaseline

BASELINES: dict[str, type] = {
    cls.id: cls for cls in (RegressionBaseline, CellsBaseline, RetrievalBaseline, VMFBaseline, VMFMixtureBaseline)
}


def make_baseline(name: str, **kwargs) -> Baseline:
    """A new, unfitted baseline by id; unknown ids raise a ValueError listing the known ones."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; choose one of {sorted(BASELINES)}")
    return BASELINES[name](**kwargs)


__all__ = ["BASELINES", "Baseline", "CellsBaseline", "RegressionBaseline", "RetrievalBaseline",
           "VMFBaseline", "VMFMixtureBaseline", "make_baseline"]
