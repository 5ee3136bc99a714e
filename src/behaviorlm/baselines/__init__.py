"""Sequential baselines trained from scratch, and honest floors."""
