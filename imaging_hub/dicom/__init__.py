"""DICOM helpers of the core: UIDs, index keys, DICOM JSON."""
