"""globeflow: generative, probabilistic geolocation on the sphere.

Public entry point::

    from globeflow import Geolocator
    geo = Geolocator.from_pretrained()            # the shipped offline default
    geo.sample(embeddings, num_samples=16)         # (M, 16, 2) degrees
    geo.log_prob(embeddings, latlon_deg)           # nats per steradian
"""

__version__ = "0.1.0"

__all__ = ["Geolocator", "__version__"]


def __getattr__(name: str):  # lazy, so that `import globeflow` stays light
    if name == "Geolocator":
        from globeflow.geolocator import Geolocator

        return Geolocator
    raise AttributeError(f"module 'globeflow' has no attribute {name!r}")
