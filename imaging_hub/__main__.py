"""``python -m imaging_hub`` is the ``imaging-hub`` command."""

from imaging_hub.cli import main

if __name__ == "__main__":
    main(prog_name="imaging-hub")
