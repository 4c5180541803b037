"""The HTTP front end: DICOMweb, the REST API and health endpoints, over the core."""
