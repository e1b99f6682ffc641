"""`python -m calitag.cli`: the same command line as the `calitag` script."""

from calitag.cli import main

main()
