"""Command-line interface: argument parsing and printing only; the work is done in the layers below."""
