"""Build the Markdown/CSV table of a sweep: `python scripts/make_tables.py <sweep folder>`."""

from ot_experiments.tables import main

if __name__ == "__main__":
    main()
