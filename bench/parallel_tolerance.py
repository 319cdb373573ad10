"""How far a run on two processes is from the same run on one: the tolerance of
tests/train/test_distributed.py (issue 17).

It trains the tests' tiny run (tests/_tiny.py, 32 updates of 8 sequences) on one process, then
on two (DDP, FSDP, DDP with micro-batches of 3) and on one with micro-batches of 3, and prints
the largest relative difference of any logged training loss and of the validation loss from
the 1-process run's. For scale it also trains the run with one sequence less per update
(batch 7): what a real difference in the updates does.

    OMP_NUM_THREADS=1 python bench/parallel_tolerance.py      # ~2 min on 2 cores
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _tiny import tiny_toml  # noqa: E402

from harness.config import load_experiment  # noqa: E402
from harness.execute.ranks import train_on_devices  # noqa: E402
from harness.grid import expand  # noqa: E402
from harness.train import train  # noqa: E402


def _losses(run_dir: Path) -> list[float]:
    return [float(r.split(",")[2]) for r in (run_dir / "metrics.csv").read_text().splitlines()[1:]]


def _worst(a: list[float], b: list[float]) -> float:
    """Over the steps both logged (one row per update here)."""
    return max(abs(x - y) / abs(x) for x, y in zip(a, b))  # noqa: B905


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="tolerance-") as tmp:
        root = Path(tmp)
        exp = load_experiment(tiny_toml(root, n_tokens="[8192]"))
        (spec,) = expand(exp)
        base = dataclasses.replace(exp.execution, device="cpu", threads=1)
        runs = root / "results" / "tiny" / "runs"
        ref = train(spec, runs / "one", execution=base)
        one = _losses(runs / "one")
        cases = [("DDP", 2, "ddp", 0), ("FSDP", 2, "fsdp", 0), ("DDP, micro 3", 2, "ddp", 3)]
        cases.append(("1 process, micro 3", 1, "ddp", 3))
        for name, k, parallel, micro in cases:
            ex = dataclasses.replace(
                base, devices_per_run=k, parallel=parallel, micro_batch_size=micro
            )
            launch = train if k == 1 else train_on_devices
            r = launch(spec, runs / name.replace(" ", "_"), execution=ex)
            print(
                f"{name:20s} train loss {_worst(one, _losses(runs / name.replace(' ', '_'))):.1e}"
                f"  val loss {abs(r.val_loss - ref.val_loss) / ref.val_loss:.1e}"
            )
        # bf16 against the fp32 run: autocast on one process, and FSDP2 on two with its mixed
        # precision (bf16 parameters, fp32 reductions) and with autocast.
        exp16 = load_experiment(tiny_toml(root, n_tokens="[8192]"), ["--train.precision=bf16"])
        (spec16,) = expand(exp16)
        bf16 = [("bf16 autocast", 1, True), ("bf16 FSDP mixed", 2, True)]
        bf16.append(("bf16 FSDP autocast", 2, False))
        for name, k, mixed in bf16:
            ex = dataclasses.replace(
                base, devices_per_run=k, parallel="fsdp", fsdp_mixed_precision=mixed
            )
            launch = train if k == 1 else train_on_devices
            r = launch(spec16, runs / name.replace(" ", "_"), execution=ex)
            print(
                f"{name:20s} train loss {_worst(one, _losses(runs / name.replace(' ', '_'))):.1e}"
                f"  val loss {abs(r.val_loss - ref.val_loss) / ref.val_loss:.1e}"
            )
        exp7 = load_experiment(tiny_toml(root, n_tokens="[8192]"), ["--train.batch_size=7"])
        (spec7,) = expand(exp7)
        train(spec7, runs / "b7", execution=base)
        b7 = _losses(runs / "b7")
        print(
            f"{'batch 7 against 8':20s} train loss {_worst(one, b7):.1e}  "
            f"first row {abs(one[0] - b7[0]) / one[0]:.1e}"
        )


if __name__ == "__main__":
    main()
