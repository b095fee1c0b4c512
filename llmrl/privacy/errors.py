"""Errors of private training, importable without Opacus (the CLI maps them to exit codes)."""


class BudgetExhausted(RuntimeError):
    """Even the largest allowed noise cannot finish the run within the target epsilon."""
