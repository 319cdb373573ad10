"""`harness coordcheck EXP.toml`: the coordinate check of an experiment's parametrization.

As the muP authors define it (Yang et al. 2022, "Tensor Programs V", sec. 5; Dey et al. 2025
fig. 7 for depth): models of the experiment's family at widths 32..1024 (and, for CompleteP,
depths 2..16) train a few steps with the experiment's optimizer at its learning rate, held
constant, on its own corpus; at every step the mean absolute entry of each layer type's output
is recorded (`harness.analysis.coordcheck.LAYERS`). The same is done under the standard
parametrization for contrast. Under muP the curves stay flat in width; under the standard one
the logits grow about as the width.

Written to RESULTS/NAME/coordcheck/: coordcheck.csv (the table), coordcheck_width.png/svg (and
coordcheck_depth for CompleteP), and the slopes printed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

from harness.analysis.coordcheck import COLUMNS, DEFAULT_DEPTHS, DEFAULT_WIDTHS, plot, slopes
from harness.atomic import atomic_write_text
from harness.config import ExperimentConfig, load_experiment
from harness.data import Corpus, prepare_corpus
from harness.errors import InputError
from harness.grid import RunSpec, explicit_shape
from harness.parametrization import STANDARD, blocks, embedding_output, residual_branches
from harness.results import ExperimentLayout
from harness.train.batches import load_data
from harness.train.learner import build_learner

__all__ = ["coordcheck", "measure"]


def _mean_abs(output: object) -> float:
    t = output[0] if isinstance(output, tuple) else output
    return float(t.detach().abs().float().mean())


def measure(
    spec: RunSpec, corpus: Corpus, exp: ExperimentConfig, steps: int
) -> list[tuple[int, str, float]]:
    """(step, layer, mean |activation|) of the training forward at steps 0..steps-1 of one
    model: AdamW with the parametrization's groups at the constant rate train.lr."""
    device = torch.device("cpu")
    learner = build_learner(spec, exp.execution, device)
    batches, _ = load_data(spec, corpus, device)
    model = learner.model
    seen: dict[str, list[float]] = {}

    def record(layer: str):
        def hook(_module, _inputs, output):
            seen.setdefault(layer, []).append(_mean_abs(output))

        return hook

    # Registered after the parametrization's own hooks, so they see its multipliers applied.
    embedding_output(model, spec.model.arch).register_forward_hook(record("embedding"))
    model.get_output_embeddings().register_forward_hook(record("logits"))
    for attention, mlp in residual_branches(model, spec.model.arch):
        attention.register_forward_hook(record("attention"))
        mlp.register_forward_hook(record("mlp"))
    for block in blocks(model):
        block.register_forward_hook(record("block"))
    out = []
    for step in range(steps):
        seen.clear()
        learner.set_lr(spec.train.lr)
        ((x, y, _),), _ = batches.at(step)
        logits = learner.forward(input_ids=x).logits
        F.cross_entropy(logits.float().flatten(0, 1), y.flatten()).backward()
        learner.step(spec.train.grad_clip)
        out += [(step, layer, sum(v) / len(v)) for layer, v in seen.items()]
    return out


def coordcheck(
    experiment: str,
    overrides: Sequence[str] = (),
    *,
    widths: Sequence[int] = DEFAULT_WIDTHS,
    depths: Sequence[int] = DEFAULT_DEPTHS,
    steps: int = 10,
    seeds: Sequence[int] = (0,),
) -> tuple[Path, pd.DataFrame]:
    """Measure, write coordcheck.csv and the figures; returns the folder and the slopes.

    Widths at the base depth (CompleteP) or 2 layers; depths (CompleteP only) at the base
    width. Each parametrization keeps the experiment's base shape; the standard one is run
    beside it.

    Raises
    ------
    InputError
        Fewer than 2 widths (or depths), a width or depth the parametrization cannot scale to,
        or fewer than 2 steps.
    """
    exp = load_experiment(experiment, list(overrides))
    p = exp.model.parametrization_settings()
    if len(set(widths)) < 2 or (p.kind == "completep" and len(set(depths)) < 2):
        raise InputError("--widths and --depths: accepted: at least 2 different sizes each")
    if steps < 2:
        raise InputError(f"--steps = {steps}: accepted: at least 2 (step 0 is the init)")
    # Against width: the standard parametrization beside the experiment's. Against depth
    # (CompleteP): muP, which leaves depth alone, beside it (Dey et al. 2025 fig. 7).
    completep = p.kind == "completep"
    plans = [("width", explicit_shape(exp, p.base_depth or 2, w, "--widths")) for w in widths]
    beside = {"width": STANDARD}
    if completep:
        plans += [("depth", explicit_shape(exp, d, p.base_width, "--depths")) for d in depths]
        beside["depth"] = dataclasses.replace(p, kind="mup", base_depth=0)
    for _, shape in plans:
        p.check_shape(shape, f"coordcheck shape {shape.n_layer} x {shape.n_embd}")
    layout = ExperimentLayout(exp.results_path)
    corpus = prepare_corpus(exp.data, layout.cache_dir)
    torch.set_num_threads(exp.execution.threads or torch.get_num_threads())
    train = dataclasses.replace(exp.train, lr_width_exponent=0.0, size_rule="")
    n_tokens = steps * train.batch_size * exp.data.seq_len
    rows = []
    for axis, shape in plans:
        for kind in dict.fromkeys([beside[axis], p]):
            for seed in seeds:
                spec = RunSpec(
                    experiment=exp.name,
                    model=shape,
                    data=exp.data,
                    train=train,
                    n_tokens=n_tokens,
                    seed=seed,
                    parametrization=kind,
                )
                for step, layer, value in measure(spec, corpus, exp, steps):
                    rows.append(
                        (kind.kind, axis, shape.n_embd, shape.n_layer, seed, step, layer, value)
                    )
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    out = layout.root / "coordcheck"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "coordcheck.csv", table.to_csv(index=False, float_format="%.6g"))
    plot(table, out / "coordcheck_width")
    found = slopes(table, "width").assign(axis="width")
    if completep:
        plot(table, out / "coordcheck_depth", axis="depth")
        found = pd.concat([found, slopes(table, "depth").assign(axis="depth")])
    return out, found
