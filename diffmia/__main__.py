"""`python -m diffmia` (what torchrun and accelerate launch run): the command line."""

from diffmia.cli import main

if __name__ == "__main__":
    main()
