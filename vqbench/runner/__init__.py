"""Runs matched experiments: data → tokenizer → latents → cells (prior × variant × seed) → report."""
