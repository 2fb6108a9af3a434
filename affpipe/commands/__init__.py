"""CLI subcommands, one module each. Each module defines ``register(subparsers)``."""
