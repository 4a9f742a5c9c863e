"""``python -m p2pwatch`` runs the command line."""

from p2pwatch.cli import main

main()
