"""BehaviorLM: tune language models into robust predictors of diverse user behaviors.

Pipeline: data (events, samples) -> prompts -> lm (load, tune, rank) -> recipe (A-Tuning, selection,
B-Tuning) -> evaluation (metrics, protocols, report) -> serving (Python API, batch, HTTP).
"""

__version__ = "0.1.0"
