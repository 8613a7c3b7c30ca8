"""The command line: the only place that parses arguments and prints for people."""

__all__: list[str] = []
