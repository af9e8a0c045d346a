"""The review queue, notes, postmortems and their action items."""
