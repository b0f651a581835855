"""The ccdflow data butler: registry, datastore and collections."""
