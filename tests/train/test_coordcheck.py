"""`harness coordcheck`: muP's coordinate check (Yang et al. 2022, sec. 5) measured on real
training steps, and the slopes read from its table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _tiny import harness_cli, tiny_toml

from harness.analysis.coordcheck import COLUMNS, slopes
from harness.coordcheck import coordcheck


def test_slopes_recover_known_power_laws() -> None:
    rows = []
    for width in (32, 64, 128, 256):
        for seed in (0, 1):
            for layer, power in (("logits", 1.0), ("block", 0.0), ("mlp", -0.5)):
                value = 0.3 * width**power * (1.01 if seed else 0.99)
                rows.append(("mup", "width", width, 2, seed, 4, layer, value))
    found = slopes(pd.DataFrame(rows, columns=list(COLUMNS))).set_index("layer")["slope"]
    assert found.to_dict() == pytest.approx({"logits": 1.0, "block": 0.0, "mlp": -0.5}, abs=1e-9)


@pytest.mark.slow
def test_activations_stay_flat_in_width_under_mup_and_grow_under_standard(tmp_path: Path) -> None:
    extra = '[model]\nparametrization = "mup"\nbase_width = 32'
    toml = tiny_toml(tmp_path, extra=extra)
    out, found = coordcheck(str(toml), widths=(32, 64, 128, 256), steps=4, seeds=(0, 1))
    last = found[found["step"] == 3].set_index(["parametrization", "layer"])["slope"]
    # Under muP every layer type's size is flat in width after 3 Adam steps ...
    assert np.abs(last["mup"]).max() < 0.15, last["mup"].to_dict()
    # ... under the standard parametrization the logits and the residual stream grow with it.
    assert last["standard", "logits"] > 0.4 and last["standard", "block"] > 0.4
    table = pd.read_csv(out / "coordcheck.csv")
    assert list(table.columns) == list(COLUMNS) and len(table) == 2 * 4 * 2 * 4 * 5
    assert (out / "coordcheck_width.png").exists() and not (out / "coordcheck_depth.png").exists()


@pytest.mark.slow
def test_completep_keeps_the_residual_stream_flat_in_depth(tmp_path: Path) -> None:
    extra = '[model]\nparametrization = "completep"\nbase_width = 32\nbase_depth = 2'
    toml = tiny_toml(tmp_path, extra=extra)
    out, found = coordcheck(str(toml), widths=(32, 64), depths=(2, 4, 8, 16), steps=4)
    depth = found[(found["axis"] == "depth") & (found["step"] == 3)]
    block = depth[depth["layer"] == "block"].set_index("parametrization")["slope"]
    # muP leaves depth alone: the residual stream grows with depth; CompleteP's 1/L branches
    # keep it flat (Dey et al. 2025 fig. 7).
    assert block["mup"] > 0.3 and abs(block["completep"]) < 0.2, block.to_dict()
    assert (out / "coordcheck_depth.png").exists()


@pytest.mark.slow
def test_coordcheck_refuses_a_width_the_base_cannot_scale_to(tmp_path: Path) -> None:
    extra = '[model]\nparametrization = "mup"\nbase_width = 32'
    proc = harness_cli("coordcheck", str(tiny_toml(tmp_path, extra=extra)), "--widths", "32,48")
    assert proc.returncode == 2 and proc.stdout == ""
    (line,) = proc.stderr.strip().splitlines()
    assert "n_embd = 48 against model.base_width = 32" in line


@pytest.mark.slow
def test_a_standard_experiment_is_checked_alone(tmp_path: Path) -> None:
    out, found = coordcheck(str(tiny_toml(tmp_path)), widths=(32, 64), steps=2)
    assert set(found["parametrization"]) == {"standard"} and set(found["axis"]) == {"width"}
    assert (out / "coordcheck_width.png").exists()
