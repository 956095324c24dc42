"""Console entry points: recon-train, recon-eval, recon-data, recon-convert, recon-report."""
