"""The bundled demo: a generated e-bike catalogue served as local shops."""
