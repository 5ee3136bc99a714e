"""Event logs in: readers, importers, simulator, samples and splits."""
