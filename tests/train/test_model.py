"""Tests for harness.model: exact parameter counts, FLOP tables, shape search, built models."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from harness.model import (
    Arch,
    FlopsPerToken,
    ModelShape,
    ParamCounts,
    build_model,
    count_params,
    default_ffn_dim,
    flops_per_token,
    shape_for_params,
)

REPO = Path(__file__).resolve().parents[2]

# Parameter names of embeddings and the output projection (everything else is Kaplan's N).
EMBEDDING_NAMES = ("embed_tokens", "wte", "wpe", "lm_head")


@pytest.fixture(scope="module")
def torch():
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    torch.set_num_threads(1)
    return torch


def shape(**overrides: object) -> ModelShape:
    fields: dict[str, object] = dict(
        arch="llama", n_layer=2, n_embd=64, n_head=4, vocab_size=256, seq_len=128, ffn_dim=176
    )
    fields.update(overrides)
    return ModelShape(**fields)  # type: ignore[arg-type]


# --- parameter counts ---------------------------------------------------------------------


BUILT_SHAPES = [
    shape(),
    shape(tie_embeddings=False),
    shape(n_layer=3, n_embd=48, n_head=3, ffn_dim=100, vocab_size=97, seq_len=16),
    shape(arch="gpt2", ffn_dim=256),
    shape(arch="gpt2", ffn_dim=256, tie_embeddings=False),
    shape(arch="gpt2", n_layer=1, n_embd=40, n_head=5, ffn_dim=72, vocab_size=50, seq_len=33),
]


@pytest.mark.parametrize(
    "s",
    BUILT_SHAPES,
    ids=lambda s: f"{s.arch}-L{s.n_layer}-d{s.n_embd}-{'tied' if s.tie_embeddings else 'untied'}",
)
def test_count_params_matches_built_model(torch, s: ModelShape) -> None:
    model = build_model(s)
    named = dict(model.named_parameters())  # tied weights appear once
    counts = count_params(s)
    assert counts.total == sum(p.numel() for p in model.parameters())
    assert counts.non_embedding == sum(
        p.numel() for name, p in named.items() if not any(e in name for e in EMBEDDING_NAMES)
    )
    assert counts.embedding == sum(
        p.numel() for name, p in named.items() if any(e in name for e in EMBEDDING_NAMES)
    )
    assert counts.total == counts.non_embedding + counts.embedding
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert tied == s.tie_embeddings


def test_llama_count_by_hand() -> None:
    # d=64, f=176, L=2: per layer 4*64^2 + 3*64*176 + 2*64 = 16384 + 33792 + 128 = 50304;
    # N = 2*50304 + 64 (final norm) = 100672; embedding 256*64 = 16384.
    assert count_params(shape()) == ParamCounts(
        non_embedding=100_672, total=117_056, embedding=16_384
    )
    assert count_params(shape(tie_embeddings=False)) == ParamCounts(
        non_embedding=100_672, total=133_440, embedding=32_768
    )


def test_gpt2_small_published_count() -> None:
    gpt2_small = ModelShape(
        arch="gpt2", n_layer=12, n_embd=768, n_head=12, vocab_size=50257, seq_len=1024, ffn_dim=3072
    )
    counts = count_params(gpt2_small)
    assert counts.total == 124_439_808
    # Hand count: remove token and position embeddings from the total.
    assert counts.non_embedding == 124_439_808 - 50257 * 768 - 1024 * 768 == 85_056_000
    assert counts.embedding == 50257 * 768 + 1024 * 768


def test_gpt2_small_built_on_meta(torch) -> None:
    gpt2_small = ModelShape(
        arch="gpt2", n_layer=12, n_embd=768, n_head=12, vocab_size=50257, seq_len=1024, ffn_dim=3072
    )
    with torch.device("meta"):  # same module tree, no memory or init time
        model = build_model(gpt2_small)
    assert sum(p.numel() for p in model.parameters()) == 124_439_808
    assert model.config.eos_token_id == 50256


def test_default_ffn_dim() -> None:
    assert default_ffn_dim("gpt2", 768) == 3072
    assert default_ffn_dim("llama", 64) == 176  # 8/3*64 = 170.7 -> 176
    assert default_ffn_dim("llama", 768) == 2048  # 8/3*768 = 2048 exactly
    assert default_ffn_dim("llama", 4096) == 10928  # 10922.7 -> next multiple of 16
    assert default_ffn_dim("llama", 1) == 16
    with pytest.raises(ValueError, match=r"arch='t5' is invalid"):
        default_ffn_dim("t5", 64)  # type: ignore[arg-type]


# --- FLOPs ----------------------------------------------------------------------------------


def test_flops_table_by_hand() -> None:
    # llama, L=2, d=64, h=4, f=176, V=256, n_ctx=128; N = 100672 (above).
    #   six_n  = 6 * 100672 = 604032
    #   kaplan = 6 * (100672 + 2*128*64) = 6 * 117056 = 702336
    #   Chinchilla app. F, forward per token:
    #     embeddings 2*256*64 = 32768; logits 2*64*256 = 32768
    #     attention/layer: QKV 6*64^2 = 24576, QK^T 2*128*64 = 16384, softmax 3*4*128 = 1536,
    #       reduction 2*128*64 = 16384, output 2*64^2 = 8192 -> 67072
    #     SwiGLU/layer: 3 matrices * 2*64*176 = 67584
    #     forward = 32768 + 2*(67072 + 67584) + 32768 = 334848; training x3 = 1004544
    assert flops_per_token(shape()) == FlopsPerToken(
        six_n=604032.0, kaplan=702336.0, total=1004544.0
    )
    # gpt2, same sizes with f=256: per layer 4*4096 + 2*64*256 + 9*64 + 256 = 49984;
    #   N = 2*49984 + 2*64 = 100096; six_n = 600576; kaplan = 6*(100096 + 16384) = 698880;
    #   MLP/layer 2 matrices * 2*64*256 = 65536; forward = 32768 + 2*(67072 + 65536) + 32768
    #   = 330752; x3 = 992256 (the position-embedding add is not counted).
    assert count_params(shape(arch="gpt2", ffn_dim=256)).non_embedding == 100096
    assert flops_per_token(shape(arch="gpt2", ffn_dim=256)) == FlopsPerToken(
        six_n=600576.0, kaplan=698880.0, total=992256.0
    )


def test_training_flops_is_six_n_d_exact_in_integers() -> None:
    from harness.flops import tokens_for_flops, training_flops

    # The quickstart's smallest run: N = 6736, D = 150016 -> 6 * 6736 * 150016 = 6063046656.
    assert training_flops(6736, 150016) == 6063046656
    # A 70B model on 15T tokens: 6.3e24, past int64 yet exact as a Python integer.
    assert training_flops(70 * 10**9, 15 * 10**12) == 63 * 10**23
    assert tokens_for_flops(6063046656, 6736) == 150016.0
    # The grid's isoFLOP D: C / (6 N), as before the formula had one home (Hoffmann et al.).
    assert tokens_for_flops(1e15, 13408) == 1e15 / (6.0 * 13408)


def test_flops_gpt2_small_against_kaplan_approximation() -> None:
    # Kaplan 2020 table 1: C_forward ≈ 2N + 2 n_layer n_ctx d_model. For GPT-2 small the exact
    # N includes biases and norms; forward = 2*85056000 + 2*12*1024*768 = 188,986,368.
    s = ModelShape(
        arch="gpt2", n_layer=12, n_embd=768, n_head=12, vocab_size=50257, seq_len=1024, ffn_dim=3072
    )
    f = flops_per_token(s)
    assert f.kaplan == 3 * 188_986_368
    # Chinchilla counts the embedding and logit matmuls (2 * 2 V d) on top; it exceeds Kaplan's.
    assert f.total > f.kaplan > f.six_n


# --- shape search ---------------------------------------------------------------------------

TARGETS = np.geomspace(1e4, 1e7, 61)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_shape_for_params_accuracy_and_monotone(arch: Arch) -> None:
    previous = 0
    for target in TARGETS:
        s = shape_for_params(int(target), arch=arch, vocab_size=256, seq_len=128)
        n = count_params(s).non_embedding
        ratio = n / target
        # head_dim 16 steps make tiny models coarse: near 1e4 the nearest shapes (1 layer of
        # width 16 or 32) are ~1.4x away. From 5e4 up, within 25%.
        assert abs(math.log(ratio)) <= math.log(1.25 if target >= 5e4 else 1.45), (target, s)
        if target >= 1e6:
            assert abs(math.log(ratio)) <= math.log(1.15), (target, s)
        aspect = s.n_embd / s.n_layer
        assert abs(math.log(aspect / 32)) <= math.log(2.5 if target < 1e6 else 1.4), (target, s)
        assert s.n_embd % 16 == 0 and s.n_head == s.n_embd // 16
        assert s.ffn_dim == default_ffn_dim(arch, s.n_embd)
        assert n >= previous, (target, n, previous)
        previous = n
        # At least as close as the shapes on the aspect line (n_layer, nearest multiple of 16
        # to 32 * n_layer) around the ideal depth: those are always candidates.
        ideal_layer = (target * 32 / 12) ** (1 / 3) / 32
        for n_layer in range(max(1, math.floor(ideal_layer) - 1), math.ceil(ideal_layer) + 2):
            n_embd = max(16, round(32 * n_layer / 16) * 16)
            on_line = count_params(
                ModelShape(
                    arch=arch,
                    n_layer=n_layer,
                    n_embd=n_embd,
                    n_head=n_embd // 16,
                    vocab_size=256,
                    seq_len=128,
                    ffn_dim=default_ffn_dim(arch, n_embd),
                )
            ).non_embedding
            assert abs(math.log(ratio)) <= abs(math.log(on_line / target)) + 1e-12


def test_shape_for_params_large_targets_keep_aspect() -> None:
    for target, aspect in [(1e8, 32.0), (1e9, 64.0), (1e9, 128.0)]:
        s = shape_for_params(int(target), aspect_ratio=aspect, vocab_size=32000, seq_len=2048)
        n = count_params(s).non_embedding
        assert abs(math.log(n / target)) < 0.03, s
        assert abs(math.log(s.n_embd / s.n_layer / aspect)) < math.log(1.15), s


def test_shape_for_params_is_dense_and_monotone_in_target() -> None:
    ns = [
        count_params(shape_for_params(int(t), vocab_size=256, seq_len=64)).non_embedding
        for t in np.geomspace(2e4, 2e6, 400)
    ]
    assert all(b >= a for a, b in zip(ns[:-1], ns[1:], strict=True))


def test_shape_for_params_passes_settings_through() -> None:
    s = shape_for_params(
        1_000_000,
        arch="gpt2",
        aspect_ratio=16,
        head_dim=32,
        vocab_size=1000,
        seq_len=256,
        tie_embeddings=False,
    )
    assert (s.arch, s.vocab_size, s.seq_len, s.tie_embeddings) == ("gpt2", 1000, 256, False)
    assert s.n_embd % 32 == 0 and s.n_head == s.n_embd // 32


def test_shape_for_params_smallest_model() -> None:
    # 1 layer of width 16: 4*256 + 3*16*48 + 2*16 + 16 = 3376.
    s = shape_for_params(3376, vocab_size=256, seq_len=64)
    assert (s.n_layer, s.n_embd, s.n_head) == (1, 16, 1)
    with pytest.raises(
        ValueError,
        match=r"target_n_params=3375 is below the smallest llama "
        r"model with head_dim=16 \(1 layer of width 16: N=3376\): raise the target",
    ):
        shape_for_params(3375, vocab_size=256, seq_len=64)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"target_n_params": 0}, r"target_n_params=0 is invalid: it must be a positive"),
        ({"target_n_params": float("nan")}, r"target_n_params=nan is invalid"),
        ({"aspect_ratio": -1.0}, r"aspect_ratio=-1.0 is invalid: it must be a positive number"),
        ({"head_dim": 0}, r"head_dim=0 is invalid: it must be a positive integer"),
        ({"head_dim": 15}, r"head_dim=15 is odd: llama's rotary embeddings need an even"),
        ({"vocab_size": 0}, r"vocab_size=0 is invalid: it must be a positive integer"),
    ],
)
def test_shape_for_params_errors(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = dict(target_n_params=100_000, vocab_size=256, seq_len=64)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        shape_for_params(**args)  # type: ignore[arg-type]


# --- ModelShape validation ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"arch": "t5"}, r"arch='t5' is invalid: use one of 'llama', 'gpt2', 'bert'"),
        ({"n_layer": 0}, r"n_layer=0 is invalid: it must be a positive integer"),
        ({"n_embd": -64}, r"n_embd=-64 is invalid: it must be a positive integer"),
        ({"n_head": 2.0}, r"n_head=2.0 is invalid: it must be a positive integer"),
        ({"vocab_size": True}, r"vocab_size=True is invalid"),
        ({"seq_len": 0}, r"seq_len=0 is invalid"),
        ({"ffn_dim": None}, r"ffn_dim=None is invalid"),
        ({"tie_embeddings": "yes"}, r"tie_embeddings='yes' is invalid: use true or false"),
        (
            {"n_head": 3},
            r"n_embd=64 is not divisible by n_head=3: choose n_head among the "
            r"divisors of n_embd",
        ),
        ({"n_embd": 60, "n_head": 4}, r"n_embd / n_head = 15 .* is odd: llama's rotary"),
    ],
)
def test_model_shape_validation(overrides: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        shape(**overrides)


def test_model_shape_odd_head_dim_is_fine_for_gpt2() -> None:
    assert shape(arch="gpt2", n_embd=60, n_head=4, ffn_dim=240).head_dim == 15


# --- built models ---------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_build_model_config_and_forward(torch, arch: Arch) -> None:
    s = shape(arch=arch, vocab_size=50, seq_len=16, ffn_dim=default_ffn_dim(arch, 64))
    torch.manual_seed(0)
    model = build_model(s)
    cfg = model.config
    assert cfg._attn_implementation == "sdpa"
    assert cfg.use_cache is False
    assert cfg.bos_token_id == cfg.eos_token_id == 49
    assert cfg.pad_token_id is None
    if arch == "llama":
        assert cfg.num_key_value_heads == 4 and cfg.attention_bias is False
        assert cfg.mlp_bias is False and cfg.attention_dropout == 0.0
        assert cfg.max_position_embeddings == 16
        assert not any(name.endswith(".bias") for name, _ in model.named_parameters())
    else:
        assert cfg.n_positions == 16 and cfg.n_inner == 256
        assert cfg.resid_pdrop == cfg.embd_pdrop == cfg.attn_pdrop == 0.0
    ids = torch.randint(0, 50, (2, 16))
    out = model(input_ids=ids, labels=ids)
    assert out.logits.shape == (2, 16, 50)
    assert math.isfinite(out.loss.item())
    # Dropout 0: train and eval mode give the same output.
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits, out.logits.detach(), atol=1e-5)


def test_counting_works_without_torch() -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.modules["torch"] = None          # any import of torch now fails
        sys.modules["transformers"] = None
        from harness.model import count_params, flops_per_token, shape_for_params
        s = shape_for_params(10**6, vocab_size=256, seq_len=64)
        print(count_params(s).non_embedding, flops_per_token(s).six_n)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0].isdigit()
