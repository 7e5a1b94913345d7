"""`python -m service.cli`: the `ktune` command line."""

from service.cli.commands import main

if __name__ == "__main__":
    main()
