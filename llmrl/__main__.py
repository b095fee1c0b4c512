"""``python -m llmrl``: the CLI, also as launchers start it (``accelerate launch -m llmrl train
RECIPE``, ``torchrun --nproc-per-node 2 -m llmrl train RECIPE``)."""
from llmrl.cli import main

if __name__ == "__main__":
    main()
