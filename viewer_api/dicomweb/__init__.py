"""DICOMweb services (PS3.18): QIDO-RS searches."""
