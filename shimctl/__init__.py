"""shimctl: the command-line client. Argument parsing and rendering only; every decision is the manager's."""
