"""Thin Typer commands; each module registers its own commands on the app."""
