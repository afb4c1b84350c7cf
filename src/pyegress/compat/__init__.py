"""The few reaches into libraries' private parts, one module each, pinned to the version written for.

Each module says which upstream gap it fills, checks the installed version against the one it
was written for, and warns once (then still tries, behind its own safety checks) when they differ.
"""
