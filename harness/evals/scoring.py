"""Scoring tasks on the run's own model in memory: lm-eval's model interface over a
transformers model and the run's tokenizer, and the scores of one evaluation.

`InMemoryLM` is lm-eval's `TemplateLM` (which splits each (context, answer) pair into tokens
as lm-eval's own Hugging Face model does) around the model the run trains: no export, no
second load. Each answer's log-likelihood is the sum of log p(token | everything before it)
over the answer's tokens. The answers of one context share one forward pass: the context
once, then each answer, seeing the context and itself only (a block-causal attention mask,
with each answer's positions going on from the context's), which gives each answer's
log-likelihood alone to float rounding (1e-7 at the quickstart's shapes) at 2.5x fewer tokens
for a question of four 16-token answers after 64 tokens. Rows go eval.batch_size at a time,
padded on the right. Positions stay below data.seq_len: a context too long for an answer is
cut from the left by that answer's length, as lm-eval's own model cuts it.

Per task, `score` returns what lm-eval computes (``acc``; ``acc_norm`` where the task lists
it) and what it does not: ``bpb``, the correct answer's negative log-likelihood in bits per
UTF-8 byte of its text, averaged over the examples (Bhagia et al. 2024's task loss, OLMo's
in-loop "bpb"), and ``chance``, the mean of 1 / (number of choices).
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from lm_eval.api.model import TemplateLM

from harness.config import EvalConfig
from harness.evals.tasks import LoadedTask, quiet

__all__ = ["InMemoryLM", "TaskScore", "column", "score"]


class InMemoryLM(TemplateLM):
    """lm-eval's model interface over an in-memory causal transformers model."""

    def __init__(
        self,
        forward: Callable[..., Any],
        encode: Callable[[str], list[int]],
        eot_id: int,
        max_len: int,
        device: torch.device,
        batch_size: int,
        autocast: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self._forward, self._encode, self._eot = forward, encode, eot_id
        self.max_len, self._device, self.batch_size = max_len, device, batch_size
        self.autocast = autocast

    @property
    def eot_token_id(self) -> int:
        return self._eot

    @property
    def device(self) -> torch.device:
        return self._device

    def tok_encode(
        self, string: str, add_special_tokens: bool | None = None, **kw: Any
    ) -> list[int]:
        return self._encode(string)

    @torch.inference_mode()
    def _loglikelihood_tokens(
        self, requests: list[tuple[tuple[str, str], list[int], list[int]]], **kw: Any
    ) -> list[tuple[float, bool]]:
        rows = _pack(requests, self.max_len)
        # Longest first (least padding), in a fixed order: the same batches at every call.
        rows.sort(key=lambda r: -r.tokens.size)
        ll = np.zeros(len(requests))
        n_missed = np.zeros(len(requests), dtype=np.int64)
        for b in range(0, len(rows), self.batch_size):
            batch = rows[b : b + self.batch_size]
            width = batch[0].tokens.size
            x = np.full((len(batch), width), self._eot, dtype=np.int64)
            pos = np.zeros((len(batch), width), dtype=np.int64)
            seg = -2 - np.tile(np.arange(width), (len(batch), 1))  # padding: its own segments
            for i, r in enumerate(batch):
                n = r.tokens.size
                x[i, :n], pos[i, :n], seg[i, :n] = r.tokens, r.pos, r.seg
            # A position sees the context (segment 0) and its own answer's earlier tokens.
            causal = np.tril(np.ones((width, width), dtype=bool))
            mask = causal & ((seg[:, None, :] == 0) | (seg[:, None, :] == seg[:, :, None]))
            with torch.autocast(
                self._device.type,
                dtype=self.autocast or torch.float32,
                enabled=self.autocast is not None,
            ):
                logits = self._forward(
                    input_ids=torch.from_numpy(x).to(self._device),
                    attention_mask=torch.from_numpy(mask[:, None]).to(self._device),
                    position_ids=torch.from_numpy(pos).to(self._device),
                ).logits
            # Only the scored positions: their log-softmax, each target's log-probability and
            # whether it was the most likely token, summed per request in float64.
            ri = np.concatenate([np.full(r.at.size, i) for i, r in enumerate(batch)])
            at, target, owner = (
                np.concatenate([getattr(r, k) for r in batch]) for k in ("at", "target", "owner")
            )
            t = torch.from_numpy(target).to(self._device)
            rows_at = torch.from_numpy(ri).to(self._device), torch.from_numpy(at).to(self._device)
            scored = F.log_softmax(logits[rows_at].float(), -1)
            lp = scored.gather(1, t[:, None])[:, 0].double().cpu().numpy()
            missed = (scored.argmax(dim=-1) != t).cpu().numpy()
            np.add.at(ll, owner, lp)
            np.add.at(n_missed, owner, missed)
        return [(float(v), bool(m == 0)) for v, m in zip(ll, n_missed, strict=True)]

    def loglikelihood_rolling(self, requests: Any, disable_tqdm: bool = False) -> Any:
        raise NotImplementedError("harness.evals scores multiple-choice tasks only")

    def generate_until(self, requests: Any, disable_tqdm: bool = False) -> Any:
        raise NotImplementedError("harness.evals scores multiple-choice tasks only")


@dataclass(frozen=True)
class _Row:
    """One context and every answer scored after it, packed into one sequence: the context,
    then each answer but its last token, positions going on from the context's for each."""

    tokens: np.ndarray
    pos: np.ndarray
    seg: np.ndarray
    """0 for the context, j for answer j (1-based)."""
    at: np.ndarray
    """Positions whose next-token logits score an answer token."""
    target: np.ndarray
    """The answer token each of those positions scores."""
    owner: np.ndarray
    """The request (index into the requests) each scored token belongs to."""


def _pack(requests: list[tuple[tuple[str, str], list[int], list[int]]], max_len: int) -> list[_Row]:
    """Requests with the same context tokens as one row each: the context is computed once for
    all its answers (a multiple-choice question's four answers cost one context, not four).

    Each request sees what lm-eval's own Hugging Face model gives it: its last ``max_len + 1``
    tokens of context and answer, so a context is cut from the left by each answer's own
    length (answers of other lengths then sit in rows of their own). An answer longer than
    ``max_len`` keeps its last ``max_len`` tokens, conditioned on the token before them. An
    empty answer scores 0 (log 1)."""
    groups: dict[tuple[int, ...], list[tuple[int, list[int]]]] = {}
    for i, (_, ctx, ans) in enumerate(requests):
        if not ans:
            continue
        keep = max_len + 1 - len(ans)
        cut = list(ctx[-keep:]) if keep >= 1 else list(ans[-(max_len + 1) : -max_len])
        groups.setdefault(tuple(cut), []).append((i, list(ans[-max_len:])))
    rows = []
    for ctx_key, members in groups.items():
        ctx = list(ctx_key)
        n_ctx = len(ctx)
        tokens, pos, seg = [ctx], [np.arange(n_ctx)], [np.zeros(n_ctx, dtype=np.int64)]
        at, target, owner = [], [], []
        start = n_ctx
        for j, (i, ans) in enumerate(members):
            body = len(ans) - 1
            tokens.append(ans[:-1])
            pos.append(np.arange(n_ctx, n_ctx + body))
            seg.append(np.full(body, j + 1))
            # The answer's first token is predicted at the context's last position, each next
            # one at the answer's own previous token.
            at.append(np.concatenate([[n_ctx - 1], np.arange(start, start + body)]))
            target.append(ans)
            owner.append(np.full(len(ans), i))
            start += body
        rows.append(
            _Row(
                *(np.concatenate(v).astype(np.int64) for v in (tokens, pos, seg, at, target, owner))
            )
        )
    return rows


def column(task: str, metric: str) -> str:
    """A task metric's name in metrics.csv and the tracker: TASK/METRIC."""
    return f"{task}/{metric}"


@dataclass(frozen=True)
class TaskScore:
    """One task's numbers at one evaluation."""

    task: str
    metric: str
    value: float
    chance: float | None
    """The chance accuracy for acc and acc_norm; None for bpb."""
    n_examples: int

    @property
    def column(self) -> str:
        return column(self.task, self.metric)


@contextlib.contextmanager
def _rng_kept(device: torch.device) -> Iterator[None]:
    """Python's, numpy's and torch's global generators as they were: scoring draws nothing
    from training's."""
    py, npy, cpu = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state(cuda, device)


def _gold(task: Any, doc: dict[str, Any], target: Any, n_choices: int) -> int | None:
    """The correct choice's index as lm-eval's multiple-choice scoring reads it (the first of
    several right answers); None where lm-eval finds none (it scores such an example wrong)."""
    if getattr(task, "multiple_input", False):  # the choices are contexts: doc_to_text is gold
        target = task.doc_to_text(doc)
    if isinstance(target, list):
        target = target[0] if target else None
    if isinstance(target, str):
        choices = task.doc_to_choice(doc)
        target = choices.index(target) if target in choices else None
    if isinstance(target, bool) or not isinstance(target, int | np.integer):
        return None
    return int(target) if 0 <= target < n_choices else None


def _answer_bpb(task: Any, samples: list[dict[str, Any]]) -> list[float]:
    """Each example's right answer's -log-likelihood in bits per UTF-8 byte of its text; an
    example without a right answer (lm-eval counts it wrong) has none."""
    out = []
    for s in samples:
        gold = _gold(task, s["doc"], s["target"], len(s["arguments"]))
        if gold is None:
            continue
        ll = s["resps"][gold][0][0]
        context, answer = s["arguments"][gold]
        # The context's trailing spaces are scored with the answer (TemplateLM._encode_pair).
        moved = context[len(context.rstrip()) :]
        n_bytes = len((moved + answer).encode("utf-8"))
        if n_bytes:
            out.append(-ll / (math.log(2) * n_bytes))
    return out


def score(lm: InMemoryLM, tasks: Sequence[LoadedTask], cfg: EvalConfig) -> list[TaskScore]:
    """Every task's acc (and acc_norm), bpb of the correct answer and chance, on ``lm``'s model
    as it is now (in eval mode: the caller's, `harness.train.task_eval`)."""
    from lm_eval.evaluator import evaluate

    for t in tasks:  # the same few-shot draw at every evaluation of every run
        t.task.set_fewshot_seed(seed=cfg.seed)
    task_dict = {"tasks": {t.name: t.task for t in tasks}, "groups": {}, "group_map": {}}
    out: list[TaskScore] = []
    with _rng_kept(lm.device), quiet():
        results = evaluate(
            lm,
            task_dict,
            limit=cfg.limit or None,
            bootstrap_iters=0,
            log_samples=True,
        )
    for t in tasks:
        samples = results["samples"][t.name]
        n = len(samples)
        chance = float(np.mean([1.0 / len(s["arguments"]) for s in samples]))
        for metric in t.metrics:
            if metric == "bpb":
                bpb = _answer_bpb(t.task, samples)
                if bpb:
                    out.append(TaskScore(t.name, "bpb", float(np.mean(bpb)), None, len(bpb)))
            else:
                value = float(results["results"][t.name][f"{metric},none"])
                out.append(TaskScore(t.name, metric, value, chance, n))
    return out
