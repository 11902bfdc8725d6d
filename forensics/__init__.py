"""forensics: synthetic media forensics — detectors, corpora, watermarks and provenance."""

__version__ = "0.1.0"
