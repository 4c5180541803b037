"""Imaging Hub core: settings, index, storage, ingest, jobs and DICOM helpers.

The core imports no web, DICOM networking or task-queue framework; the front ends
(``dicom_scp``, ``viewer_api``, ``workers``) build on it.
"""

__version__ = "0.1.0"
