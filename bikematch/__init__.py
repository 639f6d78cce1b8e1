"""bikematch: find the same e-bike across webshops and compare its offers."""

__version__ = "0.1.0"
