"""Training objectives: what the shared train loop optimises (SFT here; the reward model later)."""
