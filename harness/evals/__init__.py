"""Downstream tasks scored during pretraining ([eval], docs/evals.md).

Ranked classification through EleutherAI's lm-evaluation-harness (``lm-eval``, the optional
extra ``[eval]``): each answer choice's log-likelihood under the run's own model, in memory, at
the run's evaluation steps. Per task: accuracy (and length-normalised accuracy where the task
defines it), the bits per byte of the correct answer, and the chance accuracy, written to the
run's tasks.csv and collected into the experiment's tasks.csv, which the analysis's downstream
chain (`harness.analysis.taskscale`) reads.

- `bundled`: the offline tasks shipped here (numpy only);
- `tasks`: naming, loading and checking tasks (lm-eval, no torch);
- `scoring`: the lm-eval model over an in-memory transformers model, and the scores (torch).
"""
