"""fjord: a rented Debian server as a light container host, from one YAML file."""

__version__ = "0.1.0"
