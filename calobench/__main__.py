"""``python -m calobench``: the command line (used by ``calobench run --nproc N`` to start its workers)."""
from .cli import main

main()
