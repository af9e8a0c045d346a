"""The staff's pages: the review queue, insights, the win-back list and the
admin's settings. Doors onto the domain packages, which never import them."""
