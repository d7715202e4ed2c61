"""`python -m dashboard.cli` runs the command line."""

from dashboard.cli import main

main()
