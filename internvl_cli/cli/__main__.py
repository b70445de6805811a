"""`python -m internvl_cli.cli`: the same as the `internvl` command."""
from . import main

if __name__ == "__main__":
    main()
