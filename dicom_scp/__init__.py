"""DICOM receiver (and later query/retrieve) SCP built on pynetdicom and the hub core."""
