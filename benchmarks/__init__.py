"""Speed benchmarks: the project's trainer and predictor against the naive way and against the machine's limit.

``behaviorlm bench`` runs them (see ``docs/PERFORMANCE.md`` for the method and the formulas):

- ``machine``    the CPU's (or GPU's) fp32 matmul rate and the model's FLOPs per token -> ceiling tokens/s;
- ``training``   the project's LoRA tuner against Hugging Face ``Trainer`` + PEFT, each in its own process;
- ``prediction`` candidate ranking against one full forward per candidate and against greedy generation;
- ``pipeline``   wall time and peak RSS of each stage of ``behaviorlm run``.

The modules live outside the installed package because they compare against code the package never runs
(the reference trainer); ``behaviorlm bench`` imports them from a source checkout.
"""
