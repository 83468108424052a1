"""``python -m eosdyn ...`` is the ``eosdyn`` command (for environments without the script on PATH)."""
from eosdyn.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
