"""WSD schedules and trunk sharing: LR tables by hand, fixed warmup, branch == run trained alone.

The tiny experiment: a d32 one-layer Llama, batches of 8 x 32 tokens (256 tokens a step), WSD
runs of 2048, 4096 and 8192 tokens (8, 16, 32 steps) with a 512-token (2-step) warmup and the
last 20% of each run's steps cooling down: k = 2, 3, 6, so the decays start after 6, 13 and 26
updates.
"""

from __future__ import annotations

import csv
import multiprocessing
import os
import signal
from pathlib import Path

import pytest
import torch
from _tiny import tiny_toml

import harness.train
from harness.config import load_experiment
from harness.errors import InputError
from harness.execute.local import run_local
from harness.execute.slurm import submit
from harness.execute.status import run_statuses
from harness.grid import expand
from harness.results import ExperimentLayout, collect
from harness.rundir import RunDir
from harness.schedules import lr_at_step, spec_lr_at_step, warmup_steps
from harness.train import train
from harness.wsd import decay_start, inherited_tokens, plan_trunks, trunk_key, wsd_decay_steps

torch.set_num_threads(1)

WSD = ["--train.schedule=wsd", "--train.warmup_tokens=512"]


# --- the schedule -------------------------------------------------------------------------------


def _table(total: int, warmup: int, **kw: object) -> list[float]:
    return [
        lr_at_step(s, total_steps=total, warmup=warmup, peak=1.0, min_ratio=0.1, **kw)  # type: ignore[arg-type]
        for s in range(total)
    ]


def test_wsd_1_sqrt_table_by_hand() -> None:
    # 10 steps, warmup 2, cooldown round(0.3 * 10) = 3 steps: updates 7, 8, 9 at p = 1/3, 2/3, 1.
    lrs = _table(10, 2, schedule="wsd", decay_fraction=0.3, decay_shape="1-sqrt")
    expected = [
        0.5,  # (0+1)/2
        1.0,
        1.0,
        1.0,
        1.0,
        1.0,
        1.0,  # the stable phase: exactly the peak
        0.1 + 0.9 * (1 - 0.5773502692),  # sqrt(1/3)
        0.1 + 0.9 * (1 - 0.8164965809),  # sqrt(2/3)
        0.1,  # the last update uses the floor
    ]
    assert lrs == pytest.approx(expected, abs=1e-9)
    assert lrs[2:7] == [1.0] * 5  # exact, not approximately


def test_wsd_linear_table_by_hand() -> None:
    lrs = _table(10, 2, schedule="wsd", decay_fraction=0.3, decay_shape="linear")
    assert lrs == pytest.approx([0.5, 1, 1, 1, 1, 1, 1, 0.7, 0.4, 0.1], abs=1e-12)


def test_constant_table_by_hand() -> None:
    assert _table(7, 4, schedule="constant") == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0]


def test_warmup_reaching_into_the_cooldown_takes_the_lower_factor() -> None:
    # 5 steps, warmup 4, cooldown round(0.4 * 5) = 2 steps from update 3; floor 0.
    lrs = [
        lr_at_step(
            s,
            total_steps=5,
            warmup=4,
            peak=1.0,
            min_ratio=0.0,
            schedule="wsd",
            decay_fraction=0.4,
            decay_shape="linear",
        )
        for s in range(5)
    ]
    assert lrs == [0.25, 0.5, 0.75, 0.5, 0.0]  # min(ramp 1.0, cooldown 0.5) at update 3


def test_cosine_is_unchanged_by_the_new_arguments() -> None:
    plain = [lr_at_step(s, total_steps=10, warmup=2, peak=1.0, min_ratio=0.1) for s in range(10)]
    assert _table(10, 2, schedule="cosine", decay_fraction=0.5, decay_shape="linear") == plain


def test_decay_steps_rounding() -> None:
    assert [wsd_decay_steps(n, 0.2) for n in (1, 2, 3, 8, 16, 32, 49, 1465)] == [
        1,  # at least one
        1,  # 0.4 -> 1
        1,  # 0.6 -> 1
        2,  # 1.6
        3,  # 3.2
        6,  # 6.4
        10,  # 9.8
        293,  # 293.0
    ]
    assert wsd_decay_steps(10, 1.0) == 10 and wsd_decay_steps(10, 0.25) == 3  # 2.5 half up


def _exp(tmp_path: Path, overrides: list[str], n_tokens: str = "[2048, 4096, 8192]", **kw: str):
    return load_experiment(tiny_toml(tmp_path, n_tokens=n_tokens, **kw), overrides)


def test_warmup_tokens_fix_warmup_for_every_d(tmp_path: Path) -> None:
    specs = expand(_exp(tmp_path, WSD))
    assert [s.n_steps for s in specs] == [8, 16, 32]
    assert [warmup_steps(s) for s in specs] == [2, 2, 2]  # 512 tokens / 256 per step
    odd = expand(_exp(tmp_path, [*WSD[:1], "--train.warmup_tokens=600"]))
    assert [warmup_steps(s) for s in odd] == [3, 3, 3]  # ceil(600 / 256)
    cosine = expand(_exp(tmp_path, ["--train.warmup_fraction=0.1"]))
    assert [warmup_steps(s) for s in cosine] == [1, 2, 4]  # ceil(0.1 * own steps)


def test_wsd_without_warmup_tokens_is_refused(tmp_path: Path) -> None:
    with pytest.raises(
        InputError, match=r"train\.warmup_tokens = 0: schedule 'wsd' needs a warmup .*set train"
    ):
        _exp(tmp_path, ["--train.schedule=wsd"])


def test_runs_share_the_schedule_up_to_the_shorter_decay(tmp_path: Path) -> None:
    specs = expand(_exp(tmp_path, WSD))
    assert [decay_start(s) for s in specs] == [6, 13, 26]
    longest = specs[-1]
    for short in specs[:-1]:
        s = decay_start(short)
        assert [spec_lr_at_step(short, i) for i in range(s)] == [
            spec_lr_at_step(longest, i) for i in range(s)
        ]
        assert spec_lr_at_step(short, s) < spec_lr_at_step(longest, s)  # its cooldown begins


# --- grouping -----------------------------------------------------------------------------------


def test_plan_puts_each_trunk_before_its_branches(tmp_path: Path) -> None:
    # Two sizes x three D x two seeds: four groups of three.
    exp = load_experiment(
        tiny_toml(tmp_path, n_tokens="[2048, 4096, 8192]"),
        [
            *WSD,
            "--grid.seeds=[0, 1]",
            "--grid.shapes=[{n_layer=1, n_embd=32}, {n_layer=2, n_embd=32}]",
        ],
    )
    specs = expand(exp)
    assert len(specs) == 12 and len({trunk_key(s) for s in specs}) == 4
    order, branches = plan_trunks(specs)
    assert sorted(s.run_id for s in order) == sorted(s.run_id for s in specs)
    assert len(branches) == 4
    for i in range(0, 12, 3):
        trunk, *rest = order[i : i + 3]
        assert trunk.n_tokens == 8192
        assert [b.run_id for b in branches[trunk.run_id]] == [s.run_id for s in rest]
        assert {trunk_key(s) for s in order[i : i + 3]} == {trunk_key(trunk)}
        assert sorted(s.n_tokens for s in rest) == [2048, 4096]
    # Cosine runs share nothing and keep their order.
    cosine = expand(_exp(tmp_path, []))
    assert plan_trunks(cosine) == (cosine, {}) and trunk_key(cosine[0]) is None


# --- branches equal runs trained alone ----------------------------------------------------------


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def _weights_equal(a: Path, b: Path) -> bool:
    sa = torch.load(a / "model.pt", weights_only=True)
    sb = torch.load(b / "model.pt", weights_only=True)
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _alone(exp, specs, root: Path) -> dict[str, object]:
    out = {}
    for spec in specs:
        r = train(spec, root / "runs" / spec.run_id, execution=exp.execution)
        assert r is not None and r.status == "done"
        out[spec.run_id] = r
    return out


@pytest.mark.slow
@pytest.mark.parametrize(
    "parametrization",
    [
        [],
        ["--model.parametrization=mup", "--model.base_width=16"],
        ['--eval.tasks=["facts_kv"]', "--eval.limit=8"],
    ],
    ids=["standard", "mup", "eval"],
)
def test_branches_equal_runs_trained_alone(tmp_path: Path, parametrization: list[str]) -> None:
    exp = _exp(tmp_path, WSD + parametrization)
    specs = expand(exp)
    alone = _alone(exp, specs, tmp_path / "alone")

    shared = tmp_path / "shared" / "runs"
    *short, trunk = specs
    t = train(trunk, shared / trunk.run_id, execution=exp.execution, branches=short)
    assert t is not None and t.branched_from is None and t.trained_tokens == trunk.n_tokens
    for b in short:  # handed off: a checkpoint at the decay start, the trunk's rows so far
        (ckpt,) = (shared / b.run_id / "ckpt").iterdir()
        assert ckpt.name == f"step_{decay_start(b):09d}.pt"
        assert not (shared / b.run_id / "result.json").exists()
    for b in short:
        r = train(b, shared / b.run_id, execution=exp.execution)
        ref = alone[b.run_id]
        assert r is not None and r.status == "done"
        assert r.val_loss == ref.val_loss and r.val_bpb == ref.val_bpb  # bit for bit on CPU
        assert r.train_loss == ref.train_loss
        assert _weights_equal(shared / b.run_id, tmp_path / "alone" / "runs" / b.run_id)
        s = decay_start(b)
        assert r.branched_from == trunk.run_id and r.steps == b.n_steps
        assert r.trained_tokens == b.n_tokens - s * 256 == b.n_tokens - inherited_tokens(b)
        # N = 4 d^2 (attention) + 3 d 96 (SwiGLU) + 3 d (norms) = 13,408 for L1 d32 llama
        assert r.trained_flops == 6.0 * 13408 * r.trained_tokens

        rows = _rows(shared / b.run_id / "metrics.csv")
        trunk_rows = _rows(shared / trunk.run_id / "metrics.csv")
        own = _rows(tmp_path / "alone" / "runs" / b.run_id / "metrics.csv")
        inherited = [row for row in rows if int(row["step"]) <= s]
        assert inherited == [row for row in trunk_rows if int(row["step"]) <= s]
        after = [row for row in rows if int(row["step"]) > s]
        assert [row["step"] for row in after] == [
            row["step"] for row in own if int(row["step"]) > s
        ]
        for mine, theirs in zip(after, own[-len(after) :], strict=True):
            assert mine["lr"] == theirs["lr"] and mine["val_loss"] == theirs["val_loss"]
        final = {k: v for k, v in rows[-1].items() if k != "wall_s"}
        assert final == {k: v for k, v in own[-1].items() if k != "wall_s"}
        walls = [float(row["wall_s"]) for row in rows]
        assert walls == sorted(walls)  # the wall clock goes on from the trunk's
        steps = [int(row["step"]) for row in rows]
        assert steps == sorted(set(steps)) and steps[-1] == b.n_steps
        if b.eval.tasks:  # [eval]: the trunk's task rows so far, then its own, as if alone
            mine = _rows(shared / b.run_id / "tasks.csv")
            alone_rows = _rows(tmp_path / "alone" / "runs" / b.run_id / "tasks.csv")
            trunk_tasks = _rows(shared / trunk.run_id / "tasks.csv")
            assert [r for r in mine if int(r["step"]) <= s] == [
                r for r in trunk_tasks if int(r["step"]) <= s
            ]
            assert [r for r in mine if int(r["step"]) > s] == [
                r for r in alone_rows if int(r["step"]) > s
            ]
            assert int(mine[-1]["step"]) == b.n_steps
    # The trunk itself is the run trained alone.
    assert t.val_loss == alone[trunk.run_id].val_loss
    assert _weights_equal(shared / trunk.run_id, tmp_path / "alone" / "runs" / trunk.run_id)


@pytest.mark.slow
def test_branch_resumes_its_cooldown_after_preemption(tmp_path: Path) -> None:
    exp = _exp(tmp_path, WSD, n_tokens="[4096, 8192]")
    short, trunk = expand(exp)
    alone = _alone(exp, [short], tmp_path / "alone")[short.run_id]
    shared = tmp_path / "shared" / "runs"
    # The trunk is stopped twice (before and after the hand-off at update 13), then resumes.
    assert train(trunk, shared / trunk.run_id, execution=exp.execution, branches=[short],
                 stop_after_steps=10) is None  # fmt: skip
    assert not (shared / short.run_id / "ckpt").exists()
    assert train(trunk, shared / trunk.run_id, execution=exp.execution, branches=[short],
                 stop_after_steps=10) is None  # fmt: skip
    assert [p.name for p in (shared / short.run_id / "ckpt").iterdir()] == ["step_000000013.pt"]
    assert train(trunk, shared / trunk.run_id, execution=exp.execution, branches=[short])
    # The branch is preempted once in its cooldown; its own checkpoint keeps where it came from.
    assert train(short, shared / short.run_id, execution=exp.execution, stop_after_steps=1) is None
    r = train(short, shared / short.run_id, execution=exp.execution)
    assert r is not None and r.val_loss == alone.val_loss and r.train_loss == alone.train_loss
    assert r.branched_from == trunk.run_id and r.trained_tokens == 4096 - 13 * 256


def _trunk_child(exp, trunk, short, run_dir: Path, kill_at: int) -> None:
    n = 0

    def should_stop() -> bool:
        nonlocal n
        n += 1
        if n >= kill_at:
            os.kill(os.getpid(), signal.SIGKILL)  # after the hand-off, before any checkpoint
        return False

    train(trunk, run_dir, execution=exp.execution, branches=[short], should_stop=should_stop)


@pytest.mark.slow
def test_trunk_killed_at_the_hand_off_resumes_and_the_branch_is_exact(tmp_path: Path) -> None:
    exp = _exp(tmp_path, [*WSD, "--train.checkpoint_every_steps=4"], n_tokens="[4096, 8192]")
    short, trunk = expand(exp)
    alone = _alone(exp, [short, trunk], tmp_path / "alone")
    shared = tmp_path / "shared" / "runs"
    p = multiprocessing.get_context("fork").Process(
        target=_trunk_child, args=(exp, trunk, short, shared / trunk.run_id, 13)
    )
    p.start()
    p.join()
    assert p.exitcode == -signal.SIGKILL
    # Killed right after handing off at update 13: the trunk's newest checkpoint is at 12.
    assert [p.name for p in (shared / short.run_id / "ckpt").iterdir()] == ["step_000000013.pt"]
    assert sorted(p.name for p in (shared / trunk.run_id / "ckpt").iterdir())[-1] == (
        "step_000000012.pt"
    )
    t = train(trunk, shared / trunk.run_id, execution=exp.execution, branches=[short])
    assert t is not None and t.val_loss == alone[trunk.run_id].val_loss
    r = train(short, shared / short.run_id, execution=exp.execution)
    assert r is not None and r.val_loss == alone[short.run_id].val_loss
    assert r.branched_from == trunk.run_id


@pytest.mark.slow
def test_a_finished_or_further_branch_is_not_overwritten(tmp_path: Path) -> None:
    exp = _exp(tmp_path, WSD, n_tokens="[4096, 8192]")
    short, trunk = expand(exp)
    shared = tmp_path / "shared" / "runs"
    r = train(short, shared / short.run_id, execution=exp.execution)  # trained alone first
    before = (shared / short.run_id / "result.json").read_bytes()
    train(trunk, shared / trunk.run_id, execution=exp.execution, branches=[short])
    assert (shared / short.run_id / "result.json").read_bytes() == before
    assert not (shared / short.run_id / "ckpt").exists() or not any(
        (shared / short.run_id / "ckpt").iterdir()
    )
    assert r is not None and r.branched_from is None and r.trained_tokens == 4096


def test_a_branch_must_differ_only_in_d(tmp_path: Path) -> None:
    (a,) = expand(_exp(tmp_path, WSD, n_tokens="[4096]"))
    (b,) = expand(_exp(tmp_path, [*WSD, "--train.lr=2e-2"], n_tokens="[2048]"))
    with pytest.raises(ValueError, match="differ only in n_tokens"):
        train(a, tmp_path / "x" / "runs" / a.run_id, branches=[b])


# --- the launcher -------------------------------------------------------------------------------


@pytest.mark.slow
def test_harness_run_shares_trunks_with_the_same_results(tmp_path: Path) -> None:
    # The launcher (one spawned worker) with shared trunks, against each run trained alone here.
    rows = {}
    for name in ("shared", "alone"):
        exp = _exp(tmp_path, [*WSD, f"--execution.results_dir={tmp_path / name}"])
        layout = ExperimentLayout(exp.results_path)
        specs = expand(exp)
        if name == "shared":
            outcomes = run_local(exp, specs, layout)
            assert [o.status for o in outcomes] == ["done"] * 3
            assert outcomes[0].run_id == specs[-1].run_id  # the trunk (longest) went first
        else:
            _alone(exp, specs, layout.root)
        path, counts = collect(layout.root)
        assert counts["done"] == 3
        rows[name] = {r["run_id"]: r for r in _rows(path)}
    assert rows["shared"].keys() == rows["alone"].keys()  # the same run_ids either way
    trunk = max(rows["shared"].values(), key=lambda r: int(r["n_tokens"]))
    for run_id, shared in rows["shared"].items():
        alone = rows["alone"][run_id]
        assert shared["loss"] == alone["loss"] and shared["train_loss"] == alone["train_loss"]
        assert shared["flops"] == alone["flops"] and shared["schedule"] == "wsd"
        assert alone["branched_from"] == "" and alone["trained_tokens"] == alone["n_tokens"]
        if shared is trunk:
            assert shared["branched_from"] == "" and shared["trained_tokens"] == shared["n_tokens"]
        else:
            assert shared["branched_from"] == trunk["run_id"]
            assert int(shared["trained_tokens"]) < int(shared["n_tokens"])
        assert int(shared["trained_flops"]) == 6 * int(shared["n_params"]) * int(
            shared["trained_tokens"]
        )
    spent = sum(int(r["trained_flops"]) for r in rows["shared"].values())
    named = sum(int(r["flops"]) for r in rows["shared"].values())
    assert spent / named == 37 / 56  # 32 + (16 - 13) + (8 - 6) of 8 + 16 + 32 steps


def test_decay_start_never_decreases_with_d() -> None:
    for f in (0.05, 0.1, 0.2, 1 / 3, 0.5, 1.0):
        starts = [n - wsd_decay_steps(n, f) for n in range(1, 400)]
        assert all(a <= b for a, b in zip(starts, starts[1:], strict=False)), f


@pytest.mark.slow
def test_submit_sends_a_group_as_one_job_trunk_first(tmp_path: Path) -> None:
    exp = _exp(tmp_path, WSD)
    specs = expand(exp)
    alone = _alone(exp, specs, tmp_path / "alone")
    submitted, _ = submit(exp, cluster="debug")
    assert [s.run_id for s in submitted] == [specs[2].run_id, specs[0].run_id, specs[1].run_id]
    assert len({s.job_id for s in submitted}) == 1  # one job: no branch trains beside its trunk
    layout = ExperimentLayout(exp.results_path.resolve())
    assert {st.run_id: st.state for st in run_statuses(layout)} == {s.run_id: "done" for s in specs}
    for spec in specs:
        r = RunDir(layout.run_dir(spec.run_id)).read_result()
        assert r is not None and r["val_loss"] == alone[spec.run_id].val_loss
        assert r["branched_from"] == (None if spec is specs[2] else specs[2].run_id)
    assert submit(exp, cluster="debug")[0] == []  # all done


@pytest.mark.slow
def test_a_failed_trunk_leaves_its_branches_to_train_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exp = _exp(tmp_path, WSD)
    specs = expand(exp)
    alone = _alone(exp, specs[:2], tmp_path / "alone")
    real_train = harness.train.train

    def failing_trunk(spec, *args, **kwargs):  # type: ignore[no-untyped-def]
        if spec.run_id == specs[2].run_id:
            raise RuntimeError("disk on fire")
        return real_train(spec, *args, **kwargs)

    monkeypatch.setattr(harness.train, "train", failing_trunk)
    submit(exp, cluster="debug")
    layout = ExperimentLayout(exp.results_path.resolve())
    states = {st.run_id: st for st in run_statuses(layout)}
    assert states[specs[2].run_id].state == "failed"
    assert "disk on fire" in states[specs[2].run_id].error
    for spec in specs[:2]:
        r = RunDir(layout.run_dir(spec.run_id)).read_result()
        assert r is not None and r["status"] == "done" and r["branched_from"] is None
        assert r["val_loss"] == alone[spec.run_id].val_loss and r["trained_tokens"] == spec.n_tokens


@pytest.mark.slow
def test_a_masked_lm_branch_equals_its_run_trained_alone(tmp_path: Path) -> None:
    # The masks, like the data order, are a pure function of (seed, stream position).
    exp = _exp(tmp_path, [*WSD, "--model.arch=bert"], n_tokens="[2048, 4096]")
    short, trunk = expand(exp)
    alone = _alone(exp, [short], tmp_path / "alone")[short.run_id]
    shared = tmp_path / "shared" / "runs"
    assert train(trunk, shared / trunk.run_id, execution=exp.execution, branches=[short])
    r = train(short, shared / short.run_id, execution=exp.execution)
    assert r is not None and r.branched_from == trunk.run_id
    assert r.val_loss == alone.val_loss and r.train_loss == alone.train_loss
    assert _weights_equal(shared / short.run_id, tmp_path / "alone" / "runs" / short.run_id)
