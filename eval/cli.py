"""Sub-commands of `llmrl` (placeholder until this capability lands)."""
import typer

app = typer.Typer(no_args_is_help=True)
