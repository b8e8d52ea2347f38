"""Data access: robust image loading, input sources for ``globeflow embed``, and the embedding store."""
