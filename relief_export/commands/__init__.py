"""Command handlers behind the CLI: argparse namespaces in, exit codes out."""
