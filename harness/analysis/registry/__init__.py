"""The registry of laws: one module per block of fits.json.

| module | block(s) | law |
|---|---|---|
| `chinchilla` | chinchilla | approach 3, L = E + A/N^alpha + B/D^beta (Hoffmann et al. 2022) |
| `compute_optimal` | compute_optimal | N_opt, D_opt from approach 3 (Hoffmann et al. 2022, eq. 4) |
| `kaplan` | kaplan | L(N, D) of Kaplan et al. (2020), eq. 1.5 |
| `overtraining` | overtraining | E + (a M^eta + b M^-eta) C^-eta (Gadre et al. 2024, eq. 4) |
| `power_law` | power_law_n, power_law_d, power_law_c | L(x) = E + A x^-alpha (Kaplan et al. 2020) |
| `approach1` | approach1 | the lowest-loss size per isoFLOP budget (Hoffmann et al. 2022, 3.1) |
| `isoflop` | isoflop | isoFLOP profiles, approach 2 (Hoffmann et al. 2022, 3.2) |
| `bracketing` | isoflop_bracketing | budgets whose profile does not bracket its minimum |
| `heldout` | heldout | approach 3 fitted on the cheaper runs, scored on the rest |
| `sweeps` | lr_sweep, batch_sweep | optimal lr and batch against N and C (DeepSeek-AI 2024) |
| `data_constrained` | data_constrained | repeated data (Muennighoff et al. 2023) |
| `chinchilla_from_curves` | chinchilla_from_curves | approach 3 on the curve laws' implied losses |
| `anneal_curve` | anneal_curve | learning curves per size, L0 + A S1^-alpha - C S2 (Tissue 2024) |
| `multi_power_curve` | multi_power_curve | the same curves, L0 + A S1^-alpha - LD(t) (Luo 2025) |

Companions, fitted on a table beside the runs CSV and chained on the laws above (a sibling
object of "fits"):

| module | object | table | analysis |
|---|---|---|---|
| `downstream` | downstream | downstream.csv | fine-tuned accuracy from loss, N, D; labels needed |
| `tasks` | tasks | tasks.csv | each task's accuracy from N and D (Gadre et al. 2024) |

Adding a law: a module here defining a `base.Law` (how it fits, when it applies, its summary
lines and its figures), and its entry in `LAWS`; a companion: a `base.Companion` in
`COMPANIONS`.
"""

from harness.analysis.registry import (
    anneal_curve,
    approach1,
    bracketing,
    chinchilla,
    chinchilla_from_curves,
    compute_optimal,
    data_constrained,
    downstream,
    heldout,
    isoflop,
    kaplan,
    multi_power_curve,
    overtraining,
    power_law,
    sweeps,
    tasks,
)
from harness.analysis.registry.base import (
    Beside,
    BesideFigures,
    Companion,
    Figures,
    Frame,
    Law,
)

__all__ = [
    "COMPANIONS",
    "LAWS",
    "Beside",
    "BesideFigures",
    "Companion",
    "Figures",
    "Frame",
    "Law",
    "by_name",
]

LAWS: tuple[Law, ...] = (
    chinchilla.LAW,
    compute_optimal.LAW,  # after chinchilla: built on its fit
    kaplan.LAW,
    overtraining.LAW,
    power_law.LAW_N,
    power_law.LAW_D,
    power_law.LAW_C,
    approach1.LAW,
    isoflop.LAW,
    bracketing.LAW,  # after isoflop: proposes sizes from its N_opt(C)
    heldout.LAW,
    sweeps.LR,
    sweeps.BATCH,
    data_constrained.LAW,
    anneal_curve.LAW,
    chinchilla_from_curves.LAW,  # after anneal_curve: built on its laws and samples
    multi_power_curve.LAW,
)
"""Every law, in the order they are fitted and summarised."""


COMPANIONS: tuple[Companion, ...] = (downstream.COMPANION, tasks.COMPANION)
"""Every companion, in the order they are fitted and summarised (after the laws)."""


def by_name() -> dict[str, Law]:
    return {law.name: law for law in LAWS}
