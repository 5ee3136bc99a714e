"""The BehaviorLM recipe: A-Tuning, difficulty-based selection, B-Tuning, the resumable pipeline."""
