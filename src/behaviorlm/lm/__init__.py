"""Language-model core: loading, LoRA tuning, candidate ranking."""
