"""`llmrl train` and `llmrl demo` (filled in by the trainer)."""
import typer


def register(app: typer.Typer) -> None:
    pass
