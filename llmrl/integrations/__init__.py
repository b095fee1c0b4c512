"""Adapters that bring llmrl pieces (THR token weighting) to other trainers (TRL)."""
