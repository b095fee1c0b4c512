"""Supervised fine-tuning on a text corpus (``task: sft``), optionally private (``privacy:``)."""
