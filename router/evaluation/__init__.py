"""Router quality: RouteLLM's metrics on public outcome data, the scorers they measure, and the learned scorer.

metrics      APGR, CPT and the cost/quality curve, as RouteLLM computes them
datasets     RouteLLM's per-prompt outcomes (MMLU, GSM8K, MT-Bench), decontaminated
scorers      the `Scorer` base class and the baselines (`random`, `length`); `registry` builds them by name
rules_scorer the escalation rules' score as a scorer
features     prompt features of the learned scorer (standard library and numpy only)
learned      the learned scorer and its artifact (`learned_scorer.npz`)
training     fitting it (scikit-learn), and the leave-one-benchmark-out experiment
report       evaluation of scorers on a benchmark, tables, BENCHMARKS.md entries
plotting     the cost/quality curve PNG
cli          `tiergate eval-router` (`main`) and `tiergate train-router` (`train_main`)
"""
