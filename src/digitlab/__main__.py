import sys

from .cli import main

if __name__ == "__main__":  # a worker process started by "spawn" imports this module without running the CLI
    sys.exit(main())
