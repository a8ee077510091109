"""``python -m snnrun`` (also what ``torchrun -m snnrun`` launches)."""

from snnrun.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
