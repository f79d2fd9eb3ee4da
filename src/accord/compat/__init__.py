"""Other frameworks' APIs on Accord's own runners and data loaders (openfl/: OpenFL 1.x)."""
