"""muP and CompleteP (harness.parametrization): the published rules, the forward multipliers
against transformers' own scales, and runs that train, resume and shard under them."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from _tiny import harness_cli, tiny_toml

from harness.config import load_experiment
from harness.errors import InputError
from harness.grid import RunSpec, expand, spec_from_dict
from harness.model import ModelShape, build_model, default_ffn_dim
from harness.parametrization import STANDARD, Parametrization, group_rules, param_groups
from harness.results import collect
from harness.train import train

torch.set_num_threads(1)

# A base head width of 4 against the 16-wide heads of `_shape`: attention logits x 2 / 16.
MUP = Parametrization(kind="mup", base_width=16, base_head_dim=4)
COMPLETEP = Parametrization(kind="completep", base_width=16, base_depth=1, base_head_dim=4)


def _shape(arch: str = "llama", n_layer: int = 2, n_embd: int = 64, tie: bool = True):
    return ModelShape(
        arch=arch,  # type: ignore[arg-type]
        n_layer=n_layer,
        n_embd=n_embd,
        n_head=n_embd // 16,
        vocab_size=97,
        seq_len=16,
        ffn_dim=default_ffn_dim(arch, n_embd),  # type: ignore[arg-type]
        tie_embeddings=tie,
    )


def test_group_rules_follow_the_published_tables() -> None:
    # m_N = 64 / 16 = 4, m_L = 2 / 1 = 2, by hand from Dey et al. 2024 table 1 (muP) and Dey et
    # al. 2025 table 1 with alpha = 1 (CompleteP).
    mup = group_rules(MUP, 64, 2)
    assert mup["hidden_matrix"] == (0.5, 0.25, 0.25, 1.0)  # (init std, lr, eps, decay)
    assert mup["embedding"] == (1.0, 1.0, 0.25, 1.0)
    assert mup["hidden_vector"] == mup["outer_vector"] == (1.0, 1.0, 0.25, 1.0)
    cp = group_rules(COMPLETEP, 64, 2)
    assert cp["hidden_matrix"] == (0.5, 0.25, 0.125, 4.0)  # lr x m_L^0, eps / (m_N m_L)
    assert cp["hidden_vector"] == (1.0, 1.0, 0.125, 1.0)
    assert cp["outer_matrix"] == (0.5, 0.25, 0.25, 4.0) and cp["embedding"] == mup["embedding"]
    assert set(group_rules(STANDARD, 64, 2).values()) == {(1.0, 1.0, 1.0, 1.0)}
    # At the base shape every rate, epsilon and init multiplier is 1: the tuned learning rate is
    # the base model's.
    assert set(group_rules(COMPLETEP, 16, 1).values()) <= {(1.0, 1.0, 1.0, 1.0)}


def test_hidden_init_shrinks_as_one_over_root_width() -> None:
    torch.manual_seed(0)
    model = build_model(
        _shape(n_embd=256), Parametrization(kind="mup", base_width=32, base_head_dim=16)
    )
    q = model.model.layers[0].self_attn.q_proj.weight
    assert float(q.detach().std()) == pytest.approx(0.02 / math.sqrt(8), rel=0.02)
    assert float(model.model.embed_tokens.weight.detach().std()) == pytest.approx(0.02, rel=0.02)


@pytest.mark.parametrize(
    ("p", "tie"), [(MUP, False), (COMPLETEP, False), (COMPLETEP, True)], ids=str
)
def test_llama_hooks_equal_transformers_own_scales(p: Parametrization, tie: bool) -> None:
    """The hooked model computes what the standard model computes with its attention scale set
    to 1/d_head and the multipliers folded into its weights."""
    alpha_in = 1.0 if tie else 0.5  # a tied matrix cannot fold alpha_in without alpha_out
    p = dataclasses.replace(p, input_multiplier=alpha_in, output_multiplier=3.0)
    shape = _shape(tie=tie)
    torch.manual_seed(0)
    hooked = build_model(shape, p)
    plain = build_model(shape)
    plain.load_state_dict(hooked.state_dict())
    m_n, m_l = p.width_multiplier(64), p.depth_multiplier(2)
    with torch.no_grad():
        plain.model.embed_tokens.weight *= alpha_in
        plain.model.norm.weight *= 3.0 / m_n  # alpha_out / m_N on the logits
        for layer in plain.model.layers:
            layer.self_attn.scaling = math.sqrt(4) / shape.head_dim  # sqrt(d_base) / d_head
            layer.self_attn.o_proj.weight /= m_l
            layer.mlp.down_proj.weight /= m_l
    x = torch.randint(0, 97, (2, 16))
    want, got = plain(input_ids=x).logits, hooked(input_ids=x).logits
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert m_n == 4 and (m_l == 2) == (p.kind == "completep")


def test_modernbert_query_hook_is_a_one_over_d_head_attention_scale() -> None:
    shape = _shape("modernbert")
    torch.manual_seed(0)
    hooked = build_model(shape, dataclasses.replace(COMPLETEP, input_multiplier=0.5))
    plain = build_model(shape)
    plain.load_state_dict(hooked.state_dict())
    d, m_n = shape.n_embd, COMPLETEP.width_multiplier(64)
    with torch.no_grad():
        for layer in plain.model.layers:
            layer.attn.Wqkv.weight[:d] *= math.sqrt(4 / shape.head_dim)  # sqrt(d_b) / d
            layer.attn.Wo.weight /= 2
            layer.mlp.Wo.weight /= 2
        plain.model.embeddings.norm.weight *= 0.5  # alpha_in after the embedding's norm
        plain.head.norm.weight *= 1.0 / m_n
    x = torch.randint(0, 97, (2, 16))
    torch.testing.assert_close(hooked(input_ids=x).logits, plain(input_ids=x).logits)


def test_param_groups_give_each_kind_its_rate_and_the_learner_applies_them() -> None:
    from harness.config import ExecutionConfig
    from harness.train.learner import build_learner

    spec = dataclasses.replace(_spec(COMPLETEP), model=_shape(tie=False))
    learner = build_learner(spec, ExecutionConfig(), torch.device("cpu"))
    learner.set_lr(1e-3)
    groups = {(g["kind"], g["weight_decay"] > 0): g for g in learner.optimizer.param_groups}
    assert set(groups) == {
        ("embedding", False),
        ("output", True),  # an untied output matrix is decayed, as under the standard rule
        ("hidden_matrix", True),
        ("hidden_vector", False),
        ("outer_vector", False),
    }
    hidden = groups["hidden_matrix", True]
    assert hidden["lr"] == pytest.approx(1e-3 / 4) and hidden["lr_scale"] == 0.25
    assert hidden["weight_decay"] == pytest.approx(0.1 * 4)
    assert groups["output", True]["lr"] == 1e-3 and groups["output", True]["weight_decay"] == 0.1
    assert groups["hidden_vector", False]["eps"] == pytest.approx(1e-8 / 8)
    n = sum(q.numel() for g in groups.values() for q in g["params"])
    assert n == sum(q.numel() for q in learner.model.parameters())
    # The standard parametrization keeps its two groups (decayed and not), untouched.
    shape = _shape()
    plain = param_groups(build_model(shape), shape, STANDARD, 0.1)
    assert [g["weight_decay"] for g in plain] == [0.1, 0.0] and "lr_scale" not in plain[0]


@pytest.mark.parametrize("n_layer", [2, 8])
def test_every_matrix_is_drawn_at_its_rule_whatever_the_depth(n_layer: int) -> None:
    # transformers' ModernBERT init scales its out-projections by 1/sqrt(2 L); under CompleteP
    # the output layer keeps sigma and the hidden matrices sigma / sqrt(m_N) at every depth.
    torch.manual_seed(0)
    model = build_model(_shape("modernbert", n_layer=n_layer, n_embd=256, tie=False), COMPLETEP)
    assert float(model.decoder.weight.detach().std()) == pytest.approx(0.02, rel=0.02)
    wo = model.model.layers[-1].mlp.Wo.weight.detach()
    assert float(wo.std()) == pytest.approx(0.02 / 4, rel=0.03)


def _spec(p: Parametrization = STANDARD) -> RunSpec:
    from harness.config import DataConfig, TrainConfig

    return RunSpec(
        experiment="t",
        model=_shape(),
        data=DataConfig(seq_len=16),
        train=TrainConfig(),
        n_tokens=4096,
        seed=0,
        parametrization=p,
    )


def test_parametrization_is_part_of_a_runs_identity_only_when_not_standard() -> None:
    plain = _spec()
    assert "parametrization" not in plain.identity()  # every older run_id stays valid
    assert plain.run_id == "7c140737b05e"  # computed by the harness before muP existed
    mup = _spec(MUP)
    assert mup.run_id != plain.run_id != _spec(COMPLETEP).run_id
    assert spec_from_dict(json.loads(json.dumps(mup.to_dict()))) == mup
    bad = dict(mup.to_dict(), parametrization={"kind": "mup", "base_width": -1})
    with pytest.raises(InputError, match=r"spec.json: parametrization.base_width = -1"):
        spec_from_dict(bad)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["--model.parametrization=mup"], "model.base_width = 0: parametrization 'mup' needs"),
        (["--model.base_width=16"], "model.base_width = 16: the standard parametrization"),
        (
            ["--model.parametrization=mup", "--model.base_width=16", "--model.base_depth=1"],
            "model.base_depth = 1: 'mup' scales width only",
        ),
        (["--model.parametrization=completep", "--model.base_width=16"], "model.base_depth = 0"),
        (
            ["--model.parametrization=mup", "--model.base_width=16", "--model.arch=gpt2"],
            "model.parametrization = 'mup': with arch 'gpt2'",
        ),
        (
            ["--model.parametrization=mup", "--model.base_width=16", "--train.lr_width_exponent=1"],
            "train.lr_width_exponent = 1.0: model.parametrization 'mup' scales",
        ),
        (
            [
                "--model.parametrization=mup",
                "--model.base_width=16",
                "--train.size_rule=porian2024",
            ],  # noqa: E501
            "train.size_rule = 'porian2024'",
        ),
        (
            ["--model.parametrization=mup", "--model.base_width=16", "--downstream.task=x.csv"],
            "downstream.methods = ['full', 'lora']: LoRA adapters cannot follow",
        ),
        (
            ["--model.parametrization=mup", "--model.base_width=24"],
            "n_embd = 32 against model.base_width = 24: the width multiplier 1.33333",
        ),
    ],
)
def test_what_cannot_be_honoured_is_refused(
    tmp_path: Path, overrides: list[str], message: str
) -> None:
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace("[", r"\[")):
        expand(load_experiment(tiny_toml(tmp_path), overrides))


@pytest.mark.slow
def test_plan_refuses_a_base_width_that_does_not_divide_in_one_line(tmp_path: Path) -> None:
    toml = tiny_toml(tmp_path, extra='[model]\nparametrization = "mup"\nbase_width = 24')
    proc = harness_cli("plan", str(toml))
    assert proc.returncode == 2 and proc.stdout == ""
    (line,) = proc.stderr.strip().splitlines()
    assert "model.base_width = 24" in line and "not a whole ratio" in line


def _mup_exp(tmp_path: Path, kind: str = "mup", arch: str = "llama"):  # noqa: ANN202
    depth = "base_depth = 1\n" if kind == "completep" else ""
    extra = f'[model]\narch = "{arch}"\nparametrization = "{kind}"\nbase_width = 16\n{depth}'
    return load_experiment(tiny_toml(tmp_path, n_tokens="[4096]", extra=extra))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "arch"), [("mup", "llama"), ("completep", "llama"), ("completep", "modernbert")]
)
def test_a_run_under_mup_trains_resumes_exactly_and_is_recorded(
    tmp_path: Path, kind: str, arch: str
) -> None:
    exp = _mup_exp(tmp_path, kind, arch)
    (spec,) = expand(exp)
    assert spec.parametrization.kind == kind and spec.n_steps == 16
    ref = train(spec, tmp_path / "a" / "runs" / spec.run_id, execution=exp.execution)
    assert ref is not None and ref.status == "done"
    assert ref.val_loss < math.log(spec.model.vocab_size) - 1  # it learns
    run_dir = exp.results_path / "runs" / spec.run_id
    for _ in range(2):
        assert train(spec, run_dir, execution=exp.execution, stop_after_steps=6) is None
    resumed = train(spec, run_dir, execution=exp.execution)
    assert resumed is not None and resumed.val_loss == ref.val_loss  # bit for bit on CPU
    csv_path, _ = collect(exp.results_path)
    import pandas as pd

    row = pd.read_csv(csv_path).iloc[0]
    assert (row["parametrization"], row["base_width"]) == (kind, 16)
    assert row["base_depth"] == (1 if kind == "completep" else 0)
    # Fine-tuning loads the weights into a model with the run's multipliers, not a plain one.
    from harness.finetune import load_pretrained

    loaded_spec, lm = load_pretrained(run_dir)
    assert loaded_spec == spec
    plain = build_model(spec.model)
    plain.load_state_dict(lm.state_dict())
    x = torch.randint(0, spec.model.vocab_size, (1, 16))
    assert not torch.allclose(lm(input_ids=x).logits, plain(input_ids=x).logits)


@pytest.mark.slow
def test_fsdp_under_completep_trains_what_one_process_does(tmp_path: Path) -> None:
    from harness.execute.ranks import train_on_devices

    exp = _mup_exp(tmp_path, "completep")
    (spec,) = expand(exp)
    one = train(spec, tmp_path / "one", execution=exp.execution)
    two = train_on_devices(
        spec,
        tmp_path / "two",
        execution=dataclasses.replace(
            exp.execution, device="cpu", devices_per_run=2, parallel="fsdp"
        ),
    )
    assert one is not None and two is not None and two.world_size == 2
    assert abs(two.val_loss - one.val_loss) / one.val_loss < 1e-5
