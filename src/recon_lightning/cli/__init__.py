"""Console entry points: recon-train, recon-eval, recon-data, recon-convert, recon-report."""

from . import resolvers as _resolvers  # noqa: F401 - registers the configs' OmegaConf resolvers
