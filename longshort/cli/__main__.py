"""``python -m longshort.cli …`` (what ``accelerate launch -m longshort.cli`` runs)."""

from longshort.cli import app

app()
