"""Session-wide fixtures: local stand-ins for the online model sources (see tests/hub_standins.py)."""

from __future__ import annotations

import pytest

import hub_standins as hs


@pytest.fixture(scope="session")
def hub_small(tmp_path_factory) -> dict:
    """TORCH_HOME/HF_HOME with DINOv2 ViT-S/14-reg, a 1-layer StreetCLIP and PLONK_* (dim 64) stand-ins."""
    if not hs.DINOV2_CODE.is_dir():
        pytest.skip(f"the DINOv2 hub code is not at {hs.DINOV2_CODE}")
    pytest.importorskip("transformers")
    return hs.build_all(tmp_path_factory.mktemp("hub_small"))


@pytest.fixture(scope="session")
def hub_full(tmp_path_factory) -> dict:
    """The real shapes: DINOv2 ViT-L/14-reg (≈1.2 GB), published StreetCLIP config, PLONK dim 512/depth 12."""
    if not hs.DINOV2_CODE.is_dir():
        pytest.skip(f"the DINOv2 hub code is not at {hs.DINOV2_CODE}")
    pytest.importorskip("transformers")
    return hs.build_all(tmp_path_factory.mktemp("hub_full"), vitl=True, full_streetclip=True, full_plonk=True)
