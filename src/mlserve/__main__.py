"""`python -m mlserve` runs the command line."""

from mlserve.cli.main import entry

entry()
