"""`harness plan`: the grid as a table with FLOPs and time estimates; trains and writes nothing."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from harness.cli import main
from harness.config import load_experiment
from harness.errors import InputError
from harness.grid import expand_grid
from harness.model import count_params
from harness.plan import measure_throughput, plan_rows

# 1x32 and 1x64 llama shapes: N = 13,408 and 50,368 (counted by hand in test_grid_modes.py).
TOML = """
[data]
seq_len = 32
[train]
batch_size = 16
[grid]
shapes = [{{n_layer = 1, n_embd = 32}}, {{n_layer = 1, n_embd = 64}}]
{grid}
[execution]
threads = 1
results_dir = "{results}"
"""


def write(tmp_path: Path, grid: str = "flops = [1e8, 1e10]\nlrs = [1e-3, 3e-3]") -> Path:
    path = tmp_path / "p.toml"
    path.write_text(TOML.format(grid=grid, results=tmp_path / "results"))
    return path


def files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


def test_table_numbers_and_nothing_written(tmp_path: Path, capsys) -> None:
    path = write(tmp_path)
    before = files(tmp_path)
    assert main(["plan", str(path), "--no-timing"]) == 0
    out = capsys.readouterr().out
    assert files(tmp_path) == before  # no results directory, no cache, nothing
    assert out.splitlines()[0].startswith("p: 6 runs, 2 model size(s)")
    rows = [line.split() for line in out.splitlines() if re.match(r"\s*\d+\s+[0-9a-f]{12}\s", line)]
    assert len(rows) == 6
    # Run 3: the 1x32 model at C = 1e10: D = 124,288 (3,884 sequences of 32), D/N = 9.27,
    # 6ND = 6 * 13,408 * 124,288 = 9.9987e9. With attention, embeddings and logits
    # (Chinchilla app. F) per token: 3 * (2*256*32 + [6*32^2 + 2*32*32 + 3*2*32 + 2*32*32 +
    # 2*32^2] + 3*2*32*96 + 2*32*256) = 3 * 63,680 = 191,040, times D = 2.374e10.
    assert rows[2][2:10] == ["13,408", "1x32/2h", "124,288", "9.27", "1e+10", "2.37e+10",
                             "1e+10", "0.001"]  # fmt: skip
    assert rows[3][9] == "0.003"  # the lr sweep, inside each point
    assert all(r[-1] == "-" for r in rows)  # no timing asked for
    assert "dropped: N = 50,368 (1x64), flops = 1e+08: D = 320 tokens is below one batch" in out
    assert "budget C = 1e+08: 2 run(s); an isoFLOP minimum needs 3 or more sizes" in out
    assert "total: 6ND" in out


def test_time_estimates_from_timed_steps(tmp_path: Path) -> None:
    exp = load_experiment(write(tmp_path, "n_tokens = [3200, 64000]"))
    grid = expand_grid(exp)

    def timer(shape, batch_size, **_):  # 50 ms per step of 16 x 32 tokens: 10,240 tokens/s
        return 0.05

    tp = measure_throughput(exp, grid.specs, timer=timer)
    assert tp.device == "cpu" and len(tp.measured) == 2
    rows = plan_rows(grid, tp)
    # D = 3,200 plus 4 evaluations of 65,536 tokens at a third of a step's cost per token.
    assert rows[0].est_s == pytest.approx((3200 + 4 * 65536 / 3) / 10240, rel=1e-9)
    assert rows[1].est_s == pytest.approx((64000 + 4 * 65536 / 3) / 10240, rel=1e-9)
    # Timed with activation checkpointing, a step does 4/3 of the work; evaluations, forward
    # passes only, a quarter of such a step per token.
    row = plan_rows(grid, tp, work=4 / 3)[0]
    assert row.est_s == pytest.approx((3200 + 4 * 65536 / 4) / 10240, rel=1e-9)
    # With no time left after the first (smallest) shape, the other takes its MFU.
    tp = measure_throughput(exp, grid.specs, timer=timer, budget_s=0.0)
    assert len(tp.measured) == 1 and "take the MFU of the timed shape" in tp.note
    (small,) = tp.measured
    assert small[0].n_embd == 32
    big = next(k for k in tp.mfu if k not in tp.measured)
    assert tp.mfu[big] == tp.mfu[small]


def test_real_timing_on_this_cpu(tmp_path: Path, capsys) -> None:
    assert main(["plan", str(write(tmp_path, "n_tokens = [3200]"))]) == 0
    out = capsys.readouterr().out
    assert re.search(r"matmul peak measured [\d.]+ GFLOP/s; timed [12] of 2 shape", out)
    assert re.search(r"estimated time \d+(s|m\d\ds)\b", out)  # units.fmt_duration


@pytest.mark.parametrize(
    "args, message",
    [
        (["plan", "nope.toml"], "nope.toml: no such experiment file"),
        (["plan", "{toml}", "--grid.flops=[1]"], "every point is dropped"),
        (["plan", "{toml}", "--grid.colour=1"], "unknown key 'grid.colour'"),
        (["plan", "{toml}", "--grid.n_tokens=[100]"], "use one of n_tokens, flops"),
        (["plan", "{toml}", "oops"], "unrecognised argument 'oops'"),
        # A synthetic spec is checked before the table, not first at `harness run`.
        (
            ["plan", "{toml}", "--data.corpus=synthetic:source=facts,entities=5000"],
            "p.toml (with overrides --data.corpus=synthetic:source=facts,entities=5000): "
            "data.corpus: synthetic facts entities = 5000; accepted: an integer 2..vocab^key",
        ),
        (["plan", "{toml}", "--data.corpus=synthetic:order=0"], "data.corpus: synthetic order = 0"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path: Path, capsys, args, message) -> None:
    toml = write(tmp_path)
    argv = [a.format(toml=toml) for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_timing_order_brackets_the_sizes(tmp_path: Path) -> None:
    grid_toml = "n_tokens = [3200]\nbatch_sizes = [4, 8, 16]"
    exp = load_experiment(write(tmp_path, grid_toml))
    calls = []

    def timer(shape, batch_size, **_):
        calls.append((shape.n_embd, batch_size))
        return 0.01 * batch_size * shape.n_embd

    measure_throughput(exp, expand_grid(exp).specs, timer=timer)
    # Six (shape, batch) pairs; the cheapest and the most expensive step are timed first.
    assert calls[:2] == [(32, 4), (64, 16)] and len(calls) == 6


@pytest.mark.slow
def test_plan_refuses_what_run_would_fail_on_at_once(tmp_path: Path) -> None:
    # Issue 31: a name too long for a folder, and a results folder nothing can be made in,
    # were accepted by plan and ended run in a traceback.
    from _tiny import harness_cli, tiny_toml

    toml = tiny_toml(tmp_path)
    long = tmp_path / "long.toml"
    long.write_text(f'name = "{"x" * 300}"\n' + toml.read_text())
    for args, message in (
        ([str(long)], "name = "),
        ([str(toml), "--execution.results_dir=/proc/probe"], "execution.results_dir = /proc/probe"),
    ):
        for cmd in ("plan", "run"):
            out = harness_cli(cmd, *args, *(["--no-timing"] if cmd == "plan" else []))
            err = out.stderr.strip().splitlines()
            assert out.returncode == 2 and len(err) == 1, (cmd, out.stderr[-800:])
            assert message in err[0], err[0]


@pytest.mark.slow
def test_plan_and_run_refuse_a_model_whose_state_cannot_fit_and_time_none_too_big(
    tmp_path: Path,
) -> None:
    # Issue 31: plan built a 1e9-parameter model to time it (12 GB, minutes); at 1e15 it ended
    # in a traceback and run started runs that failed.
    import time

    from _tiny import harness_cli, tiny_toml

    from harness.preflight import memory_bytes

    huge = tiny_toml(tmp_path, name="huge")
    huge.write_text(huge.read_text().replace("shapes = [{n_layer = 1, n_embd = 32}]",
                                             "n_params = [1e15]"))  # fmt: skip
    for cmd in ("plan", "run"):
        out = harness_cli(cmd, str(huge))
        (line,) = out.stderr.strip().splitlines()
        assert out.returncode == 2 and "GiB for its weights, gradients and AdamW state" in line
    ram = memory_bytes("cpu")
    assert ram is not None
    # a size that fits this machine's memory but not a quarter of it: planned, not built
    n = int(ram / 16 / 2)
    big = tiny_toml(tmp_path, name="big")
    big.write_text(big.read_text().replace("shapes = [{n_layer = 1, n_embd = 32}]",
                                           f"n_params = [2e4, {n:.3e}]"))  # fmt: skip
    t0 = time.perf_counter()
    out = harness_cli("plan", str(big), timeout=300)
    assert out.returncode == 0, out.stderr
    assert time.perf_counter() - t0 < 120  # nothing of its size was built
    assert "timed 1 of 2 shape(s)" in out.stdout


# --- a plan for a named GPU ------------------------------------------------------------------

GPU_TOML = """
[model]
arch = "llama"
aspect_ratio = 64.0
head_dim = 64
[data]
seq_len = 2048
[train]
batch_size = 256
[grid]
n_params = [20e6, 300e6, 1.2e9]
tokens_per_param = [20]
[execution]
gpu = "h100"
parallel = "fsdp"
results_dir = "{results}"
"""


def test_a_gpu_plan_sizes_each_run_and_builds_no_model(tmp_path: Path, capsys, monkeypatch) -> None:
    import harness.model
    from harness.hardware import ACCELERATORS
    from harness.memory import HEADROOM, estimate_memory

    def refuse(*args, **kwargs):  # a 1.2e9 model built here would take 19 GB of RAM
        raise AssertionError("plan built a model")

    monkeypatch.setattr(harness.model, "build_model", refuse)
    path = tmp_path / "gpu.toml"
    path.write_text(GPU_TOML.format(results=tmp_path / "results"))
    assert main(["plan", str(path)]) == 0
    out = capsys.readouterr().out
    assert "sized for h100: 80 GB (90% used), bf16 989.5 TFLOP/s" in out
    exp = load_experiment(path)
    usable = (1 - HEADROOM) * ACCELERATORS["h100"].memory_bytes
    rows = [line.split() for line in out.splitlines() if re.match(r"\d+ +[0-9a-f]{12} ", line)]
    assert len(rows) == 3
    head = next(line.split() for line in out.splitlines() if line.startswith("#"))
    col = {name: i for i, name in enumerate(head)}
    hours = 0.0
    for spec, row in zip(expand_grid(exp).specs, rows, strict=True):
        micro, gpus = int(row[col["micro"]]), int(row[col["GPUs"]])
        # The largest micro-batch that fits, on the fewest GPUs: one more sequence would not.
        fits = estimate_memory(spec.model, micro_batch=micro, devices=gpus, parallel="fsdp")
        assert fits.total <= usable and float(row[col["GB/GPU"]]) == round(fits.total / 1e9, 1)
        bigger = [m for m in range(micro + 1, 257) if (256 // gpus) % m == 0]
        if bigger:
            worse = estimate_memory(spec.model, micro_batch=bigger[0], devices=gpus,
                                    parallel="fsdp")  # fmt: skip
            assert worse.total > usable
        # GPU-hours: FLOPs with attention (training, and evaluations at a third) over 35% of
        # the bf16 peak.
        tokens = spec.n_tokens + spec.train.evals_per_run * spec.data.eval_tokens / 3
        flops = harness.model.flops_per_token(spec.model).total * tokens
        assert row[col["GPU-h"]] == f"{flops / (0.35 * 989.5e12) / 3600:.3g}"
        hours += flops / (0.35 * 989.5e12) / 3600
    assert f"{hours:.4g} h100 GPU-hours" in out


def test_a_gpu_plan_with_activation_checkpointing(tmp_path: Path, capsys) -> None:
    import harness.model
    from harness.memory import estimate_memory

    path = tmp_path / "gpu.toml"
    path.write_text(GPU_TOML.format(results=tmp_path / "results"))
    tables = {}
    for on in ("false", "true"):
        assert main(["plan", str(path), f"--execution.activation_checkpointing={on}"]) == 0
        out = capsys.readouterr().out
        head = next(line.split() for line in out.splitlines() if line.startswith("#"))
        rows = [dict(zip(head, line.split(), strict=False)) for line in out.splitlines()
                if re.match(r"\d+ +[0-9a-f]{12} ", line)]  # fmt: skip
        tables[on] = rows
    specs = expand_grid(load_experiment(path)).specs
    for spec, plain, ckpt in zip(specs, tables["false"], tables["true"], strict=True):
        # Each forward pass is made twice: 4/3 of the training FLOPs; evaluations as before.
        tokens = 4 / 3 * spec.n_tokens + spec.train.evals_per_run * spec.data.eval_tokens / 3
        flops = harness.model.flops_per_token(spec.model).total * tokens
        assert ckpt["GPU-h"] == f"{flops / (0.35 * 989.5e12) / 3600:.3g}"
        # Its memory is the checkpointing estimate at the micro-batch chosen, which is no
        # smaller, on no more GPUs.
        micro, gpus = int(ckpt["micro"]), int(ckpt["GPUs"])
        est = estimate_memory(spec.model, micro_batch=micro, devices=gpus, parallel="fsdp",
                              activation_checkpointing=True)  # fmt: skip
        assert float(ckpt["GB/GPU"]) == round(est.total / 1e9, 1)
        assert micro >= int(plain["micro"]) and gpus <= int(plain["GPUs"])
    pairs = zip(tables["false"], tables["true"], strict=True)
    assert any(int(c["micro"]) > int(p["micro"]) for p, c in pairs)


def test_a_gpu_plan_refuses_what_fits_no_gpu_with_its_numbers(tmp_path: Path, capsys) -> None:
    path = tmp_path / "gpu.toml"
    path.write_text(GPU_TOML.format(results=tmp_path / "results"))
    # 24 GB and DDP: the 1.2e9 model's state alone (19 GB) and its activations do not fit
    assert main(["plan", str(path), "--execution.gpu=rtx4090", "--execution.parallel=ddp"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "GB per GPU at a micro-batch of 1 on 1 GPU(s) (ddp: state " in err
    assert "a rtx4090 has 24 GB, 22 usable" in err and "'fsdp' shares the state" in err
    assert main(["plan", str(path), "--execution.gpu=tpu9"]) == 2
    err = capsys.readouterr().err
    assert "execution.gpu = 'tpu9': h100, h100-pcie" in err and "gpu_memory_gb" in err
    # a GPU of its own numbers
    assert main(["plan", str(path), "--execution.gpu=mine", "--execution.gpu_memory_gb=200",
                 "--execution.gpu_bf16_tflops=500"]) == 0  # fmt: skip
    assert (
        "sized for mine: 200 GB (90% used), bf16 500.0 TFLOP/s (given)" in capsys.readouterr().out
    )


def test_porian_rule_sets_each_sizes_batch_and_lr(tmp_path: Path) -> None:
    path = tmp_path / "gpu.toml"
    path.write_text(GPU_TOML.format(results=tmp_path / "results") + "\n")
    exp = load_experiment(path, ["--train.size_rule=porian2024"])
    for spec in expand_grid(exp).specs:
        n = count_params(spec.model).non_embedding
        # Porian et al. 2024 as OLMo-core's ladder: 2048 x 160 (N/1.08e8)^(2/3) tokens, to a
        # power of two sequences of 2048; lr 0.0047 (N/1.08e8)^(-1/3).
        sequences = 160 * (n / 1.08e8) ** (2 / 3)
        assert spec.train.batch_size == 2 ** round(math.log2(sequences))
        assert spec.train.lr == pytest.approx(0.0047 * (n / 1.08e8) ** (-1 / 3), rel=1e-12)
    by_n = {count_params(s.model).non_embedding: s.train.batch_size for s in expand_grid(exp).specs}
    assert sorted(by_n.values()) == [64, 256, 1024]  # N = 1.9e7, 3.0e8, 1.2e9
    with pytest.raises(InputError, match="no grid.lrs or grid.batch_sizes sweep with it"):
        expand_grid(load_experiment(path, ["--train.size_rule=porian2024", "--grid.lrs=[1e-3]"]))
    with pytest.raises(InputError, match="lr_width_exponent must be 0 with it"):
        load_experiment(path, ["--train.size_rule=porian2024", "--train.lr_width_exponent=1"])


def test_a_gpu_plan_takes_the_gpus_submit_gives_each_size(tmp_path: Path, capsys) -> None:
    path = tmp_path / "gpu.toml"
    path.write_text(
        GPU_TOML.format(results=tmp_path / "results")
        + "[[cluster.by_size]]\nmin_n_params = 1_000_000_000\ngpus_per_run = 2\n"
    )
    assert main(["plan", str(path), "--execution.gpu=a100-40gb"]) == 0
    out = capsys.readouterr().out
    head = next(line.split() for line in out.splitlines() if line.startswith("#"))
    rows = [line.split() for line in out.splitlines() if re.match(r"\d+ +[0-9a-f]{12} ", line)]
    gpus = [int(r[head.index("GPUs")]) for r in rows]
    # 1.2e9 on 2 A100s of 40 GB (its [[cluster.by_size]]); the others on the 1 of [cluster]
    assert gpus == [1, 1, 2] and "needs more GPUs" not in out
    # Given one 24 GB L4 ([cluster] alone), 1.2e9 parameters' 14.4 GB of resident state leave
    # too little for a sequence's activations: under FSDP it needs 2, and the plan says so.
    path.write_text(GPU_TOML.format(results=tmp_path / "results"))
    assert main(["plan", str(path), "--execution.gpu=l4"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"needs more GPUs: run [0-9a-f]{12} \(N = 1,\d{3},\d{3},\d{3}\) fits on", out)
