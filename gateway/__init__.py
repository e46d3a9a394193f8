"""smgate gateway: listeners, routing core, clusters, config, admin and the CLI."""

__version__ = "0.1.0"
